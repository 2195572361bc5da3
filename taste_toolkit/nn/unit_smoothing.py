"""Run-smoothed unit decoding: the best unit sequence under a per-change penalty.

A non-autoregressive decoder (``duration_transformer``) scores every unit
position independently. Taking each position's argmax gives a sequence that
flickers between close units where the decoder is unsure, while real 50 Hz
units come in runs of several frames (a phone lasts 50-150 ms). This module
finds, exactly, the sequence ``u_1 .. u_S`` maximizing

    sum_t log p_t(u_t)  -  penalty * #{t : u_t != u_{t-1}}

(Viterbi over an HMM whose only transition cost is a constant for changing
unit). ``penalty = 0`` is the per-position argmax; a large penalty gives one
unit for the whole utterance. The recursion keeps, per unit, the best score of
a path ending in it; staying costs nothing and switching costs ``penalty`` from
the best path of the previous position, so a step is ``O(V)``, not ``O(V^2)``.
"""

import torch

from taste_toolkit.errors import InputError


def smooth_unit_runs(log_probs, lengths, penalty):
    """Best unit sequence under a switch penalty (see the module docstring).

    Arguments
    ---------
    log_probs : torch.Tensor
        ``(B, S, V)`` per-position log-probabilities (or any scores: logits
        give the same argmax path only at ``penalty = 0``).
    lengths : torch.Tensor
        ``(B,)`` valid positions of each row (``[0, length)``); positions after
        it are ignored and come back as -1.
    penalty : float
        Cost of a unit change, in nats (>= 0).

    Returns
    -------
    torch.Tensor
        ``(B, S)`` long unit ids (-1 after each row's length).

    Example
    -------
    >>> lp = torch.log(torch.tensor([[[0.6, 0.4], [0.4, 0.6], [0.6, 0.4]]]))
    >>> smooth_unit_runs(lp, torch.tensor([3]), 0.0).tolist(), smooth_unit_runs(lp, torch.tensor([3]), 1.0).tolist()
    ([[0, 1, 0]], [[0, 0, 0]])
    """
    if log_probs.dim() != 3:
        raise InputError(f"smooth_unit_runs needs log_probs of shape (B, S, V), got {tuple(log_probs.shape)}.")
    if not penalty >= 0:
        raise InputError(f"smooth_unit_runs needs a switch penalty >= 0 (0 = per-position argmax), got {penalty}.")
    batch, steps, _ = log_probs.shape
    lengths = torch.as_tensor(lengths, device=log_probs.device).reshape(-1)
    column = torch.arange(steps, device=log_probs.device)
    valid = column[None] < lengths[:, None]  # (B, S)
    if steps == 0:
        return torch.zeros(batch, 0, dtype=torch.long, device=log_probs.device)
    scores = log_probs.double()
    score = scores[:, 0].clone()
    stayed = torch.ones(batch, steps, scores.shape[-1], dtype=torch.bool, device=log_probs.device)
    switched_from = torch.zeros(batch, steps, dtype=torch.long, device=log_probs.device)
    for t in range(1, steps):
        best, argbest = score.max(-1)
        switch = (best - penalty)[:, None]
        # padded positions always "stay" and add nothing, so the end score is the row's own
        stay = (score >= switch) | ~valid[:, t, None]
        score = torch.where(stay, score, switch) + torch.where(valid[:, t, None], scores[:, t], 0.0)
        stayed[:, t], switched_from[:, t] = stay, argbest
    units = torch.empty(batch, steps, dtype=torch.long, device=log_probs.device)
    current = score.argmax(-1)
    rows = torch.arange(batch, device=log_probs.device)
    for t in range(steps - 1, -1, -1):
        units[:, t] = current
        if t:
            current = torch.where(stayed[rows, t, current], current, switched_from[:, t])
    return torch.where(valid, units, torch.full_like(units, -1))


__all__ = ["smooth_unit_runs"]
