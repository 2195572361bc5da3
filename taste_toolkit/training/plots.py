"""PNG plots people would rather look at than numbers: attention maps, curves."""

import matplotlib

matplotlib.use("Agg")  # headless: no display on servers
import matplotlib.pyplot as plt  # noqa: E402


def plot_attention(attention, path, token_labels=None, frame_rate=50.0, title=""):
    """Save a text-tokens x frames attention map.

    Arguments
    ---------
    attention : torch.Tensor
        ``(N, T)`` weights (rows sum to 1).
    path : str
        Output PNG.
    token_labels : list of str, optional
        One label per row.
    frame_rate : float
        Frames per second, for the time axis.
    """
    n, t = attention.shape
    fig, ax = plt.subplots(figsize=(max(6, t / 25), max(3, n / 3)))
    ax.imshow(attention.numpy(), aspect="auto", origin="lower", cmap="viridis", extent=(0, t / frame_rate, -0.5, n - 0.5))
    if token_labels is not None:
        ax.set_yticks(range(n))
        ax.set_yticklabels([repr(s.strip()) if s.strip() else repr(s) for s in token_labels], fontsize=7)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("text token")
    ax.set_title(f"aggregator cross-attention {title}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_curves(history, path, keys=("loss",)):
    """Plot per-epoch curves from ``history``: list of ``{"epoch", "train": {..}, "valid": {..}}``."""
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.5), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for split in ("train", "valid"):
            pts = [(h["epoch"], h[split][key]) for h in history if key in h.get(split, {})]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=split)
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def update_curves(folder, epoch, train_stats, valid_stats, keys=("loss",)):
    """Record one epoch in ``<folder>/curves.json`` and redraw ``<folder>/curves.png``.

    Epochs at or after ``epoch`` from an earlier (interrupted) run are replaced, so a
    resumed run keeps its history without duplicates; an unreadable file restarts
    the history with a warning. The JSON is written atomically: a kill while writing
    never loses the earlier epochs.
    """
    import json
    import logging
    import os

    from taste_toolkit.utils import atomic_write

    path = os.path.join(folder, "curves.json")
    history = []
    if os.path.exists(path):
        try:
            with open(path) as f:
                history = [h for h in json.load(f) if h["epoch"] < epoch]
        except (ValueError, KeyError, TypeError) as exc:
            logging.getLogger(__name__).warning("%s is unreadable (%s); the curves restart from this epoch.", path, exc)
    history.append({"epoch": epoch, "train": train_stats, "valid": valid_stats})
    with atomic_write(path) as f:
        json.dump(history, f, indent=1)
    plot_curves(history, os.path.join(folder, "curves.png"), keys=keys)
    return history
