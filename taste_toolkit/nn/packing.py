"""Packing of right-padded per-utterance pieces into one right-padded sequence."""

import torch


def pack_rows(parts, total):
    """Concatenate the valid part of each piece per utterance, right-padded with zeros.

    Arguments
    ---------
    parts : list of (torch.Tensor, torch.Tensor)
        ``(x (B, T_i, D), lengths (B,))`` in order; the first ``lengths[b]`` steps
        of row ``b`` are kept.
    total : torch.Tensor
        ``(B,)`` sum of the lengths.

    Returns
    -------
    torch.Tensor
        ``(B, max(total), D)``; differentiable (out-of-place ``index_put``).

    Example
    -------
    >>> a, b = torch.ones(2, 3, 1), 2 * torch.ones(2, 2, 1)
    >>> la, lb = torch.tensor([1, 3]), torch.tensor([2, 1])
    >>> pack_rows([(a, la), (b, lb)], la + lb)[..., 0].tolist()
    [[1.0, 2.0, 2.0, 0.0], [1.0, 1.0, 1.0, 2.0]]
    """
    first = parts[0][0]
    out = first.new_zeros(first.shape[0], int(total.max()), first.shape[-1])
    offset = torch.zeros_like(total)
    rows = torch.arange(first.shape[0], device=first.device)[:, None]
    for x, lengths in parts:
        steps = torch.arange(x.shape[1], device=x.device)[None]
        keep = steps < lengths[:, None]
        out = out.index_put((rows.expand_as(keep)[keep], (offset[:, None] + steps)[keep]), x[keep])
        offset = offset + lengths
    return out
