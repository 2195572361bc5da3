"""Pre-LN Transformer blocks on ``scaled_dot_product_attention``, with a KV cache.

One :class:`TransformerStack` serves as a bidirectional encoder (``causal=False``)
or as an autoregressive core (``causal=True``). Sequences are described by a
boolean ``valid (B, T)`` mask, so right padding (training) and left padding
(batched generation with per-sample prefix lengths) use the same code.

Example
-------
>>> stack = TransformerStack(d_model=16, num_layers=2, num_heads=2, ffn_dim=32, dropout=0.0)
>>> x = torch.randn(2, 5, 16)
>>> valid = torch.ones(2, 5, dtype=torch.bool)
>>> y, cache = stack(x, valid, use_cache=True)
>>> step, cache = stack(torch.randn(2, 1, 16), torch.ones(2, 1, dtype=torch.bool), cache=cache)
>>> step.shape, cache.length
(torch.Size([2, 1, 16]), 6)
"""

import math
from dataclasses import dataclass
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from taste_toolkit.errors import ConfigError


def sinusoidal_positions(num_positions, dim):
    """Fixed sinusoidal position table ``(num_positions, dim)`` (Vaswani et al.)."""
    position = torch.arange(num_positions, dtype=torch.float32)[:, None]
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    table = torch.zeros(num_positions, dim)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq)[:, : dim // 2]
    return table


@dataclass
class KVCache:
    """Past keys/values of every layer, batched.

    Attributes
    ----------
    keys, values : list of torch.Tensor
        One ``(B, H, T, D_h)`` tensor per layer.
    key_valid : torch.Tensor
        ``(B, T)`` bool; False at (left-)padding, which no query may attend.
    """

    keys: List[torch.Tensor]
    values: List[torch.Tensor]
    key_valid: torch.Tensor

    @property
    def length(self):
        """Number of cached time steps ``T`` (padding included)."""
        return self.key_valid.shape[1]

    @property
    def capacity(self):
        """Steps the key/value tensors can hold.

        Equal to :attr:`length` for an ordinary cache (a new step concatenates);
        larger after :meth:`reserve`, which preallocates ``(B, H, capacity, D_h)``
        buffers whose first ``T`` steps are filled (a new step writes in place).
        """
        return self.keys[0].shape[2] if self.keys else self.length

    def reserve(self, capacity):
        """Room for ``capacity`` steps, so later steps are written in place, not concatenated.

        Concatenating copies the whole cache at every generated step (the main cost
        of a batched step once the model is small); inference only (in-place writes).
        """
        if capacity <= max(self.capacity, self.length):
            return self
        n = self.length

        def grow(t):
            buffer = t.new_empty(t.shape[0], t.shape[1], capacity, t.shape[3])
            buffer[:, :, :n] = t[:, :, :n]
            return buffer

        return KVCache([grow(k) for k in self.keys], [grow(v) for v in self.values], self.key_valid)

    def select(self, rows):
        """The cache of batch ``rows`` only (index or bool mask): finished rows leave a batched generation."""
        return KVCache([k[rows] for k in self.keys], [v[rows] for v in self.values], self.key_valid[rows])


def attention_mask(key_valid, num_queries, past_length=0, causal=True):
    """Boolean mask ``(B, 1, T_q, T_k)``, True where a query may attend a key.

    Queries are the last ``num_queries`` of the ``T_k`` keys (the first
    ``past_length`` come from a cache). Every query may attend itself, so a row
    is never fully masked: padded queries then give finite (ignored) outputs
    instead of NaNs, and valid queries never see padded keys.
    """
    num_keys = key_valid.shape[1]
    query_index = past_length + torch.arange(num_queries, device=key_valid.device)[:, None]
    key_index = torch.arange(num_keys, device=key_valid.device)[None, :]
    allowed = key_valid[:, None, :].expand(-1, num_queries, -1)
    if causal:
        allowed = allowed & (key_index <= query_index)
    allowed = allowed | (key_index == query_index)
    return allowed[:, None]


class TransformerLayer(nn.Module):
    """Pre-LN self-attention + feed-forward block.

    Arguments
    ---------
    d_model : int
        Model width.
    num_heads : int
        Attention heads (must divide ``d_model``).
    ffn_dim : int
        Hidden size of the feed-forward network.
    dropout : float
        Dropout on attention weights and residual branches.
    """

    def __init__(self, d_model, num_heads, ffn_dim, dropout=0.1):
        super().__init__()
        if d_model % num_heads:
            raise ConfigError(
                f"d_model={d_model} is not divisible by num_heads={num_heads}; "
                "choose a number of heads that divides the model width."
            )
        self.num_heads = num_heads
        self.dropout_p = dropout
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(
            nn.Linear(d_model, ffn_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_dim, d_model)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, mask, past=None, filled=None):
        """Apply the block.

        Arguments
        ---------
        x : torch.Tensor
            ``(B, T, D)`` new time steps.
        mask : torch.Tensor
            ``(B, 1, T, T_past + T)`` bool attention mask.
        past : tuple of torch.Tensor, optional
            Cached ``(keys, values)``, each ``(B, H, T_past, D_h)``; with ``filled``,
            preallocated buffers ``(B, H, capacity, D_h)`` whose first ``filled``
            (= ``T_past``) steps hold the past.

        Returns
        -------
        torch.Tensor
            ``(B, T, D)``.
        tuple of torch.Tensor
            Keys and values including the new steps, ``(B, H, T_past + T, D_h)``
            (with ``filled``: the same buffers, the new steps written in place).
        """
        batch, time, dim = x.shape
        qkv = self.qkv(self.norm1(x)).view(batch, time, 3, self.num_heads, dim // self.num_heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4)
        cached = None
        if past is not None and filled is not None:
            end = filled + time
            past[0][:, :, filled:end] = key
            past[1][:, :, filled:end] = value
            cached = past
            key, value = past[0][:, :, :end], past[1][:, :, :end]
        elif past is not None:
            key = torch.cat([past[0], key], dim=2)
            value = torch.cat([past[1], value], dim=2)
        attended = F.scaled_dot_product_attention(
            query, key, value, attn_mask=mask, dropout_p=self.dropout_p if self.training else 0.0
        )
        attended = attended.transpose(1, 2).reshape(batch, time, dim)
        x = x + self.dropout(self.out(attended))
        x = x + self.dropout(self.ffn(self.norm2(x)))
        return x, cached or (key, value)


class TransformerStack(nn.Module):
    """``num_layers`` pre-LN blocks and a final LayerNorm (identity when 0 layers).

    Arguments
    ---------
    d_model, num_layers, num_heads, ffn_dim : int
        Sizes.
    dropout : float
        Dropout probability.
    causal : bool
        Causal (autoregressive) or bidirectional attention.
    """

    def __init__(self, d_model, num_layers, num_heads, ffn_dim, dropout=0.1, causal=True):
        super().__init__()
        self.causal = causal
        self.layers = nn.ModuleList(
            TransformerLayer(d_model, num_heads, ffn_dim, dropout) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model) if num_layers else nn.Identity()

    def forward(self, x, valid, cache: Optional[KVCache] = None, use_cache=False):
        """Encode ``x (B, T, D)`` whose valid steps are ``valid (B, T)`` (bool).

        With ``cache``, ``x`` continues the cached sequence (causal stacks) and
        the returned cache includes it; with ``use_cache`` a new cache is
        returned. Otherwise the second output is None.
        """
        past_length = 0 if cache is None else cache.length
        preallocated = cache is not None and cache.capacity > past_length
        if preallocated and past_length + x.shape[1] > cache.capacity:
            cache = cache.reserve(2 * (past_length + x.shape[1]))
        filled = past_length if preallocated else None
        key_valid = valid if cache is None else torch.cat([cache.key_valid, valid], dim=1)
        mask = attention_mask(key_valid, x.shape[1], past_length, self.causal)
        keys, values = [], []
        for index, layer in enumerate(self.layers):
            past = None if cache is None else (cache.keys[index], cache.values[index])
            x, (key, value) = layer(x, mask, past, filled)
            keys.append(key)
            values.append(value)
        new_cache = KVCache(keys, values, key_valid) if (use_cache or cache is not None) else None
        return self.norm(x), new_cache
