#!/usr/bin/env bash
# Install everything taste-toolkit needs on a fresh Debian/Ubuntu machine:
# system audio tools (espeak-ng for the embedded corpus, sox), the toolkit with
# its test extras, the offline speaker model and the example third-party plugin.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v apt-get >/dev/null 2>&1 && ! (command -v espeak-ng >/dev/null && ldconfig -p | grep -q libespeak-ng); then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq espeak-ng libespeak-ng1 sox libsox-fmt-all >/dev/null
fi

python -m pip install -q -e ".[test]"
# resemblyzer (offline d-vector speaker model) needs pkg_resources from setuptools < 81.
python -m pip install -q resemblyzer "setuptools<81"
# The out-of-tree example plugin (registers the `fsq` quantizer through its entry point).
python -m pip install -q -e plugins/taste-plugin-fsq
python -c "import taste_toolkit, taste_toolkit.registry as r; print('taste-toolkit', taste_toolkit.__version__, 'plugins:', r.available())"
