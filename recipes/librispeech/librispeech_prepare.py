#!/usr/bin/env python3
"""LibriSpeech data preparation for the TASTE recipes.

Recipes import it as a sibling module, as SpeechBrain recipes do::

    from librispeech_prepare import prepare_librispeech
    run_on_main(prepare_librispeech, kwargs={
        "data_folder": hparams["data_folder"],
        "save_folder": hparams["output_folder"],
        "splits": ["train-clean-100", "dev-clean", "test-clean"],
        "max_duration": 30.0,
        "skip_prep": hparams["skip_prep"],
    })

The implementation lives in :mod:`taste_toolkit.data.librispeech` (so it is
installed and unit-tested with the package); this file only re-exports it and
offers a command line::

    python recipes/librispeech/librispeech_prepare.py /data/LibriSpeech results/data \\
        --splits train-clean-100 dev-clean --max_duration 30

It writes ``<save_folder>/<split>.csv`` (``ID, duration, wav, spk_id, wrd``),
``prepare_options.json`` (reused when nothing changed) and
``prepare_report.json`` (every excluded utterance with its reason). CSVs are
written atomically; a reused CSV that is truncated or garbled (``check_manifest``)
is rebuilt with a warning.
"""

import argparse
import json
import logging
import sys

from taste_toolkit.data.librispeech import CSV_HEADER, check_manifest, prepare_librispeech

__all__ = ["prepare_librispeech", "check_manifest", "CSV_HEADER", "main"]


def main(argv=None) -> int:
    """Command-line entry point; prints the per-split counts as JSON."""
    parser = argparse.ArgumentParser(
        description="Write SpeechBrain CSVs for LibriSpeech splits and report excluded items."
    )
    parser.add_argument("data_folder", help="folder that holds the split folders")
    parser.add_argument("save_folder", help="where the CSVs and JSON reports are written")
    parser.add_argument("--splits", nargs="+", default=["train-clean-100"])
    parser.add_argument("--max_duration", type=float, default=30.0,
                        help="seconds; longer utterances are excluded (<= 0 disables)")
    parser.add_argument("--min_duration", type=float, default=0.0)
    parser.add_argument("--select_n_sentences", type=int, default=None,
                        help="keep only the first N valid utterances of each split")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    report = prepare_librispeech(
        args.data_folder,
        args.save_folder,
        splits=args.splits,
        max_duration=args.max_duration if args.max_duration > 0 else None,
        min_duration=args.min_duration,
        select_n_sentences=args.select_n_sentences,
    )
    summary = {
        split: {k: rep[k] for k in ("kept", "kept_hours", "n_excluded", "excluded", "not_selected")}
        for split, rep in report["splits"].items()
    }
    print(json.dumps({"reused": report["reused"], "splits": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
