"""Built-in plugins, one per file under ``taste_toolkit/plugins/<kind>/``.

Importing this package imports every built-in module so that the registry is
complete. Plugins keep heavy imports (transformers, onnxruntime, ...) inside
their functions, so this stays cheap.
"""

import importlib
import pkgutil

from taste_toolkit.registry import KINDS


def _import_all():
    for kind in KINDS:
        package = importlib.import_module(f"{__name__}.{kind}")
        for info in pkgutil.iter_modules(package.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{package.__name__}.{info.name}")


_import_all()
