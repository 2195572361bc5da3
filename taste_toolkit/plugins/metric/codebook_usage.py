"""Codebook usage of a system's discrete tokens: share of codes used and perplexity, per RVQ layer."""

import json
import math

import numpy as np

from taste_toolkit.metrics.base import UtteranceMetric, to_float
from taste_toolkit.registry import register


@register("metric", "codebook_usage")
class CodebookUsage(UtteranceMetric):
    """Codebook usage (codes used at least once / codebook size) and code perplexity, pooled, mean over layers.

    Collapsed codebooks (a known RVQ failure) show as low usage and a
    perplexity near 1; systems without codes show ``—``.
    """

    needs = frozenset({"tokens"})
    fields = ("codes", "codebook_size")
    columns = {"usage": "codebook usage", "perplexity": "code perplexity"}
    precision = {"perplexity": 1}

    def score(self, sample):
        codes = sample.extras.get("codes")
        if not codes:
            return {"codes": "", "codebook_size": float("nan")}
        return {"codes": json.dumps(codes), "codebook_size": sample.extras.get("codebook_size", float("nan"))}

    def summarize(self, rows):
        rows = [r for r in rows if r["codes"]]
        if not rows:
            return {"usage": float("nan"), "perplexity": float("nan"), "per_layer": []}
        per_utt = [np.array(json.loads(r["codes"]), dtype=np.int64) for r in rows]
        codes = np.concatenate([c.reshape(len(c), -1) for c in per_utt])
        size = to_float(rows[0]["codebook_size"])
        # Systems that do not report their codebook size: the largest code seen bounds it from below.
        size = int(size) if math.isfinite(size) else int(codes.max()) + 1
        layers = []
        for layer in codes.T:
            counts = np.bincount(layer, minlength=size).astype(float)
            p = counts[counts > 0] / counts.sum()
            layers.append({"usage": float((counts > 0).sum() / size),
                           "perplexity": float(math.exp(-(p * np.log(p)).sum()))})
        return {"usage": float(np.mean([x["usage"] for x in layers])),
                "perplexity": float(np.mean([x["perplexity"] for x in layers])), "per_layer": layers}
