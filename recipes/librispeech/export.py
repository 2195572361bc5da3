#!/usr/bin/env python3
"""Export a trained run as a standalone tokenizer folder (``TasteTokenizer.from_pretrained``).

``train.py`` exports automatically at the end (``export_folder``); this script does it
for an earlier or interrupted run, from its saved ``hyperparams.yaml``::

    python recipes/librispeech/export.py results/taste/1986/hyperparams.yaml
    python recipes/librispeech/export.py results/taste/1986/hyperparams.yaml --output /tmp/tok --vocoder griffin_lim
    # the trained vocoder, conditioned on the source's voice (resemblyzer), the decoder as trained:
    python recipes/librispeech/export.py results/taste/1986/hyperparams.yaml --output /tmp/tok \
        --vocoder unit_to_spec --speaker_name=resemblyzer --decoder_speaker_dim=0

The best checkpoint by dev loss is loaded; the data preparation steps are the
recipe's own and are all cached, so they only reload the fitted text tokenizer
and unit extractor.
"""

import argparse
import os

import speechbrain as sb

from taste_toolkit.data.corpus_preparation import fit_text_tokenizer, prepare_corpus
from taste_toolkit.data.unit_cache import prepare_units
from taste_toolkit.errors import MissingResourceError
from taste_toolkit.hparams_loader import load_hparams
from taste_toolkit.training.data import compute_speaker_vectors
from taste_toolkit.training.export import export_tokenizer
from taste_toolkit.training.unit_vocoder import fit_recipe_vocoder


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default="", help="export folder (default: the YAML's export_folder, "
                        "else <output_folder>/tokenizer)")
    parser.add_argument("--vocoder", default=None, help="vocoder to ship (default: the YAML's vocoder_name, "
                        "else griffin_lim); 'none' for units only")
    args, rest = parser.parse_known_args()
    hparams_file, _, overrides = sb.parse_arguments(rest)
    hparams, _, _ = load_hparams(hparams_file, overrides)
    if args.vocoder is not None or "vocoder_name" not in hparams:
        hparams["vocoder_name"] = "" if args.vocoder == "none" else (args.vocoder or "griffin_lim")
    if args.output:
        hparams["export_folder"] = args.output
    manifests, train = prepare_corpus(hparams)
    fit_text_tokenizer(hparams, manifests, train)
    splits = {s: manifests[s] for s in [train] + hparams["dev_splits"] + hparams["test_splits"]}
    unit_files = prepare_units(extractor=hparams["units"], manifests=splits,
                               cache_dir=os.path.join(hparams["prep_folder"], "units"), fit_split=train)
    blocks = dict(hparams.get("vocoder_options") or {})
    if hparams["vocoder_name"] == "unit_to_spec" and not (blocks.get("unit_to_spec") or {}).get("checkpoint"):
        # Trained once on the training split (cached), as train.py does.
        speakers = compute_speaker_vectors(hparams["speaker"], splits, os.path.join(hparams["prep_folder"], "speaker"))
        blocks["unit_to_spec"] = fit_recipe_vocoder(hparams, splits[train], unit_files[train], speakers)
        hparams["vocoder_options"] = blocks
    if hparams["checkpointer"].recover_if_possible(min_key="loss") is None:
        raise MissingResourceError(f"No checkpoint in {hparams['save_folder']}: train first.")
    folder = hparams.get("export_folder") or os.path.join(hparams["output_folder"], "tokenizer")
    export_tokenizer(hparams, folder)
    print(f"Standalone tokenizer: {folder}")


if __name__ == "__main__":
    main()
