"""Teacher-forced unit accuracy (top-1 / top-5) of a tokenizer's unit decoder."""

from taste_toolkit.metrics.base import UtteranceMetric, pooled
from taste_toolkit.registry import register


@register("metric", "unit_accuracy")
class UnitAccuracy(UtteranceMetric):
    """Teacher-forced unit accuracy (paper's ablation metric): decoder fed the true previous units, pooled over units.

    The counts come from the system (``tokenizer`` systems compute them against
    the source's ground-truth units); other systems show ``—``.
    """

    needs = frozenset({"units"})
    fields = ("tf_top1", "tf_top5", "tf_total")
    columns = {"unit_top1": "unit top-1", "unit_top5": "unit top-5"}

    def score(self, sample):
        return {k: sample.extras.get(k, float("nan")) for k in self.fields}

    def summarize(self, rows):
        return {"unit_top1": pooled(rows, "tf_top1", "tf_total"), "unit_top5": pooled(rows, "tf_top5", "tf_total")}
