"""taste-toolkit: Text-Aligned Speech Tokenization and Embedding (TASTE) and TASLM.

See README.md for the quick start. Public entry points:

* :mod:`taste_toolkit.registry` -- ``register``, ``get``, ``build``, ``available``.
* :mod:`taste_toolkit.interfaces` -- plugin base classes and typed outputs.
"""

__version__ = "0.1.0"

from taste_toolkit.registry import available, build, get, load_plugins, register  # noqa: E402,F401
