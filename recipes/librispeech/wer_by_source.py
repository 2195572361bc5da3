#!/usr/bin/env python3
"""WER of each system per clip source (id prefix before the first '-') of a ``taste evaluate`` run.

Reads ``<eval folder>/per_utterance.csv`` and weights each utterance's WER by its
reference word count (whitespace words of the reference text, before the ASR's
normalization, so the totals are approximate)::

    python recipes/librispeech/wer_by_source.py results/eval/real_speech
"""

import argparse
import csv
import os
from collections import defaultdict


def wer_by_source(folder):
    """``{(system, source): (weighted WER, reference words)}``."""
    with open(os.path.join(folder, "per_utterance.csv"), encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    sums = defaultdict(lambda: [0.0, 0])
    for row in rows:
        if not row.get("wer.utt_wer"):
            continue
        words = len(row["wer.ref_text"].split())
        key = (row["system"], row["id"].split("-", 1)[0])
        sums[key][0] += float(row["wer.utt_wer"]) * words
        sums[key][1] += words
    return {key: (errors / max(words, 1), words) for key, (errors, words) in sums.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="output folder of a taste evaluate run")
    args = parser.parse_args(argv)
    print("| system | source | WER | reference words |\n|---|---|---|---|")
    for (system, source), (wer, words) in sorted(wer_by_source(args.folder).items()):
        print(f"| {system} | {source} | {wer:.3f} | {words} |")


if __name__ == "__main__":
    main()
