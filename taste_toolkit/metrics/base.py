"""What a metric plugin sees (:class:`Sample`) and the base class of the built-in ones.

A metric plugin (``taste_toolkit/plugins/metric/<name>.py``) subclasses
:class:`UtteranceMetric` and is registered with ``@register("metric", name)``.
The evaluation harness (:mod:`taste_toolkit.evaluation`) builds one metric at a
time, asks :meth:`UtteranceMetric.unavailable` whether its model is there (a
reason string skips it, written in the report), calls :meth:`score` once per
(system, utterance) pair, then :meth:`summarize` once per system with the
stored rows, and finally :meth:`close`.

Per-utterance values are plain numbers or strings (they go to a CSV);
:meth:`summarize` turns a system's rows into the summary columns (corpus WER,
pooled counts, means). ``NaN`` means "not applicable" (e.g. unit accuracy of
the original audio) and is left out of means; the harness counts it.
"""

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from taste_toolkit.interfaces import Metric


@dataclass
class Sample:
    """One reconstruction to score against its source.

    Attributes
    ----------
    utt_id : str
        Utterance ID (the same in every system).
    system : str
        Name of the system that made ``hyp``.
    ref : numpy.ndarray
        ``(T_ref,)`` float32 source waveform.
    hyp : numpy.ndarray
        ``(T_hyp,)`` float32 reconstruction, already resampled to ``sample_rate``.
    sample_rate : int
        Rate of both waveforms (the source's rate).
    text : str
        Reference transcript (may be empty: metrics needing it report that).
    ref_words : list of (str, float, float) or None
        Known source word times (seconds), e.g. from the corpus metadata.
    extras : dict
        What the system reported (speech-token counts, teacher-forced unit
        accuracy counts, codes, output sample rate, ...).
    """

    utt_id: str
    system: str
    ref: np.ndarray
    hyp: np.ndarray
    sample_rate: int
    text: str = ""
    ref_words: Optional[List[Tuple[str, float, float]]] = None
    extras: Dict = field(default_factory=dict)

    @property
    def ref_seconds(self):
        return len(self.ref) / float(self.sample_rate)


def to_float(value):
    """CSV string / number / None -> float (NaN when empty or not a number)."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return out


def nanmean(values):
    """Mean of the finite values (NaN if none)."""
    arr = np.array([to_float(v) for v in values], dtype=float)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else float("nan")


def pooled(rows, numerator, denominator):
    """``sum(numerator) / sum(denominator)`` over rows with both finite (NaN if no total)."""
    num = den = 0.0
    for r in rows:
        a, b = to_float(r.get(numerator)), to_float(r.get(denominator))
        if math.isfinite(a) and math.isfinite(b):
            num, den = num + a, den + b
    return num / den if den > 0 else float("nan")


class UtteranceMetric(Metric):
    """Base of the built-in metrics: per-utterance :meth:`score`, per-system :meth:`summarize`.

    Class attributes
    ----------------
    needs : frozenset
        Any of ``reference_audio``, ``reference_text``, ``units`` (teacher-forced
        unit accuracy counts from the system), ``tokens`` (speech-token counts,
        codes), ``word_boundaries``. A sample without the reference text is not
        scored by metrics needing ``reference_text`` (the harness reports it).
    fields : tuple of str
        Per-utterance columns returned by :meth:`score`.
    columns : dict
        ``{summary key: table header}``: what :meth:`summarize` returns, in table order.
    paired_columns : dict or None
        ``{summary key: (per-utterance field, weight field or None)}``: the
        per-utterance values whose (weighted) mean *is* the summary column, so the
        report can bootstrap a system's difference from the reference system
        (:mod:`taste_toolkit.evaluation.bootstrap`). ``None`` (default): every
        column that is also a field, unweighted (right for :meth:`summarize`'s
        default plain mean); ``{}``: none.
    """

    needs = frozenset({"reference_audio"})
    fields: Tuple[str, ...] = ()
    columns: Dict[str, str] = {}
    #: Decimals of each summary column in the Markdown table (default 3).
    precision: Dict[str, int] = {}
    paired_columns: Optional[Dict[str, Tuple[str, Optional[str]]]] = None

    def summarize(self, rows: List[Dict]) -> Dict:
        """Summary of one system from its rows (default: mean of each column key)."""
        return {key: nanmean(r.get(key) for r in rows) for key in self.columns}

    def paired_values(self, row: Dict) -> Dict[str, Tuple[float, float]]:
        """``{summary key: (value, weight)}`` of one scored row, for paired bootstrap CIs.

        A summary column equals ``sum(weight * value) / sum(weight)`` over a system's
        rows; a NaN value or a weight <= 0 leaves the row out of that column's comparison.
        """
        spec = self.paired_columns
        if spec is None:
            spec = {key: (key, None) for key in self.columns if key in self.fields}
        return {key: (to_float(row.get(value)), to_float(row.get(weight)) if weight else 1.0)
                for key, (value, weight) in spec.items()}

    def describe(self) -> str:
        """One line for the report: what the metric measures and with which model."""
        return (type(self).__doc__ or type(self).__name__).strip().split("\n")[0]
