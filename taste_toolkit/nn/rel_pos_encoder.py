"""Conformer / Transformer encoders with relative positions (the CosyVoice-300M LM's stacks).

A :class:`RelPosEncoder` is::

    embed:   Linear -> LayerNorm -> Dropout (-> ReLU for ``linear_legacy``), then x sqrt(D)
    blocks:  num_blocks x [x + MHA_rel(LN(x)); x + FFN(LN(x))]      (pre-LN)
    after_norm (pre-LN only)

the math of ESPnet/WeNet/CosyVoice's ``ConformerEncoder`` without macaron FFN or
convolution module, and of their ``TransformerEncoder``, both with
``pos_enc_layer_type=rel_pos_espnet`` and ``selfattention_layer_type=rel_selfattn``.
They differ only in names (``norm_mha``/``norm_ff`` vs ``norm1``/``norm2``) and
the FFN activation (SiLU vs ReLU). Sub-module names follow CosyVoice, so a
CosyVoice or TASTE state dict loads without renaming.

Attention masks follow ``static_chunk_size``: 0 = full context, ``c > 0`` = each
position sees every key up to the end of its chunk of ``c`` (1 = causal), and
padded keys are never seen. A KV cache makes step-by-step decoding with
``static_chunk_size=1`` give what the whole sequence gives.
"""

import math
from dataclasses import dataclass
from typing import List, Optional

import torch
from torch import nn

from taste_toolkit.errors import ConfigError
from taste_toolkit.nn.causal_transformer import KVCache
from taste_toolkit.nn.rel_pos_attention import (
    RelPositionMultiHeadAttention,
    relative_distances,
    relative_sinusoids,
)

@dataclass
class RelPosCache(KVCache):
    """:class:`KVCache` plus each layer's projected position rows (``linear_pos(pe(r))``).

    Attributes
    ----------
    pos_low : int
        Distance of row 0 of ``pos_proj``.
    pos_proj : list of torch.Tensor, optional
        One ``(R, D)`` tensor per layer for distances ``pos_low .. pos_low + R - 1``;
        decoding step by step then projects only the new distance.
    """

    pos_low: int = 0
    pos_proj: Optional[List[torch.Tensor]] = None


ACTIVATIONS = {"relu": nn.ReLU, "swish": nn.SiLU, "gelu": nn.GELU, "tanh": nn.Tanh}
INPUT_LAYERS = ("linear", "linear_legacy")
LAYER_TYPES = ("conformer", "transformer")


class PositionwiseFeedForward(nn.Module):
    """``w_2(dropout(act(w_1(x))))``, ``(B, T, D) -> (B, T, D)``."""

    def __init__(self, d_model, hidden, dropout=0.0, activation="relu"):
        super().__init__()
        self.w_1 = nn.Linear(d_model, hidden)
        self.activation = ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout)
        self.w_2 = nn.Linear(hidden, d_model)

    def forward(self, x):
        return self.w_2(self.dropout(self.activation(self.w_1(x))))


class RelPosEncoderLayer(nn.Module):
    """Self-attention + feed-forward block, pre- or post-LayerNorm.

    Arguments
    ---------
    d_model, num_heads, ffn_dim : int
        Sizes.
    dropout : float
        Dropout on the residual branches and inside the FFN.
    attention_dropout : float
        Dropout on attention probabilities.
    normalize_before : bool
        Pre-LN (True, CosyVoice) or post-LN.
    activation : str
        FFN activation, one of :data:`ACTIVATIONS`.
    """

    #: Names of the LayerNorms before attention and before the FFN.
    norm_names = ("norm_mha", "norm_ff")

    def __init__(self, d_model, num_heads, ffn_dim, dropout=0.1, attention_dropout=0.0,
                 normalize_before=True, activation="swish"):
        super().__init__()
        self.self_attn = RelPositionMultiHeadAttention(d_model, num_heads, attention_dropout)
        self.feed_forward = PositionwiseFeedForward(d_model, ffn_dim, dropout, activation)
        for name in self.norm_names:
            setattr(self, name, nn.LayerNorm(d_model, eps=1e-5))
        self.dropout = nn.Dropout(dropout)
        self.normalize_before = normalize_before

    def forward(self, x, allowed, rel_index, table, past=None, projected=None):
        """``x (B, T, D)`` -> ``(B, T, D)`` and the ``(keys, values)`` of this layer.

        ``allowed``, ``rel_index``, ``table``, ``past`` and ``projected`` are those of
        :meth:`RelPositionMultiHeadAttention.forward`.
        """
        norm_att, norm_ff = (getattr(self, name) for name in self.norm_names)
        residual = x
        if self.normalize_before:
            x = norm_att(x)
        attended, kv = self.self_attn(x, allowed, rel_index, table, past, projected)
        x = residual + self.dropout(attended)
        if not self.normalize_before:
            x = norm_att(x)
        residual = x
        if self.normalize_before:
            x = norm_ff(x)
        x = residual + self.dropout(self.feed_forward(x))
        if not self.normalize_before:
            x = norm_ff(x)
        return x, kv


