"""Whether decoding ends well: end-of-speech reached, and an output length near the source's."""

import math

from taste_toolkit.metrics.base import UtteranceMetric, to_float
from taste_toolkit.registry import register


@register("metric", "decode_stops")
class DecodeStops(UtteranceMetric):
    """Share of decodes that emit end-of-speech (not stopped by the length cap) and share whose length is within [low, high] x the source's.

    ``eos_reached`` comes from the system's ``hit_max_len`` extra (systems with no
    decoder, such as ``original`` or ``units_topline``, report none: ``—``);
    ``duration_in_range`` compares the output and source sample counts, for
    every system.

    Arguments
    ---------
    low, high : float
        The accepted duration ratio range (issue 17: 0.7-1.4).
    """

    needs = frozenset({"reference_audio"})
    fields = ("eos_reached", "duration_ratio", "duration_in_range")
    columns = {"eos_reached": "EOS reached", "duration_in_range": "dur. in range"}

    def __init__(self, low: float = 0.7, high: float = 1.4):
        if not 0 < low <= high:
            from taste_toolkit.errors import ConfigError

            raise ConfigError(f"decode_stops needs 0 < low <= high, got low={low}, high={high}.")
        self.low, self.high = float(low), float(high)

    def score(self, sample):
        capped = sample.extras.get("hit_max_len")
        ratio = len(sample.hyp) / len(sample.ref) if len(sample.ref) else float("nan")
        return {
            "eos_reached": float("nan") if capped is None else 1.0 - float(bool(capped)),
            "duration_ratio": ratio,
            "duration_in_range": float(self.low <= ratio <= self.high) if math.isfinite(ratio) else float("nan"),
        }

    def describe(self):
        return (f"share of decodes reaching end-of-speech (not the length cap) and share of outputs whose "
                f"duration is within {self.low:g}-{self.high:g}x the source's")

    def summarize(self, rows):
        out = {}
        for key in self.columns:
            values = [to_float(r.get(key)) for r in rows]
            values = [v for v in values if math.isfinite(v)]
            out[key] = sum(values) / len(values) if values else float("nan")
        return out
