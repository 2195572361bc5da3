"""``downsample`` aggregator: learned frame-rate reduction (LM-SPT's low-rate encoder stage).

LM-SPT (arXiv 2506.16738) tokenizes speech at 25 / 12.5 / 6.25 Hz with an encoder
of "convolutional blocks followed by a Transformer". Here the 50 Hz frames of the
frozen encoder plugin (Whisper) are the input; this plugin learns the rest::

    tap (B, T, D_in) -> LayerNorm -> Linear(D_in -> d) -> n x [Conv1d(k=4, s=2) + GELU]
                     -> + sinusoidal positions -> bidirectional Transformer -> (B, ceil(T / 2^n), d)

so ``stride`` 2 / 4 / 8 turns 50 Hz into 25 / 12.5 / 6.25 Hz. The text inputs of
the aggregator interface are ignored (frame-rate tokens need no transcript).

Padding invariance: every stage zeroes the frames past each utterance's length
and the Transformer masks padded keys, so an utterance gives the same vectors
alone or in a padded batch (the receptive field past the end sees zeros either way).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from taste_toolkit.errors import ConfigError, InputError
from taste_toolkit.interfaces import Aggregator, AggregatorOutput
from taste_toolkit.nn.causal_transformer import TransformerStack, sinusoidal_positions
from taste_toolkit.registry import register
from taste_toolkit.utils import lengths_to_mask

TAPS = ("keys", "values", "both")


@register("aggregator", "downsample")
class DownsampleAggregator(Aggregator):
    """Strided convolutions + Transformer from encoder frames to low-rate frames.

    Arguments
    ---------
    key_dim, value_dim : int
        Feature sizes of the encoder taps (wired from the encoder).
    tap : str
        Input: ``"keys"`` (deep layer: LM-SPT's semantic branch), ``"values"``
        (shallow layer: the acoustic branch) or ``"both"`` (concatenated).
    stride : int
        Downsampling factor, a power of two (one stride-2 conv block per factor 2);
        ``1`` keeps the encoder rate.
    d_model : int
        Width of the convolutions and the Transformer (= ``output_dim``).
    num_layers, num_heads, ffn_dim : int
        Transformer geometry (0 layers = convolutions only).
    dropout : float
        Dropout inside the Transformer.
    max_positions : int
        Size of the sinusoidal position table (output frames).

    Example
    -------
    >>> from taste_toolkit.interfaces import EncoderOutput
    >>> agg = DownsampleAggregator(key_dim=8, value_dim=8, stride=4, d_model=16, num_layers=1,
    ...                            num_heads=2, ffn_dim=32)
    >>> x = torch.randn(2, 50, 8)
    >>> out = agg(None, None, None, EncoderOutput(x, x, torch.tensor([50, 21]), 50.0))
    >>> out.embeddings.shape, out.lengths.tolist(), out.level
    (torch.Size([2, 13, 16]), [13, 6], 'frame')
    """

    output_level = "frame"

    def __init__(
        self,
        key_dim: int,
        value_dim: int,
        tap: str = "keys",
        stride: int = 4,
        d_model: int = 256,
        num_layers: int = 2,
        num_heads: int = 4,
        ffn_dim: int = 1024,
        dropout: float = 0.1,
        max_positions: int = 4096,
    ):
        super().__init__()
        if tap not in TAPS:
            raise ConfigError(f"downsample aggregator tap must be one of {TAPS}, got {tap!r}.")
        if stride < 1 or stride & (stride - 1):
            raise ConfigError(
                f"downsample stride must be a power of two (1, 2, 4, 8: 50 Hz -> 50/25/12.5/6.25 Hz), got {stride}."
            )
        if d_model < 1 or num_layers < 0:
            raise ConfigError(f"downsample needs d_model >= 1 and num_layers >= 0, got {d_model}, {num_layers}.")
        self.key_dim, self.value_dim, self.tap, self.stride = key_dim, value_dim, tap, stride
        in_dim = {"keys": key_dim, "values": value_dim, "both": key_dim + value_dim}[tap]
        # The taps differ in scale (Whisper's shallow blocks are not normalized).
        self.norm = nn.LayerNorm(in_dim)
        self.proj = nn.Linear(in_dim, d_model)
        # k=4, s=2, p=1 halves the length exactly (after padding to an even length).
        self.convs = nn.ModuleList(
            nn.Conv1d(d_model, d_model, kernel_size=4, stride=2, padding=1) for _ in range(int(math.log2(stride)))
        )
        self.register_buffer("positions", sinusoidal_positions(max_positions, d_model), persistent=False)
        self.transformer = TransformerStack(d_model, num_layers, num_heads, ffn_dim, dropout, causal=False)
        self._dim = d_model

    @property
    def output_dim(self):
        return self._dim

    def output_lengths(self, lengths):
        """Output frames for ``lengths (B,)`` input frames: ``ceil(T / stride)``."""
        return torch.div(lengths + self.stride - 1, self.stride, rounding_mode="floor")

    def downsample(self, x, lengths):
        """``x (B, T, D_in)`` at the encoder rate -> ``((B, M, d), lengths (B,))``."""
        lengths = lengths.long()
        mask = lengths_to_mask(lengths, x.shape[1])
        h = self.proj(self.norm(x)) * mask[..., None]
        h = h.transpose(1, 2)  # (B, d, T) for the convolutions
        for conv in self.convs:
            if h.shape[-1] % 2:  # odd length: one zero frame, as if the padding were there
                h = F.pad(h, (0, 1))
            lengths = torch.div(lengths + 1, 2, rounding_mode="floor")
            h = F.gelu(conv(h)) * lengths_to_mask(lengths, h.shape[-1] // 2)[:, None]
        h = h.transpose(1, 2)
        m = h.shape[1]
        if m > self.positions.shape[0]:
            raise InputError(
                f"{m} output frames exceed the downsampler's position table ({self.positions.shape[0]}); "
                "raise max_positions or split the audio."
            )
        valid = lengths_to_mask(lengths, m)
        h, _ = self.transformer(h + self.positions[:m], valid)
        return h * valid[..., None], lengths

    def forward(self, tokens, token_lengths, word_ids, encoder_out, need_weights=False):
        """Downsample the chosen tap of ``encoder_out``; the text arguments are ignored."""
        if encoder_out is None:
            raise InputError("The downsample aggregator needs encoder outputs (it reads audio, not text).")
        taps = {"keys": encoder_out.keys, "values": encoder_out.values}
        x = torch.cat([taps["keys"], taps["values"]], -1) if self.tap == "both" else taps[self.tap]
        emb, lengths = self.downsample(x, encoder_out.lengths.to(x.device))
        return AggregatorOutput(emb, lengths, "frame")

    def frame_rate(self, input_rate):
        """Output frames per second for an encoder at ``input_rate`` Hz."""
        return input_rate / self.stride
