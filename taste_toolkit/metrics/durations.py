"""Word duration consistency between a source utterance and its reconstruction.

TASTE (arXiv 2504.07053) reports how often the reconstruction keeps the
source's word durations: the share of source words whose duration in the
reconstruction is within 25 ms of their duration in the source.

Word lists are ``[(word, start_s, end_s), ...]`` in time order, e.g. from a
forced aligner or :meth:`taste_toolkit.metrics.asr.OfflineASR.transcribe_words`.
The two lists need not contain the same words (an ASR may miss or insert
some): words are compared after normalization (lower case, punctuation
removed, except apostrophes inside words), the two normalized sequences are
aligned with :class:`difflib.SequenceMatcher` (longest matching blocks, no
junk heuristic), and only words in equal blocks are compared. Source words
without a counterpart count as inconsistent; extra reconstruction words are
ignored (the denominator is the number of source words).
"""

import difflib
import math
import re

from taste_toolkit.errors import InputError

_PUNCT = re.compile(r"[^\w\s']|_")


def normalize_word(word):
    """Lower-case ``word`` and strip punctuation (``"Hello,"`` -> ``"hello"``).

    Apostrophes are kept inside words (``"Don't"`` -> ``"don't"``) and removed
    at the edges (``"'quoted'"`` -> ``"quoted"``).
    """
    return _PUNCT.sub("", str(word).lower()).strip().strip("'")


def _normalized(words, name):
    """Validate ``[(word, start, end), ...]``; return ``(tokens, durations)``.

    Words that normalize to nothing (pure punctuation) are dropped.
    """
    tokens, durations = [], []
    for k, item in enumerate(words):
        try:
            word, start, end = item
            start, end = float(start), float(end)
        except (TypeError, ValueError) as exc:
            raise InputError(
                f"{name}[{k}] must be a (word, start_s, end_s) triple, got {item!r}."
            ) from exc
        if not (math.isfinite(start) and math.isfinite(end)) or end < start:
            raise InputError(
                f"{name}[{k}] = {item!r} has invalid times: need finite start <= end (seconds)."
            )
        token = normalize_word(word)
        if token:
            tokens.append(token)
            durations.append(end - start)
    return tokens, durations


def word_duration_consistency(ref_words, hyp_words, tolerance=0.025):
    """Share of source words whose reconstructed duration is within ``tolerance``.

    Parameters
    ----------
    ref_words : list of (str, float, float)
        Source words with start and end times (seconds).
    hyp_words : list of (str, float, float)
        Reconstruction words with start and end times (seconds).
    tolerance : float
        Maximum absolute duration difference (seconds) to count as consistent;
        25 ms in the paper. A small epsilon absorbs float rounding.

    Returns
    -------
    dict
        ``consistency`` (float in [0, 1], NaN if there are no source words),
        ``matched`` (int, source words paired with a reconstruction word),
        ``consistent`` (int), ``total`` (int, source words after normalization).

    Examples
    --------
    >>> ref = [("Hello,", 0.0, 0.40), ("world", 0.40, 0.90)]
    >>> hyp = [("hello", 0.1, 0.52), ("world!", 0.52, 1.10)]
    >>> word_duration_consistency(ref, hyp)["consistency"]
    0.5
    """
    if not (isinstance(tolerance, (int, float)) and tolerance >= 0):
        raise InputError(f"tolerance must be a non-negative number of seconds, got {tolerance!r}.")
    ref_tokens, ref_dur = _normalized(ref_words, "ref_words")
    hyp_tokens, hyp_dur = _normalized(hyp_words, "hyp_words")
    matcher = difflib.SequenceMatcher(a=ref_tokens, b=hyp_tokens, autojunk=False)
    matched = consistent = 0
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            matched += 1
            diff = abs(ref_dur[block.a + k] - hyp_dur[block.b + k])
            if diff <= tolerance + 1e-9:
                consistent += 1
    total = len(ref_tokens)
    return {
        "consistency": consistent / total if total else float("nan"),
        "matched": matched,
        "consistent": consistent,
        "total": total,
    }


def project_words_dtw(ref, hyp, sample_rate, ref_words):
    """Carry known source word times onto a reconstruction through a DTW frame alignment.

    The log-mel frames (10 ms) of both signals are paired by DTW (as for MCD,
    :mod:`taste_toolkit.metrics.signal`); a source time ``t`` maps to the mean
    time of the reconstruction frames paired with source frame ``round(t / 10 ms)``.
    Text-free, so it also segments unintelligible reconstructions, but it is
    only as good as the spectral match: use it when the source boundaries are
    known (corpus metadata) and the two signals say the same thing.

    Parameters
    ----------
    ref, hyp : array-like
        Waveforms ``(T_ref,)``, ``(T_hyp,)`` at ``sample_rate``.
    sample_rate : int
        Common rate (Hz).
    ref_words : list of (str, float, float)
        Source words with times (seconds).

    Returns
    -------
    list of (str, float, float)
        The same words with their times in the reconstruction (identical signals
        give identical times up to the 10 ms frame grid).
    """
    import numpy as np

    from taste_toolkit.metrics.signal import HOP_SECONDS, _log_mel_pair, _pair_frames

    m_ref, m_hyp = _log_mel_pair(ref, hyp, sample_rate)
    i, j = _pair_frames(m_ref, m_hyp, dtw=True)
    n_ref = m_ref.shape[1]
    sums, counts = np.zeros(n_ref), np.zeros(n_ref)
    np.add.at(sums, i, j)
    np.add.at(counts, i, 1)
    mapped = sums / np.maximum(counts, 1)  # DTW paths cover every source frame

    def to_hyp(t):
        return float(mapped[min(max(int(round(float(t) / HOP_SECONDS)), 0), n_ref - 1)] * HOP_SECONDS)

    _normalized(ref_words, "ref_words")  # validates the triples
    return [(w, to_hyp(s), to_hyp(e)) for w, s, e in ref_words]
