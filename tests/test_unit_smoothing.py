"""Run-smoothed unit decoding (taste_toolkit.nn.unit_smoothing)."""

import itertools

import pytest
import torch

from taste_toolkit.errors import InputError
from taste_toolkit.nn.unit_smoothing import smooth_unit_runs


def path_score(log_probs, path, penalty):
    changes = sum(int(a != b) for a, b in zip(path, path[1:]))
    return sum(float(log_probs[t, u]) for t, u in enumerate(path)) - penalty * changes


@pytest.mark.parametrize("penalty", [0.0, 0.3, 1.0, 2.5])
def test_finds_the_best_path_by_brute_force(penalty):
    g = torch.Generator().manual_seed(int(penalty * 10))
    for _ in range(5):
        lp = torch.log_softmax(torch.randn(5, 3, generator=g) * 2, -1)
        best = max(itertools.product(range(3), repeat=5), key=lambda p: path_score(lp, p, penalty))
        got = smooth_unit_runs(lp[None], torch.tensor([5]), penalty)[0].tolist()
        assert path_score(lp, got, penalty) == pytest.approx(path_score(lp, best, penalty), abs=1e-9)


def test_zero_penalty_is_argmax_and_a_huge_one_gives_one_run():
    lp = torch.log_softmax(torch.randn(2, 30, 8, generator=torch.Generator().manual_seed(0)), -1)
    lengths = torch.tensor([30, 30])
    assert torch.equal(smooth_unit_runs(lp, lengths, 0.0), lp.argmax(-1))
    one = smooth_unit_runs(lp, lengths, 1e6)
    assert torch.equal(one, lp.sum(1).argmax(-1)[:, None].expand(-1, 30))
    flicker = lambda u: int((u[:, 1:] != u[:, :-1]).sum())  # noqa: E731
    assert flicker(smooth_unit_runs(lp, lengths, 1.0)) < flicker(lp.argmax(-1))


def test_padding_and_batch_invariance():
    g = torch.Generator().manual_seed(1)
    a, b = torch.log_softmax(torch.randn(12, 5, generator=g), -1), torch.log_softmax(torch.randn(7, 5, generator=g), -1)
    padded = torch.zeros(2, 12, 5)
    padded[0], padded[1, :7] = a, b
    padded[1, 7:] = 100.0  # junk beyond the length must not matter
    batch = smooth_unit_runs(padded, torch.tensor([12, 7]), 0.7)
    assert torch.equal(batch[0], smooth_unit_runs(a[None], torch.tensor([12]), 0.7)[0])
    assert torch.equal(batch[1, :7], smooth_unit_runs(b[None], torch.tensor([7]), 0.7)[0])
    assert batch[1, 7:].tolist() == [-1] * 5
    assert smooth_unit_runs(torch.zeros(1, 0, 5), torch.tensor([0]), 1.0).shape == (1, 0)


def test_bad_input_says_what_to_do():
    with pytest.raises(InputError, match=">= 0"):
        smooth_unit_runs(torch.zeros(1, 3, 2), torch.tensor([3]), -1.0)
    with pytest.raises(InputError, match=r"\(B, S, V\)"):
        smooth_unit_runs(torch.zeros(3, 2), torch.tensor([3]), 1.0)
