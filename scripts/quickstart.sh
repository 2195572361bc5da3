#!/usr/bin/env bash
# One command on a fresh machine: install, then train + evaluate the TASTE
# tokenizer on the embedded synthetic corpus (about 15 minutes on 2 CPU cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
python recipes/librispeech/train.py hparams/taste.yaml "$@"
