#!/usr/bin/env python3
"""How much of what the word vectors know can 4 x 8 bits keep? Probes before and after quantizing.

For an exported tokenizer, the aggregator's continuous word vectors (the quantizer
taken out) of the embedded corpus are probed (speaker, prosody label, log duration;
:mod:`taste_toolkit.evaluation.probe`), then quantized offline by residual k-means
(``R x K`` codes, no training) and probed again, in several code spaces:

* ``residual_kmeans_RxK``: the raw vectors; ``..._standardized``: per dimension;
* ``pca{d}_whiten{p}``: the top ``d`` principal directions, each divided by its
  standard deviation to the power ``p`` (0 = plain PCA, the default RVQ's space
  before session 15; 1 = whitened), as ``rvq``'s ``projection_whitening`` does;
* ``text_residual``: each word's vector minus its word's mean vector (leave-one-out
  on the training words), the part the transcript cannot predict, quantized, then
  probed alone and with the mean added back.

This bounds what any RVQ of that size keeps of these vectors, independently of how
the trained one drifted::

    python recipes/librispeech/probe_rvq_capacity.py results/taste/1986/tokenizer

Writes ``<output>/rvq_capacity.json`` and prints one line per condition.
"""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))


def residual_kmeans(train, test, levels, codes, standardize):
    """Offline RVQ: per level, k-means on the residuals; returns the reconstructions of both sets."""
    import numpy as np
    import torch

    from taste_toolkit.kmeans import assign, kmeans

    mean = train.mean(0)
    scale = train.std(0) + 1e-5 if standardize else np.ones(train.shape[1])
    a = torch.tensor((train - mean) / scale, dtype=torch.float32)
    b = torch.tensor((test - mean) / scale, dtype=torch.float32)
    qa, qb = torch.zeros_like(a), torch.zeros_like(b)
    for level in range(levels):
        centroids = kmeans(a - qa, codes, iters=20, seed=level)
        qa += centroids[assign(a - qa, centroids)]
        qb += centroids[assign(b - qb, centroids)]
    return qa.numpy() * scale + mean, qb.numpy() * scale + mean


def pca_residual_kmeans(train, test, levels, codes, dims, power):
    """Residual k-means in the top ``dims`` principal directions scaled by ``std ** -power``, mapped back."""
    import numpy as np

    mean = train.mean(0)
    _, singular, vt = np.linalg.svd(train - mean, full_matrices=False)
    directions = vt[:dims].T  # (D, dims)
    scale = (singular[:dims] / np.sqrt(max(len(train) - 1, 1))) ** power
    qa, qb = residual_kmeans((train - mean) @ directions / scale, (test - mean) @ directions / scale,
                             levels, codes, False)
    return (qa * scale) @ directions.T + mean, (qb * scale) @ directions.T + mean


def word_means(train, train_words, words, leave_one_out):
    """Each word's mean training vector (leave-one-out for the training words themselves;
    the overall mean for a word seen once or never)."""
    import numpy as np

    overall = train.mean(0)
    sums, counts = {}, {}
    for x, w in zip(train, train_words):
        sums[w] = sums.get(w, 0.0) + x
        counts[w] = counts.get(w, 0) + 1
    rows = []
    for k, w in enumerate(words):
        n = counts.get(w, 0) - int(leave_one_out)
        total = sums.get(w, 0.0) - (train[k] if leave_one_out else 0.0)
        rows.append(total / n if n > 0 else overall)
    return np.stack(rows).astype(train.dtype)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tokenizer", help="exported tokenizer folder")
    parser.add_argument("--corpus", default="results/synthetic_corpus")
    parser.add_argument("--train-utterances", type=int, default=240)
    parser.add_argument("--levels", type=int, default=4)
    parser.add_argument("--codes", type=int, default=256)
    parser.add_argument("--pca-dims", type=int, default=64, help="principal directions kept (the RVQ's codebook_dim)")
    parser.add_argument("--whitening", default="0,0.5,1", help="comma list of powers for the pca conditions")
    parser.add_argument("--output", default="results/probes")
    args = parser.parse_args(argv)

    import torch

    from taste_toolkit.api import TasteTokenizer
    from taste_toolkit.evaluation.probe import collect, read_metadata, run_probes
    from taste_toolkit.evaluation.token_measurements import spread_rows

    torch.set_num_threads(1)
    tok = TasteTokenizer.from_pretrained(args.tokenizer)
    tok.model.quantizer = None  # the aggregator's continuous vectors
    train = spread_rows(read_metadata(os.path.join(args.corpus, "train")), args.train_utterances)
    test = read_metadata(os.path.join(args.corpus, "test"))
    (f_train, t_train), (f_test, t_test) = collect(tok, train), collect(tok, test)
    xa, xb = f_train["tokens"], f_test["tokens"]
    conditions = {"continuous": (xa, xb)}
    for standardize in (False, True):
        name = f"residual_kmeans_{args.levels}x{args.codes}" + ("_standardized" if standardize else "")
        conditions[name] = residual_kmeans(xa, xb, args.levels, args.codes, standardize)
    for power in (float(p) for p in args.whitening.split(",") if p.strip()):
        conditions[f"pca{args.pca_dims}_whiten{power:g}"] = pca_residual_kmeans(xa, xb, args.levels, args.codes,
                                                                               args.pca_dims, power)
    prior_a = word_means(xa, t_train["word"], t_train["word"], leave_one_out=True)
    prior_b = word_means(xa, t_train["word"], t_test["word"], leave_one_out=False)
    ra, rb = residual_kmeans(xa - prior_a, xb - prior_b, args.levels, args.codes, False)
    conditions["text_residual"] = (ra, rb)
    conditions["text_residual_plus_word_mean"] = (ra + prior_a, rb + prior_b)
    results = {}
    for name, (a, b) in conditions.items():
        results[name] = run_probes(({"tokens": a}, t_train), ({"tokens": b}, t_test))["tokens"]
        print(name, results[name], flush=True)
    os.makedirs(args.output, exist_ok=True)
    with open(os.path.join(args.output, "rvq_capacity.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
