#!/usr/bin/env python3
"""Train the RVQ alone on a tokenizer's word vectors: do the codebooks collapse by themselves?

The aggregator of an exported tokenizer gives one continuous vector per word of the
embedded corpus (its quantizer taken out). A fresh ``rvq`` quantizer with the
recipe's options is initialized on the training split's vectors
(:meth:`~taste_toolkit.plugins.quantizer.rvq.ResidualVQQuantizer.init_codebooks`)
and trained on them for a few epochs with the commitment loss plus a
reconstruction MSE, a stand-in for the decoder's straight-through pull on
``project_in``/``project_out``. The aggregator does not move, so what changes is
the quantizer's own dynamics. Per epoch, the per-layer code perplexity and the
relative reconstruction error on the test split are written; at the end, the
token probes (speaker, prosody label, log duration) on the quantized test vectors::

    python recipes/librispeech/rvq_isolation.py results/taste/1986/tokenizer \\
        --conditions keep,pca --output results/rvq_isolation

The word vectors are cached in ``<output>/vectors.npz`` (collecting them runs the
encoder over the corpus once); later runs reuse them.
"""

import argparse
import json
import os
import sys

CONDITIONS = {
    # name: rvq options changed from the recipe's default (hparams/taste.yaml)
    "keep": {"projection_init": "keep"},  # random project_in/out, as the paper
    "pca": {"projection_init": "pca"},
    "pca_standardized": {"projection_init": "pca", "standardize": True},
    "pca_512": {"projection_init": "pca", "codebook_size": 512},
    "keep_no_reconstruction": {"projection_init": "keep", "reconstruction_weight": 0.0},
}


def collect_vectors(tokenizer, corpus, cache):
    """``{split}_x (N, D)`` word vectors and ``{split}_{target}`` probe targets, cached."""
    import numpy as np

    if os.path.exists(cache):
        data = np.load(cache, allow_pickle=False)
        return {key: data[key] for key in data.files}
    from taste_toolkit.api import TasteTokenizer
    from taste_toolkit.evaluation.probe import collect, read_metadata

    tok = TasteTokenizer.from_pretrained(tokenizer)
    tok.model.quantizer = None  # the aggregator's continuous vectors
    data = {}
    for split in ("train", "test"):
        features, targets = collect(tok, read_metadata(os.path.join(corpus, split)))
        data[f"{split}_x"] = features["tokens"].astype("float32")
        for key, values in targets.items():
            data[f"{split}_{key}"] = np.asarray(values)
    os.makedirs(os.path.dirname(cache) or ".", exist_ok=True)
    np.savez(cache, **data)
    return data


def layer_stats(q, x):
    """Per-layer perplexity and reconstruction error relative to the data's variance."""
    import torch

    q.eval()
    with torch.no_grad():
        out = q(x[None], torch.tensor([x.shape[0]]))
    q.train()
    perplexity = [round(out.metrics[f"rvq_perplexity_l{r}"], 1) for r in range(q.num_quantizers)]
    error = float((out.quantized[0] - x).pow(2).mean() / x.var(0).mean())
    return {"perplexity": perplexity, "relative_mse": round(error, 4)}


def run_condition(data, options, epochs, batch_words, lr, seed):
    """Train one fresh quantizer; returns per-epoch stats and the final probes."""
    import torch

    from taste_toolkit.evaluation.probe import run_probes
    from taste_toolkit.registry import build

    torch.manual_seed(seed)
    options = dict(options)
    reconstruction_weight = options.pop("reconstruction_weight", 1.0)
    xa = torch.tensor(data["train_x"])
    xb = torch.tensor(data["test_x"])
    rvq = dict(num_quantizers=4, codebook_size=256, codebook_dim=64, threshold_ema_dead_code=0.25)
    rvq.update(options)
    q = build("quantizer", "rvq", rvq, input_dim=xa.shape[1])
    init = q.init_codebooks(xa)
    opt = torch.optim.Adam(q.parameters(), lr=lr)
    history = [layer_stats(q, xb)]
    for _ in range(epochs):
        order = torch.randperm(xa.shape[0])
        for start in range(0, xa.shape[0] - batch_words + 1, batch_words):
            x = xa[order[start:start + batch_words]]
            out = q(x[None], torch.tensor([x.shape[0]]))
            loss = out.loss + reconstruction_weight * (out.quantized[0] - x).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        history.append(layer_stats(q, xb))
    q.eval()
    with torch.no_grad():
        qa = q(xa[None], torch.tensor([xa.shape[0]])).quantized[0].numpy()
        qb = q(xb[None], torch.tensor([xb.shape[0]])).quantized[0].numpy()
    targets = {split: {k[len(split) + 1:]: v for k, v in data.items() if k.startswith(split) and k != f"{split}_x"}
               for split in ("train", "test")}
    probes = run_probes(({"tokens": qa}, targets["train"]), ({"tokens": qb}, targets["test"]))["tokens"]
    return {"options": rvq, "reconstruction_weight": reconstruction_weight, "init": init,
            "epochs": history, "probes": probes}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tokenizer", help="exported tokenizer folder")
    parser.add_argument("--corpus", default="results/synthetic_corpus")
    parser.add_argument("--conditions", default="keep,pca", help=f"comma list of {sorted(CONDITIONS)}")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch_words", type=int, default=150, help="word vectors per step (~ a recipe batch)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="results/rvq_isolation")
    args = parser.parse_args(argv)
    names = [c for c in args.conditions.split(",") if c]
    unknown = sorted(set(names) - set(CONDITIONS))
    if unknown:
        parser.error(f"unknown conditions {unknown}; choose from {sorted(CONDITIONS)}")

    import torch

    torch.set_num_threads(1)
    data = collect_vectors(args.tokenizer, args.corpus, os.path.join(args.output, "vectors.npz"))
    results = {}
    for name in names:
        results[name] = run_condition(data, CONDITIONS[name], args.epochs, args.batch_words, args.lr, args.seed)
        last = results[name]["epochs"][-1]
        print(name, "perplexity by epoch:", [e["perplexity"] for e in results[name]["epochs"]],
              "final relative MSE:", last["relative_mse"], "probes:", results[name]["probes"], flush=True)
    with open(os.path.join(args.output, "rvq_isolation.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
