#!/usr/bin/env python3
"""Linear probes: do a tokenizer's speech tokens carry speaker, prosody and duration?

For each exported tokenizer, probes are fit on the training split of the embedded
corpus (its ``metadata.jsonl`` knows every word's speaker, prosody label and time
span) and scored on the test split, for the tokens and for the oracle pooling of
the encoder's taps inside the true word spans (see
:mod:`taste_toolkit.evaluation.probe`). Writes ``<output>/probes.md`` and ``.json``.

Usage::

    python recipes/librispeech/probe_tokens.py results/taste/1986/tokenizer results/no_vq/1986/tokenizer
    python recipes/librispeech/probe_tokens.py DIR --corpus results/synthetic_corpus --train-limit 200
"""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)

from taste_toolkit.evaluation.probe import collect, markdown_table, read_metadata, run_probes  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tokenizers", nargs="+", help="exported tokenizer folders (TasteTokenizer.save_pretrained)")
    parser.add_argument("--corpus", default=os.path.join(ROOT, "results", "synthetic_corpus"),
                        help="corpus root with train/ and test/ metadata.jsonl (default: the embedded corpus)")
    parser.add_argument("--train-split", default="train", help="split the probes are fit on (default: train)")
    parser.add_argument("--test-split", default="test", help="split the probes are scored on (default: test)")
    parser.add_argument("--train-limit", type=int, default=0, help="first N training utterances (0 = all)")
    parser.add_argument("--output", default=os.path.join(ROOT, "results", "probes"), help="output folder")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    args = parser.parse_args(argv)

    import torch

    from taste_toolkit.api import TasteTokenizer

    torch.set_num_threads(max(1, args.threads))
    train_rows = read_metadata(os.path.join(args.corpus, args.train_split), args.train_limit)
    test_rows = read_metadata(os.path.join(args.corpus, args.test_split))
    results = {}
    for folder in args.tokenizers:
        tok = TasteTokenizer.from_pretrained(folder)
        name = os.path.relpath(folder, ROOT) if os.path.abspath(folder).startswith(ROOT) else folder
        print(f"[{name}] features of {len(train_rows)} train / {len(test_rows)} test utterances", flush=True)
        results[name] = run_probes(collect(tok, train_rows), collect(tok, test_rows))
    table = markdown_table(results)
    os.makedirs(args.output, exist_ok=True)
    with open(os.path.join(args.output, "probes.md"), "w", encoding="utf-8") as f:
        f.write(table + "\n")
    with open(os.path.join(args.output, "probes.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
