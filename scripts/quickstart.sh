#!/usr/bin/env bash
# One command on a fresh machine: install, then train + evaluate the TASTE
# tokenizer on the embedded synthetic corpus (about 16 minutes on 2 CPU cores: install
# about 2.5, the recipe 13.5; README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
python recipes/librispeech/train.py hparams/taste.yaml "$@"
