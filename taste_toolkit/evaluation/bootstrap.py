"""Bootstrap confidence intervals over per-item values (utterances, two-choice pairs).

* :func:`paired_bootstrap`: system A minus system B on the *same* items (the
  items are resampled together, so what the two systems share -- a hard
  utterance, a long one -- cancels out). This is how the evaluation harness
  compares every system with its ``reference_system``.
* :func:`bootstrap_ci`: the mean of one system's values, e.g. the accuracy of a
  two-choice set from its per-pair 0/1 correctness.

Both use the percentile method over ``num_resamples`` resamples of the items
with replacement, drawn from ``numpy.random.default_rng(seed)``: the same inputs
and seed give the same interval. Optional per-item ``weights`` turn the mean
into a pooled ratio ``sum(w * v) / sum(w)``: with ``v`` an utterance's error
rate and ``w`` its word count, that is corpus WER (or pooled duration
consistency), resampled by utterance.
"""

import math

import numpy as np

from taste_toolkit.errors import ConfigError, InputError

#: Options of a bootstrap in a config (``bootstrap:`` of an evaluation YAML).
DEFAULT_OPTIONS = {"num_resamples": 10000, "seed": 0, "confidence": 0.95}
#: Resampled index matrices are built in chunks of at most this many entries (memory bound).
_CHUNK_ENTRIES = 2_000_000


def _values(x, name):
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be a sequence of numbers ({exc}).") from None
    if arr.ndim != 1:
        raise InputError(f"{name} must be one-dimensional (one value per item), got shape {arr.shape}.")
    if arr.size == 0:
        raise InputError(f"{name} is empty: a bootstrap needs at least one item.")
    if not np.isfinite(arr).all():
        bad = np.flatnonzero(~np.isfinite(arr))
        raise InputError(f"{name} has {bad.size} non-finite value(s) (first at index {int(bad[0])}); "
                         "drop the items a system could not score before bootstrapping.")
    return arr


def _check_options(n, num_resamples, confidence, weights):
    if not isinstance(num_resamples, (int, np.integer)) or num_resamples < 1:
        raise InputError(f"num_resamples must be a positive integer, got {num_resamples!r}.")
    if not 0.0 < float(confidence) < 1.0:
        raise InputError(f"confidence must be in (0, 1), e.g. 0.95, got {confidence!r}.")
    if weights is None:
        return np.ones(n)
    w = _values(weights, "weights")
    if w.size != n:
        raise InputError(f"weights has {w.size} values for {n} items.")
    if (w <= 0).any():
        raise InputError("weights must be > 0 (e.g. words per utterance); drop items with no words first.")
    return w


def _resampled_means(values, weights, num_resamples, seed):
    """``(num_resamples,)`` weighted means of ``values`` over bootstrap resamples of the items."""
    n = values.size
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK_ENTRIES // n)
    out = np.empty(num_resamples)
    wv = weights * values
    for s in range(0, num_resamples, rows):
        idx = rng.integers(0, n, size=(min(rows, num_resamples - s), n))
        out[s:s + idx.shape[0]] = wv[idx].sum(1) / weights[idx].sum(1)
    return out


def _interval(means, confidence):
    alpha = (1.0 - float(confidence)) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def paired_bootstrap(a, b, num_resamples=10000, seed=0, confidence=0.95, weights=None):
    """Mean difference ``a - b`` over paired items, with its bootstrap confidence interval.

    Parameters
    ----------
    a, b : sequence of float
        One value per item, the same items in the same order (system and reference).
    num_resamples : int
        Bootstrap resamples of the items.
    seed : int
        Seed of the resampling (``numpy.random.default_rng``); results are deterministic.
    confidence : float
        Coverage of the interval, e.g. 0.95.
    weights : sequence of float, optional
        Positive per-item weights shared by both systems (e.g. source words per
        utterance): the statistic is then ``sum(w * (a - b)) / sum(w)``.

    Returns
    -------
    dict
        ``difference`` (mean of ``a - b`` on the items), ``ci_low``, ``ci_high``,
        ``p_le_zero`` (share of resampled differences ``<= 0``: near 0 when ``a``
        is clearly larger, near 1 when clearly smaller), ``n``, ``num_resamples``,
        ``confidence``.

    Raises
    ------
    InputError
        Different lengths, empty or non-finite inputs, bad options.
    """
    a, b = _values(a, "a"), _values(b, "b")
    if a.size != b.size:
        raise InputError(f"Paired bootstrap needs the same items in both systems: a has {a.size} values, "
                         f"b has {b.size}. Keep only the items both systems scored.")
    w = _check_options(a.size, num_resamples, confidence, weights)
    diff = a - b
    means = _resampled_means(diff, w, int(num_resamples), seed)
    low, high = _interval(means, confidence)
    return {"difference": float((w * diff).sum() / w.sum()), "ci_low": low, "ci_high": high,
            "p_le_zero": float(np.mean(means <= 0.0)), "n": int(a.size), "num_resamples": int(num_resamples),
            "confidence": float(confidence)}


def bootstrap_ci(values, num_resamples=10000, seed=0, confidence=0.95, weights=None):
    """Mean of one system's per-item values with its bootstrap confidence interval.

    Parameters
    ----------
    values : sequence of float
        One value per item (e.g. 1.0 / 0.0 for a right / wrong two-choice pair).
    num_resamples, seed, confidence, weights
        As in :func:`paired_bootstrap`.

    Returns
    -------
    dict
        ``mean``, ``ci_low``, ``ci_high``, ``n``, ``num_resamples``, ``confidence``.
    """
    v = _values(values, "values")
    w = _check_options(v.size, num_resamples, confidence, weights)
    low, high = _interval(_resampled_means(v, w, int(num_resamples), seed), confidence)
    return {"mean": float((w * v).sum() / w.sum()), "ci_low": low, "ci_high": high, "n": int(v.size),
            "num_resamples": int(num_resamples), "confidence": float(confidence)}


def bootstrap_options(options=None):
    """Config ``{num_resamples, seed, confidence}`` with defaults filled in; :class:`ConfigError` if invalid."""
    options = {} if options is None else options
    if not isinstance(options, dict) or set(options) - set(DEFAULT_OPTIONS):
        raise ConfigError(f"bootstrap must be a mapping with keys among {sorted(DEFAULT_OPTIONS)}, got {options!r}.")
    out = {**DEFAULT_OPTIONS, **options}
    if not isinstance(out["num_resamples"], int) or out["num_resamples"] < 1 or not isinstance(out["seed"], int) \
            or not isinstance(out["confidence"], (int, float)) or not 0 < out["confidence"] < 1:
        raise ConfigError(f"bootstrap needs an integer num_resamples >= 1, an integer seed and 0 < confidence < 1, "
                          f"got {out}.")
    return out


def format_ci(result, digits=3, key="difference"):
    """``"+0.073 [0.028, 0.117]"`` for a :func:`paired_bootstrap` (or :func:`bootstrap_ci`, ``key="mean"``) result."""
    value = result[key]
    if value is None or not math.isfinite(value):
        return "—"
    sign = "+" if key == "difference" and value >= 0 else ""
    return f"{sign}{value:.{digits}f} [{result['ci_low']:.{digits}f}, {result['ci_high']:.{digits}f}]"
