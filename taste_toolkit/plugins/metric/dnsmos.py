"""DNSMOS (P.835 OVRL/SIG/BAK and P.808) of the reconstruction, with speechmos' bundled ONNX models."""

from taste_toolkit.metrics.base import UtteranceMetric
from taste_toolkit.registry import register


@register("metric", "dnsmos")
class DNSMOS(UtteranceMetric):
    """DNSMOS (speechmos, bundled ONNX, offline): OVRL (the paper's column) and P.808 MOS, mean over utterances; no reference needed."""

    needs = frozenset()
    fields = ("ovrl", "sig", "bak", "p808")
    columns = {"ovrl": "DNSMOS", "p808": "DNSMOS P.808"}
    precision = {"ovrl": 2, "p808": 2}

    def unavailable(self):
        try:
            from speechmos import dnsmos  # noqa: F401
        except Exception as exc:  # noqa: BLE001
            return f"speechmos is not installed ({exc}); pip install speechmos onnxruntime librosa requests"
        return None

    def score(self, sample):
        import numpy as np
        from speechmos import dnsmos

        from taste_toolkit.audio import resample

        x = resample(sample.hyp, sample.sample_rate, 16000)
        peak = float(np.abs(x).max()) if x.size else 0.0
        if peak > 1.0:  # speechmos requires [-1, 1]
            x = x / peak
        r = dnsmos.run(x.astype(np.float32), sr=16000)
        return {"ovrl": float(r["ovrl_mos"]), "sig": float(r["sig_mos"]), "bak": float(r["bak_mos"]),
                "p808": float(r["p808_mos"])}
