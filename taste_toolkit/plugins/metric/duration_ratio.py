"""Utterance duration ratio: reconstruction length / source length."""

from taste_toolkit.metrics.base import UtteranceMetric
from taste_toolkit.registry import register


@register("metric", "duration_ratio")
class DurationRatio(UtteranceMetric):
    """Utterance duration ratio (reconstruction / source samples; 1 = same length), mean over utterances."""

    needs = frozenset({"reference_audio"})
    fields = ("duration_ratio",)
    columns = {"duration_ratio": "dur. ratio"}

    def score(self, sample):
        from taste_toolkit.metrics.signal import duration_ratio

        return {"duration_ratio": duration_ratio(len(sample.ref), len(sample.hyp))}
