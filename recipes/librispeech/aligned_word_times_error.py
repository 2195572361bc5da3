#!/usr/bin/env python3
"""Error of the Whisper-aligner word times (``word_times: aligner``) against a corpus' own.

Aligns a split with :mod:`taste_toolkit.data.aligned_word_times` and compares every
word start but the first (which absorbs the leading silence) with the word times of
the corpus' ``metadata.jsonl``::

    python recipes/librispeech/aligned_word_times_error.py \\
        results/prepared/manifests/synthetic_corpus/test.csv results/synthetic_corpus/test/metadata.jsonl
"""

import argparse
import json

import numpy as np
import torch

from taste_toolkit.data.aligned_word_times import split_aligned_word_starts
from taste_toolkit.data.word_alignment import read_word_starts
from taste_toolkit.registry import build


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest", help="SpeechBrain CSV (ID, wav, wrd)")
    parser.add_argument("metadata", help="metadata.jsonl with id and word_start")
    parser.add_argument("--whisper_source", default="builtin:tiny.en")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    encoder = build("encoder", "whisper", source=args.whisper_source, mode="unpadded")
    tokenizer = build("text_tokenizer", "whisper", source=args.whisper_source)
    starts = split_aligned_word_starts({"split": args.manifest}, tokenizer, encoder, args.whisper_source,
                                       tokenizer.vocab_size, None)["split"]
    truth = read_word_starts(args.metadata)
    errors = [abs(a - b) for uid, ref in truth.items() if uid in starts
              for a, b in zip(starts[uid][1:], ref[1:])]
    print(json.dumps({"utterances": len(starts), "word_starts": len(errors),
                      "median_error_s": round(float(np.median(errors)), 3),
                      "mean_error_s": round(float(np.mean(errors)), 3),
                      "p90_error_s": round(float(np.percentile(errors, 90)), 3)}))


if __name__ == "__main__":
    main()
