"""Word timestamps from attention: DTW path, word spans, plots, and the aggregator's alignment heads."""

import numpy as np
import pytest
import torch

from taste_toolkit.alignment import boundary_error, monotonic_path, plot_alignment, word_timestamps
from taste_toolkit.errors import ConfigError, InputError
from taste_toolkit.interfaces import EncoderOutput
from taste_toolkit.registry import build
from taste_toolkit.tokens import TasteTokens


def _tokens(attention, word_ids, words, frame_rate=50.0):
    n = len(word_ids)
    return TasteTokens(text=" ".join(words), words=words, text_ids=torch.arange(n), word_ids=torch.tensor(word_ids),
                       level="word", alignment=torch.as_tensor(attention, dtype=torch.float32), frame_rate=frame_rate)


def _block_attention(spans, t, sink=True, seed=0):
    """Each token attends to its frame span, plus (optionally) a strong sink on the last frame."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(0, 0.05, (len(spans), t))
    for i, (s, e) in enumerate(spans):
        a[i, s:e] += 1.0
    if sink:
        a[:, -1] += 5.0  # every token attends to the sink: standardization must remove it
    return a / a.sum(1, keepdims=True)


def test_monotonic_path_follows_the_cheapest_diagonal():
    cost = np.ones((3, 6))
    cost[0, 0:2] = cost[1, 2:4] = cost[2, 4:6] = 0
    rows, cols = monotonic_path(cost)
    assert rows[0] == 0 and cols[0] == 0 and rows[-1] == 2 and cols[-1] == 5
    assert np.all(np.diff(rows) >= 0) and np.all(np.diff(cols) >= 0)
    assert [c for r, c in zip(rows, cols) if r == 1] == [2, 3]


def _reference_path(cost):
    """Textbook cell-by-cell DTW (same steps and tie order) to check the vectorized one."""
    n, t = cost.shape
    acc = np.full((n + 1, t + 1), np.inf)
    acc[0, 0] = 0.0
    trace = np.zeros((n + 1, t + 1), dtype=int)
    for i in range(1, n + 1):
        for j in range(1, t + 1):
            choices = [acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]]
            trace[i, j] = int(np.argmin(choices))
            acc[i, j] = cost[i - 1, j - 1] + min(choices)
    i, j, path = n, t, []
    while i > 0 and j > 0:
        path.append((i - 1, j - 1))
        i, j = [(i - 1, j - 1), (i - 1, j), (i, j - 1)][trace[i, j]]
    return path[::-1]


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (7, 1), (4, 9), (9, 4), (12, 60)])
def test_monotonic_path_equals_cell_by_cell_dtw(shape):
    rng = np.random.default_rng(sum(shape))
    for cost in (rng.random(shape), rng.integers(0, 3, size=shape).astype(float)):  # integers: many ties
        rows, cols = monotonic_path(cost)
        assert list(zip(rows.tolist(), cols.tolist())) == _reference_path(cost)


def test_word_timestamps_recover_known_spans_despite_a_sink():
    # 3 words, the second of two tokens; frames at 50 Hz.
    spans = [(0, 20), (20, 35), (35, 50), (50, 90)]
    tokens = _tokens(_block_attention(spans, 100), [0, 1, 1, 2], ["a", "bb", "c"])
    ts = word_timestamps(tokens, medfilt_width=1)
    ref = [("a", 0.0, 0.4), ("bb", 0.4, 1.0), ("c", 1.0, 1.8)]
    assert [w for w, _, _ in ts] == ["a", "bb", "c"]
    assert boundary_error(ts[:2], ref[:2]) < 0.05  # the last word may run into the trailing sink
    assert all(ts[i][2] <= ts[i + 1][1] + 1e-9 for i in range(2))


def test_word_timestamps_need_an_alignment(tmp_path):
    tokens = _tokens(np.ones((2, 5)) / 5, [0, 1], ["x", "y"])
    tokens.alignment = None
    with pytest.raises(InputError, match="return_alignment"):
        word_timestamps(tokens)
    with pytest.raises(InputError):
        boundary_error([("x", 0, 1)], [])


def test_plot_alignment_writes_png(tmp_path):
    tokens = _tokens(_block_attention([(0, 10), (10, 30)], 40), [0, 1], ["hi", "there"])
    path = plot_alignment(tokens, tmp_path / "a.png", word_timestamps(tokens))
    assert path.stat().st_size > 1000


def test_aggregator_alignment_is_shifted_by_the_prompt():
    agg = build("aggregator", "cross_attention", {"d_model": 16, "num_layers": 2, "num_heads": 2, "ffn_dim": 32,
                                                  "max_positions": 16, "alignment_heads": [[0, 1], [1, 0]]},
                vocab_size=20, key_dim=16, value_dim=16).eval()
    agg.prefix_ids = torch.tensor([3, 4])  # as a Whisper prompt would set it
    enc = EncoderOutput(keys=torch.randn(1, 12, 16), values=torch.randn(1, 12, 16), lengths=torch.tensor([12]), frame_rate=50.0)
    tokens, lengths, word_ids = torch.tensor([[5, 6, 7]]), torch.tensor([3]), torch.tensor([[0, 1, 1]])
    out = agg(tokens, lengths, word_ids, enc, need_weights=True)
    assert out.attention.shape == out.alignment.shape == (1, 3, 12)
    # alignment row i = attention of the query before token i (the prompt's last for i = 0)
    torch.testing.assert_close(out.alignment[:, 1:], out.attention[:, :-1])
    torch.testing.assert_close(out.alignment.sum(-1), torch.ones(1, 3))
    assert not torch.allclose(out.alignment[:, 0], out.attention[:, 0])
    with pytest.raises(ConfigError, match="alignment_heads"):
        build("aggregator", "cross_attention", {"d_model": 16, "num_layers": 1, "num_heads": 2,
                                                "alignment_heads": [[3, 0]]}, vocab_size=20, key_dim=16, value_dim=16)