class TransformerEncoderLayer(RelPosEncoderLayer):
    """:class:`RelPosEncoderLayer` with CosyVoice's Transformer names (``norm1``, ``norm2``)."""

    norm_names = ("norm1", "norm2")


class LinearInput(nn.Module):
    """``linear`` / ``linear_legacy`` input layer: ``out = [Linear, LayerNorm, Dropout(, ReLU)]``."""

    def __init__(self, input_size, output_size, dropout=0.0, legacy=False):
        super().__init__()
        layers = [nn.Linear(input_size, output_size), nn.LayerNorm(output_size, eps=1e-5), nn.Dropout(dropout)]
        if legacy:
            layers.append(nn.ReLU())
        self.out = nn.Sequential(*layers)

    def forward(self, x):
        return self.out(x)


class RelPosEncoder(nn.Module):
    """Stack of relative-position blocks over ``(B, T, input_size)`` inputs.

    Arguments
    ---------
    input_size, output_size : int
        Input features and model width ``D``.
    num_blocks, num_heads, ffn_dim : int
        Blocks, heads and FFN hidden size.
    dropout, positional_dropout, attention_dropout : float
        ESPnet's ``dropout_rate``, ``positional_dropout_rate`` and ``attention_dropout_rate``.
    input_layer : str
        ``"linear"`` or ``"linear_legacy"`` (adds a ReLU).
    normalize_before : bool
        Pre-LN blocks and a final ``after_norm``.
    static_chunk_size : int
        0 = full attention, ``c`` = chunks of ``c`` steps (1 = causal).
    layer_type : str
        ``"conformer"`` (SiLU FFN, ``norm_mha``/``norm_ff``) or ``"transformer"``
        (ReLU FFN, ``norm1``/``norm2``).
    activation : str, optional
        Overrides the FFN activation of ``layer_type``.
    """

    def __init__(self, input_size, output_size, num_blocks, num_heads, ffn_dim, dropout=0.1,
                 positional_dropout=0.1, attention_dropout=0.0, input_layer="linear",
                 normalize_before=True, static_chunk_size=0, layer_type="conformer", activation=None):
        super().__init__()
        if input_layer not in INPUT_LAYERS:
            raise ConfigError(f"input_layer must be one of {INPUT_LAYERS}, got {input_layer!r}.")
        if layer_type not in LAYER_TYPES:
            raise ConfigError(f"layer_type must be one of {LAYER_TYPES}, got {layer_type!r}.")
        activation = activation or ("swish" if layer_type == "conformer" else "relu")
        if activation not in ACTIVATIONS:
            raise ConfigError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}.")
        if static_chunk_size < 0 or num_blocks < 0:
            raise ConfigError("static_chunk_size and num_blocks must be >= 0.")
        self.output_size = output_size
        self.static_chunk_size = static_chunk_size
        self.normalize_before = normalize_before
        self.embed = LinearInput(input_size, output_size, dropout, legacy=input_layer == "linear_legacy")
        self.xscale = math.sqrt(output_size)
        self.pos_dropout = nn.Dropout(positional_dropout)
        layer = ConformerEncoderLayer if layer_type == "conformer" else TransformerEncoderLayer
        self.encoders = nn.ModuleList(
            layer(output_size, num_heads, ffn_dim, dropout, attention_dropout, normalize_before, activation)
            for _ in range(num_blocks)
        )
        self.after_norm = nn.LayerNorm(output_size, eps=1e-5)

    def attention_mask(self, key_valid, query_columns, key_columns):
        """``(B, T_q, T_k)`` bool: key not padded and within the query's chunk."""
        allowed = key_valid[:, None, :].expand(-1, query_columns.shape[0], -1)
        if self.static_chunk_size > 0:
            chunk_end = (torch.div(query_columns, self.static_chunk_size, rounding_mode="floor") + 1)
            allowed = allowed & (key_columns[None, :] < (chunk_end * self.static_chunk_size)[:, None])
        return allowed

    def forward(self, xs, valid, cache=None, use_cache=False):
        """Encode.

        Arguments
        ---------
        xs : torch.Tensor
            ``(B, T, input_size)``.
        valid : torch.Tensor
            ``(B, T)`` bool, False at padding (right padding, or left padding in
            batched decoding: only column differences matter).
        cache : RelPosCache, optional
            Keys/values of earlier steps; ``xs`` continues them.
        use_cache : bool
            Return a cache even when none was given.

        Returns
        -------
        torch.Tensor
            ``(B, T, output_size)`` (padded positions hold finite, meaningless values).
        RelPosCache or None
            Cache including ``xs`` (``cache`` given or ``use_cache``), else None.
        """
        past = 0 if cache is None else cache.length
        key_valid = valid if cache is None else torch.cat([cache.key_valid, valid], dim=1)
        key_columns = torch.arange(key_valid.shape[1], device=xs.device)
        query_columns = key_columns[past:]
        allowed = self.attention_mask(key_valid, query_columns, key_columns)
        rel_index, low, high = relative_distances(query_columns, key_columns, allowed)
        projected, pos_low = self._positions(cache, low, high, xs.dtype)
        rel_index = rel_index + (low - pos_low)
        x = self.pos_dropout(self.embed(xs) * self.xscale)
        keys, values = [], []
        for index, layer in enumerate(self.encoders):
            layer_past = None if cache is None else (cache.keys[index], cache.values[index])
            x, (key, value) = layer(x, allowed, rel_index, None, layer_past, projected[index])
            keys.append(key)
            values.append(value)
        if self.normalize_before:
            x = self.after_norm(x)
        if not (use_cache or cache is not None):
            return x, None
        reusable = not (self.training and self.pos_dropout.p > 0)
        return x, RelPosCache(keys, values, key_valid, pos_low, projected if reusable else None)

    def _positions(self, cache, low, high, dtype):
        """Per-layer ``linear_pos(pe(r))`` for ``r`` in ``[low, high]`` (or a wider cached range).

        Returns the list of ``(R, D)`` tensors and the distance of their row 0.
        """
        cached = getattr(cache, "pos_proj", None)
        if cached is not None and low >= cache.pos_low:
            have = cache.pos_low + cached[0].shape[0] - 1 if cached else high
            if high <= have:
                return cached, cache.pos_low
            extra = relative_sinusoids(torch.arange(have + 1, high + 1, device=cached[0].device), self.output_size)
            return [torch.cat([old, layer.self_attn.linear_pos(extra.to(dtype))])
                    for old, layer in zip(cached, self.encoders)], cache.pos_low
        device = self.after_norm.weight.device
        table = self.pos_dropout(relative_sinusoids(torch.arange(low, high + 1, device=device), self.output_size))
        return [layer.self_attn.linear_pos(table.to(dtype)) for layer in self.encoders], low


class ConformerEncoderLayer(RelPosEncoderLayer):
    """:class:`RelPosEncoderLayer` with CosyVoice's Conformer names (``norm_mha``, ``norm_ff``)."""

    norm_names = ("norm_mha", "norm_ff")
