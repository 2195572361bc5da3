#!/usr/bin/env python3
"""Reconstruction evaluation of exported tokenizers (paper Table 1 layout), config-driven.

    python recipes/librispeech/evaluate.py --config hparams/evaluate/reconstruction.yaml
    python recipes/librispeech/evaluate.py --config hparams/evaluate/reconstruction.yaml --limit 5 --output results/eval/try

The YAML lists the evaluation set, the systems (``original``, ``units_topline``,
``tokenizer`` checkpoints, ...) and the metric plugins; see
``taste_toolkit/evaluation/harness.py``. Outputs in ``output_folder``:
``summary.md`` / ``summary.json`` (one row per system), ``per_utterance.csv``,
``scores/<metric>.csv`` (resumable), ``outputs/<system>/<id>.wav`` and
``plots/`` (per-word durations, F0 contours, attention map). A rerun skips
finished work. Same as ``taste evaluate --config CONFIG.yaml``.
"""

import argparse
import os
import sys


def main(argv=None):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    from taste_toolkit.commands.evaluate import configure_evaluate, run_evaluate
    from taste_toolkit.errors import TasteError

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    configure_evaluate(parser)
    args = parser.parse_args(argv)
    try:
        return run_evaluate(args)
    except TasteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
