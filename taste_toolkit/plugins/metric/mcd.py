"""Mel cepstral distortion (dB) between the source and its reconstruction."""

from taste_toolkit.metrics.base import UtteranceMetric
from taste_toolkit.registry import register


@register("metric", "mcd")
class MelCepstralDistortion(UtteranceMetric):
    """MCD (dB), 13 mel cepstra of 80-band log-mels, DTW-aligned (taste_toolkit.metrics.signal); 0 = identical.

    Arguments
    ---------
    n_cepstra : int
        Cepstra ``c1 .. cD`` compared.
    """

    needs = frozenset({"reference_audio"})
    fields = ("mcd_db",)
    columns = {"mcd_db": "MCD (dB)"}
    precision = {"mcd_db": 2}

    def __init__(self, n_cepstra: int = 13):
        self.n_cepstra = n_cepstra

    def score(self, sample):
        from taste_toolkit.metrics.signal import mel_cepstral_distortion

        return {"mcd_db": mel_cepstral_distortion(sample.ref, sample.hyp, sample.sample_rate, self.n_cepstra)}
