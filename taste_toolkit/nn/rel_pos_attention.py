"""Multi-head self-attention with relative positions (Transformer-XL / ESPnet style).

The score of query ``i`` and key ``j`` is::

    ((q_i + u) . k_j + (q_i + v) . P(i - j)) / sqrt(D_h)

with learned per-head biases ``u`` (``pos_bias_u``) and ``v`` (``pos_bias_v``), and
``P(r) = linear_pos(pe(r))`` a projected sinusoid of the signed distance ``r``.
``pe(r)`` interleaves ``sin(r w_k)`` and ``cos(r w_k)``, ``w_k = 10000^(-2k/D)``:
the table ESPnet's "new" relative encoding (``rel_pos_espnet``, ESPnet PR 2816,
used by CosyVoice and TASTE) builds for ``r = T-1 .. -(T-1)`` and indexes with its
``rel_shift`` trick. Here the distance is indexed directly, so the same code serves
full sequences, chunk masks, left padding and a KV cache: only column
differences matter, never absolute positions.

Parameter names (``linear_q/k/v/out``, ``linear_pos``, ``pos_bias_u/v``) follow
ESPnet/CosyVoice, so their state dicts load without renaming.
"""

import math

import torch
from torch import nn

from taste_toolkit.errors import ConfigError


def relative_sinusoids(distances, dim):
    """ESPnet relative position table for signed distances.

    Arguments
    ---------
    distances : torch.Tensor
        ``(R,)`` integer distances ``i - j`` (query minus key column).
    dim : int
        Even feature size ``D``.

    Returns
    -------
    torch.Tensor
        ``(R, D)`` float32: ``[sin(r w_0), cos(r w_0), sin(r w_1), ...]``,
        computed as ESPnet does (float32 products), so tables match bit for bit.
    """
    if dim % 2:
        raise ConfigError(f"Relative sinusoidal positions need an even width, got {dim}.")
    position = distances.to(torch.float32)[:, None]
    freq = torch.exp(
        torch.arange(0, dim, 2, dtype=torch.float32, device=distances.device) * -(math.log(10000.0) / dim)
    )
    table = torch.empty(distances.shape[0], dim, dtype=torch.float32, device=distances.device)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq)
    return table


def relative_table(query_columns, key_columns, allowed, dim):
    """Sinusoids of the distances a mask can use, and where each pair reads them.

    Arguments
    ---------
    query_columns : torch.Tensor
        ``(T_q,)`` long column of each query.
    key_columns : torch.Tensor
        ``(T_k,)`` long column of each key.
    allowed : torch.Tensor
        ``(B, T_q, T_k)`` bool attention mask; only distances it allows get rows
        (causal masks need ``T_k`` rows, not ``2 T_k - 1``).
    dim : int
        Model width.

    Returns
    -------
    rel_index : torch.Tensor
        ``(T_q, T_k)`` long row of ``table`` for each pair (clamped where masked).
    table : torch.Tensor
        ``(R, dim)`` float32 :func:`relative_sinusoids` of the distances used.
    """
    rel_index, low, high = relative_distances(query_columns, key_columns, allowed)
    return rel_index, relative_sinusoids(torch.arange(low, high + 1, device=rel_index.device), dim)


def relative_distances(query_columns, key_columns, allowed):
    """Range ``[low, high]`` of the distances a mask allows and each pair's offset in it.

    Returns
    -------
    rel_index : torch.Tensor
        ``(T_q, T_k)`` long ``clamp(i - j, low, high) - low``.
    low, high : int
        Smallest and largest allowed distance (0, 0 if nothing is allowed).
    """
    distance = query_columns[:, None] - key_columns[None, :]
    reachable = allowed.any(0)
    if bool(reachable.any()):
        low, high = int(distance[reachable].min()), int(distance[reachable].max())
    else:
        low = high = 0
    return distance.clamp(low, high) - low, low, high


