#!/usr/bin/env python3
"""Recipe: the TASTE tokenizer in another language (embedded corpus, Common Voice or MLS).

The training is recipes/librispeech/train.py's; only the data preparation
differs (:mod:`multilingual_prepare`)::

    python recipes/multilingual/train.py recipes/multilingual/hparams/taste_es.yaml
    python recipes/multilingual/train.py recipes/multilingual/hparams/taste_cmn.yaml
    python recipes/multilingual/train.py recipes/multilingual/hparams/taste_es.yaml \\
        --data_folder=/data/cv-corpus-17.0/es    # Common Voice: train.tsv/dev.tsv/test.tsv
    python recipes/multilingual/train.py recipes/multilingual/hparams/taste_es.yaml \\
        --data_folder=/data/mls_spanish           # MLS: train/ dev/ test/

With no ``--data_folder`` the embedded corpus of the YAML's ``language`` is
synthesized first. Any YAML key can be overridden as in every recipe.
"""

import importlib.util
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from multilingual_prepare import prepare_multilingual_corpus  # noqa: E402


def load_librispeech_recipe():
    """recipes/librispeech/train.py as a module (``train`` would be this file's own name)."""
    path = os.path.join(os.path.dirname(HERE), "librispeech", "train.py")
    spec = importlib.util.spec_from_file_location("librispeech_train", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # The one difference: Common Voice and MLS folders are prepared by their own readers.
    module.prepare_corpus = prepare_multilingual_corpus
    return module


if __name__ == "__main__":
    from taste_toolkit.hparams_loader import peek_task

    if peek_task(sys.argv[1:]) != "taste":
        sys.exit("recipes/multilingual/train.py trains the TASTE tokenizer (task: taste); "
                 "use recipes/librispeech/train.py for the other tasks.")
    load_librispeech_recipe().main()
