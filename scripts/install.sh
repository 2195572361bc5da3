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

# The tested torch pair is pinned in constraints.txt (used here and so in CI), not in install_requires.
python -m pip install -q -c constraints.txt torch torchaudio
python -m pip install -q -c constraints.txt -e ".[test]"
# resemblyzer (offline d-vector speaker model) needs pkg_resources from setuptools < 81.
python -m pip install -q resemblyzer "setuptools<81"

# Real-speech evaluation set (never committed): the Asterisk prompts (Debian, CC-BY-SA-3.0) and the
# LibriVox clips of the pocketsphinx sdist (PyPI), written to results/real_speech. Optional: the
# toolkit works without them (hparams/evaluate/real_speech.yaml needs them).
if command -v apt-get >/dev/null 2>&1 && [ ! -d /usr/share/asterisk/sounds/en_US_f_Allison ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq asterisk-core-sounds-en asterisk-core-sounds-en-g722 >/dev/null \
        || echo "warning: asterisk prompts not installed; the real-speech set will hold the LibriVox clips only"
fi
python -m taste_toolkit.evaluation.real_speech results/real_speech --asterisk 20 --cache results/real_speech_cache \
    || python -m taste_toolkit.evaluation.real_speech results/real_speech --asterisk 0 --cache results/real_speech_cache \
    || echo "warning: could not build the real-speech evaluation set (pip download of the pocketsphinx sdist failed)"
# The out-of-tree example plugin (registers the `fsq` quantizer through its entry point).
python -m pip install -q -e plugins/taste-plugin-fsq
python -c "import taste_toolkit, taste_toolkit.registry as r; print('taste-toolkit', taste_toolkit.__version__, 'plugins:', r.available())"