class RelPositionMultiHeadAttention(nn.Module):
    """Self-attention with relative positions (``rel_selfattn`` of ESPnet/CosyVoice).

    Arguments
    ---------
    d_model : int
        Model width ``D`` (divisible by ``num_heads``, even).
    num_heads : int
        Heads ``H``; each of size ``D_h = D / H``.
    dropout : float
        Dropout on the attention probabilities (training only).
    key_bias : bool
        Bias on ``linear_k`` (True in CosyVoice).
    """

    def __init__(self, d_model, num_heads, dropout=0.0, key_bias=True):
        super().__init__()
        if num_heads < 1 or d_model % num_heads:
            raise ConfigError(
                f"d_model={d_model} is not divisible by num_heads={num_heads}; "
                "choose a number of heads that divides the model width."
            )
        if d_model % 2:
            raise ConfigError(f"Relative-position attention needs an even d_model, got {d_model}.")
        self.d_model = d_model
        self.h = num_heads
        self.d_k = d_model // num_heads
        self.linear_q = nn.Linear(d_model, d_model)
        self.linear_k = nn.Linear(d_model, d_model, bias=key_bias)
        self.linear_v = nn.Linear(d_model, d_model)
        self.linear_out = nn.Linear(d_model, d_model)
        self.linear_pos = nn.Linear(d_model, d_model, bias=False)
        self.pos_bias_u = nn.Parameter(torch.empty(num_heads, self.d_k))
        self.pos_bias_v = nn.Parameter(torch.empty(num_heads, self.d_k))
        nn.init.xavier_uniform_(self.pos_bias_u)
        nn.init.xavier_uniform_(self.pos_bias_v)
        self.dropout = nn.Dropout(dropout)

    def _heads(self, x):
        batch, time, _ = x.shape
        return x.view(batch, time, self.h, self.d_k).transpose(1, 2)  # (B, H, T, D_h)

    def forward(self, x, allowed, rel_index, table, past=None, projected=None):
        """Attend.

        Arguments
        ---------
        x : torch.Tensor
            ``(B, T_q, D)`` new time steps (queries, and keys/values appended to ``past``).
        allowed : torch.Tensor
            ``(B, T_q, T_k)`` bool, True where a query may attend a key
            (``T_k = T_past + T_q``). Fully masked rows give zeros.
        rel_index, table : torch.Tensor
            ``(T_q, T_k)`` row of ``table (R, D)`` holding ``pe(i - j)`` for each
            query/key pair (see :func:`relative_table`).
        past : tuple of torch.Tensor, optional
            Cached ``(keys, values)``, each ``(B, H, T_past, D_h)``.
        projected : torch.Tensor, optional
            ``(R, D)`` = ``linear_pos(table)`` when already computed (decoding cache);
            ``table`` is then not read.

        Returns
        -------
        torch.Tensor
            ``(B, T_q, D)``.
        tuple of torch.Tensor
            ``(keys, values)`` including the new steps, ``(B, H, T_k, D_h)``.
        """
        q = self._heads(self.linear_q(x))
        k = self._heads(self.linear_k(x))
        v = self._heads(self.linear_v(x))
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        if projected is None:
            projected = self.linear_pos(table.to(x.dtype))
        p = projected.view(-1, self.h, self.d_k).transpose(0, 1)  # (H, R, D_h)
        ac = torch.matmul(q + self.pos_bias_u[:, None], k.transpose(-2, -1))  # (B, H, T_q, T_k)
        bd = torch.matmul(q + self.pos_bias_v[:, None], p.transpose(-2, -1))  # (B, H, T_q, R)
        bd = bd.gather(-1, rel_index.expand(*bd.shape[:2], -1, -1))
        scores = (ac + bd) / math.sqrt(self.d_k)
        blocked = ~allowed[:, None]
        scores = scores.masked_fill(blocked, -float("inf"))
        attn = torch.softmax(scores, dim=-1).masked_fill(blocked, 0.0)
        out = torch.matmul(self.dropout(attn), v)
        out = out.transpose(1, 2).reshape(x.shape[0], x.shape[1], self.d_model)
        return self.linear_out(out), (k, v)
