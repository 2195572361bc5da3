"""Teacher-forced unit accuracy (top-1 / top-5) of a tokenizer's unit decoder."""

from taste_toolkit.metrics.base import UtteranceMetric, pooled, to_float
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

    def paired_values(self, row):
        """Per-utterance accuracies weighted by their unit counts (the pooled columns)."""
        total = to_float(row.get("tf_total"))
        if not total > 0:
            return {k: (float("nan"), 0.0) for k in self.columns}
        return {"unit_top1": (to_float(row.get("tf_top1")) / total, total),
                "unit_top5": (to_float(row.get("tf_top5")) / total, total)}

    def score(self, sample):
        return {k: sample.extras.get(k, float("nan")) for k in self.fields}

    def summarize(self, rows):
        return {"unit_top1": pooled(rows, "tf_top1", "tf_total"), "unit_top5": pooled(rows, "tf_top5", "tf_total")}
