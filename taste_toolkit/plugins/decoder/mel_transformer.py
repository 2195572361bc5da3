"""``mel_transformer`` decoder: frame-rate speech tokens -> log-mel frames (non-autoregressive).

LM-SPT's decoders map quantized token vectors back to speech. At toolkit scale the
target is the log-mel that the frozen Whisper encoder itself consumes (80 bins,
100 Hz, Whisper's ``(log10 + 4) / 4`` scaling): it is differentiable end to end, so
the resynthesis-distillation loss can run the frozen Whisper encoder on the
prediction without a waveform in the loop, and a mel vocoder
(``whisper_mel_griffin_lim``) renders it as audio::

    tokens (B, M, D) -> Linear -> + positions -> Transformer (token rate)
                     -> Linear(d -> U * c) -> reshape (B, M * U, c)        [U = frames_per_token]
                     -> residual Conv1d blocks (100 Hz) -> Linear(c -> n_mels)

It implements the ``decoder`` contract with continuous targets: the ``units``
argument of :meth:`forward` holds target log-mels ``(B, F, n_mels)`` and
``num_units`` is 0; :meth:`generate` returns frames instead of unit ids.
"""

import torch
import torch.nn.functional as F
from torch import nn

from taste_toolkit.errors import ConfigError, InputError
from taste_toolkit.interfaces import DecoderOutput, UnitDecoder
from taste_toolkit.nn.causal_transformer import TransformerStack, sinusoidal_positions
from taste_toolkit.registry import register
from taste_toolkit.utils import lengths_to_mask


