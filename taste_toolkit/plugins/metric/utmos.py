"""UTMOS (UTokyo-SaruLab MOS predictor) when the user has the model locally."""

import os

from taste_toolkit.metrics.base import UtteranceMetric
from taste_toolkit.registry import register


@register("metric", "utmos")
class UTMOS(UtteranceMetric):
    """UTMOS22 strong (SpeechMOS torch.hub entry ``utmos22_strong``), mean over utterances; skipped unless available locally.

    Arguments
    ---------
    model : str
        A local clone of github.com/tarepan/SpeechMOS (loaded with
        ``torch.hub.load(model, "utmos22_strong", source="local")``; its
        checkpoint must be in the torch hub cache), or a hub spec such as
        ``tarepan/SpeechMOS:v1.2.0`` already in the torch hub cache. ``""``
        (default) skips the metric: no UTMOS weights ship in a registry package.
    """

    needs = frozenset()
    fields = ("utmos",)
    columns = {"utmos": "UTMOS"}
    precision = {"utmos": 2}

    def __init__(self, model: str = ""):
        self.model = model
        self._predictor = None

    def unavailable(self):
        if not self.model:
            return ("no UTMOS model given (options.model: a local SpeechMOS clone or a cached torch.hub spec); "
                    "UTMOS weights are downloaded from a hub, which is not reachable offline")
        try:
            self._load()
        except Exception as exc:  # noqa: BLE001 - torch.hub raises many types
            return f"UTMOS model {self.model!r} could not be loaded offline: {type(exc).__name__}: {exc}"
        return None

    def _load(self):
        import torch

        if self._predictor is None:
            if os.path.isdir(self.model):
                self._predictor = torch.hub.load(self.model, "utmos22_strong", source="local", trust_repo=True)
            else:
                repo = self.model.replace("/", "_").replace(":", "_")
                if not os.path.isdir(os.path.join(torch.hub.get_dir(), repo)):
                    raise FileNotFoundError(f"{repo} is not in the torch hub cache {torch.hub.get_dir()}")
                self._predictor = torch.hub.load(self.model, "utmos22_strong", trust_repo=True, skip_validation=True)
            self._predictor.eval()
        return self._predictor

    def score(self, sample):
        import torch

        wav = torch.from_numpy(sample.hyp).float()[None]
        with torch.no_grad():
            return {"utmos": float(self._load()(wav, sample.sample_rate).reshape(-1)[0])}

    def close(self):
        self._predictor = None
