#!/usr/bin/env python3
"""Data preparation of the multilingual recipe: Common Voice, MLS, LibriSpeech layout or the embedded corpus.

:func:`prepare_multilingual_corpus` is the recipe's version of
:func:`taste_toolkit.data.corpus_preparation.prepare_corpus`: with no
``data_folder`` it synthesizes the embedded corpus in ``language`` (through
``corpus_options``) and reads it as LibriSpeech; with one, it detects the layout
(:func:`taste_toolkit.data.multilingual.detect_layout`) and writes the same
manifest CSVs and exclusion report from Common Voice (``clips/*.mp3`` +
``<split>.tsv``) or Multilingual LibriSpeech (``<split>/transcripts.txt`` +
``<split>/audio/<spk>/<book>/*.flac``).

Command line (prints the per-split counts)::

    python recipes/multilingual/multilingual_prepare.py /data/cv-corpus-17.0/es results/prepared_cv_es \\
        --splits train dev test
"""

import argparse
import json
import logging
import os
import sys

from taste_toolkit.data.multilingual import detect_layout, prepare_commonvoice, prepare_mls

__all__ = ["prepare_multilingual_corpus", "prepare_commonvoice", "prepare_mls", "main"]


def prepare_multilingual_corpus(hparams):
    """``(manifests, train split)`` for the recipe, as ``prepare_corpus`` returns them.

    Arguments
    ---------
    hparams : dict
        Read: ``data_folder``, ``corpus_folder``, ``corpus_options``, ``language``,
        the split lists, ``prep_folder``, ``max_duration``, ``skip_prep``.
    """
    from speechbrain.utils.distributed import run_on_main

    from taste_toolkit.data.corpus_preparation import prepare_corpus
    from taste_toolkit.errors import ConfigError

    language = hparams.get("language", "en")
    corpus_language = (hparams.get("corpus_options") or {}).get("language", language)
    if corpus_language != language:
        raise ConfigError(f"language is {language!r} but corpus_options.language is {corpus_language!r}; "
                          "set only the top-level language (corpus_options.language follows it).")
    data_folder = hparams["data_folder"]
    layout = detect_layout(data_folder) if data_folder else "embedded"
    if layout in ("embedded", "librispeech"):
        return prepare_corpus(hparams)
    if len(hparams["train_splits"]) != 1:
        raise ConfigError(f"The {layout} layout takes one training split (a TSV or an MLS split folder), "
                          f"got train_splits={hparams['train_splits']}.")
    splits = hparams["train_splits"] + hparams["dev_splits"] + hparams["test_splits"]
    save = os.path.join(hparams["prep_folder"], "manifests", os.path.basename(os.path.normpath(data_folder)))
    prepare = prepare_commonvoice if layout == "commonvoice" else prepare_mls
    run_on_main(prepare, kwargs=dict(data_folder=data_folder, save_folder=save, splits=splits,
                                     max_duration=hparams["max_duration"], skip_prep=hparams["skip_prep"]))
    return {s: os.path.join(save, f"{s}.csv") for s in splits}, hparams["train_splits"][0]


def main(argv=None):
    """Command-line entry point; prints the per-split counts as JSON."""
    parser = argparse.ArgumentParser(description="Manifests for a Common Voice or MLS language folder.")
    parser.add_argument("data_folder", help="Common Voice language folder (clips/, *.tsv) or MLS language folder")
    parser.add_argument("save_folder", help="where the CSVs and JSON reports are written")
    parser.add_argument("--splits", nargs="+", default=["train", "dev", "test"])
    parser.add_argument("--max_duration", type=float, default=30.0, help="seconds (<= 0 disables)")
    parser.add_argument("--min_duration", type=float, default=0.0)
    parser.add_argument("--normalization", default="NFKC", help="Unicode normalization of transcripts")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    layout = detect_layout(args.data_folder)
    if layout not in ("commonvoice", "mls"):
        print(f"{args.data_folder} is neither Common Voice (clips/ + <split>.tsv) nor MLS "
              "(<split>/transcripts.txt); for the LibriSpeech layout use recipes/librispeech/librispeech_prepare.py.",
              file=sys.stderr)
        return 2
    prepare = prepare_commonvoice if layout == "commonvoice" else prepare_mls
    report = prepare(args.data_folder, args.save_folder, splits=args.splits,
                     max_duration=args.max_duration if args.max_duration > 0 else None,
                     min_duration=args.min_duration, normalization=args.normalization)
    print(json.dumps({s: {k: r[k] for k in ("kept", "n_excluded", "excluded", "kept_hours")}
                      for s, r in report["splits"].items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
