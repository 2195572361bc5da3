"""Word timestamps from the aggregator's cross-attention (Whisper-style DTW).

The aggregator's queries are the transcript's tokens and its keys are Whisper
encoder frames, so its attention (text tokens x frames) is an alignment. As in
Whisper's own word timestamps: standardize each frame's weights over tokens,
median-filter along time, and find the monotonic path with dynamic time warping
on the negated matrix. A word spans the frames of its tokens on that path.
"""

import numpy as np

from taste_toolkit.errors import InputError


def _median_filter(x, width):
    """Median filter along the last axis (odd ``width``, edge padding)."""
    if width <= 1 or x.shape[-1] < width:
        return x
    pad = width // 2
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)], mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, width, axis=-1)
    return np.median(windows, axis=-1)


def monotonic_path(cost):
    """DTW path through ``cost (N, T)`` with steps (1,1), (1,0), (0,1).

    The accumulated cost is filled one anti-diagonal at a time (cells with
    ``i + j = d`` depend only on diagonals ``d - 1`` and ``d - 2``), so the
    Python loop runs ``N + T`` times instead of ``N x T``. Ties prefer the
    diagonal step, then (1, 0), then (0, 1).

    Returns
    -------
    rows, cols : numpy.ndarray
        The path's coordinates from (0, 0) to (N-1, T-1).
    """
    cost = np.asarray(cost, dtype=np.float64)
    n, t = cost.shape
    acc = np.full((n + 1, t + 1), np.inf)
    acc[0, 0] = 0.0
    trace = np.zeros((n + 1, t + 1), dtype=np.int8)
    for d in range(2, n + t + 1):
        i = np.arange(max(1, d - t), min(n, d - 1) + 1)
        j = d - i
        choices = np.stack([acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]])
        k = np.argmin(choices, axis=0)  # first minimum: the tie order above
        acc[i, j] = cost[i - 1, j - 1] + choices[k, np.arange(i.size)]
        trace[i, j] = k
    i, j, rows, cols = n, t, [], []
    while i > 0 and j > 0:
        rows.append(i - 1)
        cols.append(j - 1)
        k = trace[i, j]
        i, j = (i - 1, j - 1) if k == 0 else (i - 1, j) if k == 1 else (i, j - 1)
    return np.array(rows[::-1]), np.array(cols[::-1])


def token_frame_spans(weights, medfilt_width=7):
    """First and last frame of each token on the DTW path through an attention matrix.

    Arguments
    ---------
    weights : numpy.ndarray
        ``(N, T)`` attention of N text tokens over T frames.
    medfilt_width : int
        Median filter width in frames (Whisper uses 7).

    Returns
    -------
    first, last : numpy.ndarray
        ``(N,)`` int frame indices (inclusive); every frame belongs to some token.
    """
    n, t = weights.shape
    if t == 0 or n == 0:
        raise InputError("Cannot align an utterance with no frames or no text tokens.")
    # Whisper: standardize over tokens per frame, so frames every token attends to
    # (attention sinks) stop dominating; then smooth along time.
    std = weights.std(axis=0, keepdims=True)
    z = (weights - weights.mean(axis=0, keepdims=True)) / np.where(std > 0, std, 1.0)
    z = _median_filter(z, medfilt_width)
    rows, cols = monotonic_path(-z)
    first = np.full(n, t, dtype=int)
    last = np.zeros(n, dtype=int)
    for r, c in zip(rows, cols):
        first[r] = min(first[r], c)
        last[r] = max(last[r], c)
    return first, last


def word_timestamps(tokens, medfilt_width=7):
    """``[(word, start_s, end_s)]`` for :class:`~taste_toolkit.tokens.TasteTokens` with ``alignment``.

    Arguments
    ---------
    tokens : TasteTokens
        From ``encode(..., return_alignment=True)``; ``alignment`` is ``(N, T)``.
    medfilt_width : int
        Median filter width in frames (Whisper uses 7).

    Raises
    ------
    InputError
        No alignment in the tokens (encode with ``return_alignment=True``; text-only
        models have none).
    """
    if tokens.alignment is None or tokens.frame_rate <= 0:
        raise InputError("These tokens have no alignment: encode with return_alignment=True "
                         "using a model with a cross-attention aggregator.")
    first, last = token_frame_spans(tokens.alignment.float().cpu().numpy(), medfilt_width)
    word_ids = tokens.word_ids.tolist()
    out = []
    for w, word in enumerate(tokens.words):
        idx = [i for i, x in enumerate(word_ids) if x == w]
        start, end = first[idx].min(), last[idx].max() + 1
        out.append((word, float(start / tokens.frame_rate), float(end / tokens.frame_rate)))
    return out


def plot_alignment(tokens, path, timestamps=None, title=None):
    """Save the attention map (text tokens x seconds) with word boundaries as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if tokens.alignment is None:
        raise InputError("These tokens have no alignment: encode with return_alignment=True.")
    weights = tokens.alignment.float().cpu().numpy()
    n, t = weights.shape
    fig, ax = plt.subplots(figsize=(max(6, t / 40), max(3, n / 4)))
    ax.imshow(weights, aspect="auto", origin="lower", interpolation="nearest",
              extent=(0, t / tokens.frame_rate, -0.5, n - 0.5), cmap="viridis")
    labels = [f"{tokens.words[w]}" if i == 0 or tokens.word_ids[i - 1] != w else "·"
              for i, w in enumerate(tokens.word_ids.tolist())]
    ax.set_yticks(range(n))
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("text tokens")
    for _, start, end in timestamps or []:
        ax.axvline(start, color="w", lw=0.6, alpha=0.7)
    ax.set_title(title or "aggregator attention" + (" + DTW word starts" if timestamps else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def boundary_error(predicted, reference):
    """Mean absolute start/end error (s) between two ``[(word, start, end)]`` lists of the same words."""
    if len(predicted) != len(reference):
        raise InputError(f"{len(predicted)} predicted words vs {len(reference)} reference words.")
    errs = [abs(p[1] - r[1]) + abs(p[2] - r[2]) for p, r in zip(predicted, reference)]
    return float(np.mean(errs) / 2) if errs else 0.0


__all__ = ["word_timestamps", "plot_alignment", "monotonic_path", "boundary_error"]