@register("decoder", "mel_transformer")
class MelTransformerDecoder(UnitDecoder):
    """Token vectors at ``R`` Hz -> log-mel frames at ``R * frames_per_token`` Hz.

    Arguments
    ---------
    speech_dim : int
        Size of the token vectors (wired from the quantizer / downsampler).
    n_mels : int
        Mel bins of the target (80 for Whisper tiny..medium, 128 for large-v3).
    frames_per_token : int
        Output frames per token (100 Hz / token rate: 4, 8, 16 for 25, 12.5, 6.25 Hz).
    d_model, num_layers, num_heads, ffn_dim : int
        Token-rate Transformer (0 layers = linear only).
    conv_channels, conv_layers, kernel_size : int
        Frame-rate residual convolutions that smooth the upsampled frames.
    dropout : float
        Dropout in the Transformer.
    loss : str
        ``"l1"`` or ``"l1_l2"`` (L1 + MSE) over valid frames.
    max_positions : int
        Size of the sinusoidal position table (tokens).

    Example
    -------
    >>> dec = MelTransformerDecoder(speech_dim=16, n_mels=8, frames_per_token=4, d_model=16,
    ...                             num_layers=1, num_heads=2, ffn_dim=32, conv_channels=8)
    >>> mels, lengths = dec.generate(None, None, torch.randn(2, 5, 16), torch.tensor([5, 3]))
    >>> mels.shape, lengths.tolist()
    (torch.Size([2, 20, 8]), [20, 12])
    """

    def __init__(
        self,
        speech_dim: int,
        n_mels: int = 80,
        frames_per_token: int = 8,
        d_model: int = 256,
        num_layers: int = 2,
        num_heads: int = 4,
        ffn_dim: int = 1024,
        conv_channels: int = 128,
        conv_layers: int = 2,
        kernel_size: int = 5,
        dropout: float = 0.1,
        loss: str = "l1",
        max_positions: int = 4096,
    ):
        super().__init__()
        for name, value in (("speech_dim", speech_dim), ("n_mels", n_mels), ("frames_per_token", frames_per_token),
                            ("d_model", d_model), ("conv_channels", conv_channels)):
            if value < 1:
                raise ConfigError(f"mel_transformer option {name} must be >= 1, got {value}.")
        if kernel_size % 2 == 0:
            raise ConfigError(f"mel_transformer kernel_size must be odd (centred convolutions), got {kernel_size}.")
        if loss not in ("l1", "l1_l2"):
            raise ConfigError(f"mel_transformer loss must be 'l1' or 'l1_l2', got {loss!r}.")
        self._speech_dim, self.n_mels, self.frames_per_token = speech_dim, n_mels, frames_per_token
        self.loss_type = loss
        self.inp = nn.Linear(speech_dim, d_model)
        self.register_buffer("positions", sinusoidal_positions(max_positions, d_model), persistent=False)
        self.transformer = TransformerStack(d_model, num_layers, num_heads, ffn_dim, dropout, causal=False)
        self.upsample = nn.Linear(d_model, frames_per_token * conv_channels)
        self.convs = nn.ModuleList(
            nn.Conv1d(conv_channels, conv_channels, kernel_size, padding=kernel_size // 2) for _ in range(conv_layers)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(conv_channels) for _ in range(conv_layers))
        self.out = nn.Linear(conv_channels, n_mels)

    @property
    def num_units(self):
        return 0  # continuous output: no unit vocabulary

    @property
    def speech_dim(self):
        return self._speech_dim

    def predict(self, speech, speech_lengths):
        """Differentiable prediction.

        Arguments
        ---------
        speech : torch.Tensor
            ``(B, M, D)`` token vectors, zeros at padding.
        speech_lengths : torch.Tensor
            ``(B,)`` valid tokens.

        Returns
        -------
        mels : torch.Tensor
            ``(B, M * U, n_mels)``, zeros after each length.
        lengths : torch.Tensor
            ``(B,)`` = ``speech_lengths * U``.
        """
        if speech is None or speech.dim() != 3 or speech.shape[-1] != self.speech_dim:
            raise InputError(f"mel_transformer expects speech (B, M, {self.speech_dim}), got "
                             f"{None if speech is None else tuple(speech.shape)}.")
        b, m, _ = speech.shape
        if m > self.positions.shape[0]:
            raise InputError(f"{m} tokens exceed the decoder's position table ({self.positions.shape[0]}).")
        speech_lengths = speech_lengths.to(speech.device).long()
        valid = lengths_to_mask(speech_lengths, m)
        h, _ = self.transformer(self.inp(speech) + self.positions[:m], valid)
        u = self.frames_per_token
        h = self.upsample(h).view(b, m * u, -1)
        lengths = speech_lengths * u
        frame_valid = lengths_to_mask(lengths, m * u)[..., None]
        h = h * frame_valid
        for conv, norm in zip(self.convs, self.norms):
            # Residual block; zeroing the padding keeps valid frames batch-independent:
            # normalized padding (LayerNorm bias) is zeroed again before the convolution.
            z = (norm(h) * frame_valid).transpose(1, 2)
            h = (h + F.gelu(conv(z)).transpose(1, 2)) * frame_valid
        return self.out(h) * frame_valid, lengths

    def loss(self, pred, target, lengths):
        """Masked L1 (+ MSE) between ``(B, F, n_mels)`` tensors over ``lengths (B,)`` frames."""
        mask = lengths_to_mask(lengths.to(pred.device), pred.shape[1])[..., None].to(pred.dtype)
        count = mask.sum().clamp(min=1) * pred.shape[-1]
        diff = (pred - target) * mask
        loss = diff.abs().sum() / count
        if self.loss_type == "l1_l2":
            loss = loss + diff.pow(2).sum() / count
        return loss

    def forward(self, tokens, token_lengths, speech, speech_lengths, units, unit_lengths, speaker=None):
        """Reconstruction pass: ``units`` are target log-mels ``(B, F, n_mels)`` with ``unit_lengths (B,)``.

        The prediction is cut or zero-padded to ``F`` frames (a token covers
        ``frames_per_token`` frames, so the last token may overhang the audio).
        Returns a :class:`DecoderOutput` whose ``logits`` are the predicted frames.
        """
        if units is None or units.dim() != 3 or units.shape[-1] != self.n_mels:
            raise InputError(f"mel_transformer targets must be log-mels (B, F, {self.n_mels}), got "
                             f"{None if units is None else tuple(units.shape)}.")
        pred, _ = self.predict(speech, speech_lengths)
        pred = fit_frames(pred, units.shape[1])
        return DecoderOutput(pred, units, self.loss(pred, units, unit_lengths))

    @torch.no_grad()
    def generate(self, tokens, token_lengths, speech, speech_lengths, speaker=None, num_frames=None, **kwargs):
        """Log-mels ``(B, F, n_mels)`` and lengths ``(B,)``; ``num_frames (B,)`` trims each to its audio."""
        mels, lengths = self.predict(speech, speech_lengths)
        if num_frames is not None:
            lengths = torch.minimum(lengths, torch.as_tensor(num_frames, device=lengths.device).long())
            mels = mels[:, : int(lengths.max())] * lengths_to_mask(lengths, int(lengths.max()))[..., None]
        return mels, lengths


def fit_frames(x, frames):
    """Cut or zero-pad ``x (B, F', C)`` along time to ``frames``."""
    if x.shape[1] >= frames:
        return x[:, :frames]
    return F.pad(x, (0, 0, 0, frames - x.shape[1]))
