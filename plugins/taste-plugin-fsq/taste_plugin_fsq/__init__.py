"""taste-plugin-fsq: an out-of-tree taste-toolkit plugin (Finite Scalar Quantization).

Importing this package registers the quantizer ``fsq``. The toolkit imports it
through the ``taste_toolkit.plugins`` entry point declared in ``setup.cfg``, or
through ``plugin_modules: [taste_plugin_fsq]`` in a YAML file.
"""

from taste_plugin_fsq.fsq import FSQQuantizer  # noqa: F401  (registers "fsq")

__version__ = "0.1.0"
