"""Speech-token rate (Hz) and bitrate (bps) of a system, from the tokens it used."""

import math

from taste_toolkit.metrics.base import UtteranceMetric, to_float
from taste_toolkit.registry import register


@register("metric", "token_rate")
class TokenRate(UtteranceMetric):
    """Token rate = speech tokens / seconds of source audio (pooled); bitrate = rate x bits per token.

    Systems that report no tokens (the original audio) get ``—``; continuous
    tokens (no quantizer) have no finite bitrate and show ``continuous``.
    """

    needs = frozenset({"tokens"})
    fields = ("speech_tokens", "seconds", "bits_per_token")
    columns = {"token_rate_hz": "Hz", "bitrate_bps": "bps"}
    precision = {"token_rate_hz": 2, "bitrate_bps": 1}

    def score(self, sample):
        tokens = sample.extras.get("speech_tokens")
        bits = sample.extras.get("bits_per_token", float("nan"))
        return {"speech_tokens": float("nan") if tokens is None else tokens, "seconds": sample.ref_seconds,
                "bits_per_token": "continuous" if bits is None and tokens is not None else bits}

    def summarize(self, rows):
        rows = [r for r in rows if math.isfinite(to_float(r["speech_tokens"]))]
        seconds = sum(to_float(r["seconds"]) for r in rows)
        if not rows or seconds <= 0:
            return {"token_rate_hz": float("nan"), "bitrate_bps": float("nan")}
        rate = sum(to_float(r["speech_tokens"]) for r in rows) / seconds
        if any(r["bits_per_token"] == "continuous" for r in rows):
            return {"token_rate_hz": rate, "bitrate_bps": "continuous" if rate > 0 else 0.0}
        bits = sum(to_float(r["speech_tokens"]) * to_float(r["bits_per_token"]) for r in rows)
        return {"token_rate_hz": rate, "bitrate_bps": bits / seconds}
