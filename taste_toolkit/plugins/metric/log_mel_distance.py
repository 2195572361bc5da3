"""Mean absolute log-mel difference (nats) between the source and its reconstruction."""

from taste_toolkit.metrics.base import UtteranceMetric
from taste_toolkit.registry import register


@register("metric", "log_mel_distance")
class LogMelDistance(UtteranceMetric):
    """Log-mel distance (mean |difference| of 80-band natural-log mels, DTW-aligned); 0 = identical."""

    needs = frozenset({"reference_audio"})
    fields = ("log_mel_dist",)
    columns = {"log_mel_dist": "log-mel dist."}

    def score(self, sample):
        from taste_toolkit.metrics.signal import log_mel_distance

        return {"log_mel_dist": log_mel_distance(sample.ref, sample.hyp, sample.sample_rate)}
