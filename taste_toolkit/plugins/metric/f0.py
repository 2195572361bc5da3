"""F0 RMSE and correlation on frames voiced in both the source and the reconstruction."""

from taste_toolkit.metrics.base import UtteranceMetric, nanmean, to_float
from taste_toolkit.registry import register


@register("metric", "f0")
class F0Metric(UtteranceMetric):
    """F0 RMSE (Hz) and Pearson correlation on jointly voiced 10 ms frames (pYIN, DTW-paired).

    The source's pitch track is computed once per utterance and reused for
    every system (the harness scores one utterance's systems in a row).

    Arguments
    ---------
    min_voiced_frames : int
        Fewer jointly voiced frames give NaN (left out of the means).
    """

    needs = frozenset({"reference_audio"})
    fields = ("f0_rmse_hz", "f0_corr", "voiced_frames")
    columns = {"f0_rmse_hz": "F0 RMSE (Hz)", "f0_corr": "F0 corr"}
    precision = {"f0_rmse_hz": 1}

    def __init__(self, min_voiced_frames: int = 3):
        self.min_voiced_frames = min_voiced_frames
        self._ref = (None, None)

    def score(self, sample):
        from taste_toolkit.metrics.signal import f0_metrics, pitch_track

        if self._ref[0] != sample.utt_id:
            self._ref = (sample.utt_id, pitch_track(sample.ref, sample.sample_rate))
        return f0_metrics(sample.ref, sample.hyp, sample.sample_rate, self.min_voiced_frames, ref_track=self._ref[1])

    def summarize(self, rows):
        return {"f0_rmse_hz": nanmean(r["f0_rmse_hz"] for r in rows),
                "f0_corr": nanmean(r["f0_corr"] for r in rows),
                "voiced_frames": sum(to_float(r["voiced_frames"]) for r in rows)}

    def close(self):
        self._ref = (None, None)
