"""Speaker similarity: cosine of resemblyzer d-vectors of the source and the reconstruction."""

import numpy as np

from taste_toolkit.metrics.base import UtteranceMetric
from taste_toolkit.registry import register


@register("metric", "speaker_similarity")
class SpeakerSimilarity(UtteranceMetric):
    """Speaker similarity: cosine of resemblyzer GE2E d-vectors (256-d, bundled weights, offline), mean over utterances.

    The paper used a WavLM speaker-verification model; numbers are comparable
    between systems scored here, not with the paper's.
    """

    needs = frozenset({"reference_audio"})
    fields = ("spk_sim",)
    columns = {"spk_sim": "Spk sim"}

    def __init__(self):
        self._encoder = None
        self._ref = (None, None)

    def unavailable(self):
        try:
            import resemblyzer  # noqa: F401
        except Exception as exc:  # noqa: BLE001 - webrtcvad fails with setuptools >= 81 at import
            return f"resemblyzer is not importable ({exc}); pip install resemblyzer 'setuptools<81'"
        return None

    def _embed(self, wav, sample_rate):
        from resemblyzer import VoiceEncoder, preprocess_wav

        if self._encoder is None:
            self._encoder = VoiceEncoder(device="cpu", verbose=False)
        x = preprocess_wav(np.asarray(wav, dtype=np.float32), source_sr=sample_rate)
        if x.size < 1600:  # VAD removed (almost) everything: fall back to the raw signal
            from taste_toolkit.audio import resample

            x = resample(wav, sample_rate, 16000)
        return self._encoder.embed_utterance(x)

    def score(self, sample):
        if self._ref[0] != sample.utt_id:
            self._ref = (sample.utt_id, self._embed(sample.ref, sample.sample_rate))
        hyp = self._embed(sample.hyp, sample.sample_rate)
        return {"spk_sim": float(np.dot(self._ref[1], hyp))}  # both unit-norm

    def close(self):
        self._encoder, self._ref = None, (None, None)
