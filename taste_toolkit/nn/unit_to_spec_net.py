"""Network of the ``unit_to_spec`` vocoder: unit ids -> linear log-magnitude STFT frames.

Non-causal residual dilated 1-D convolutions at the unit rate, then each unit's
vector repeated once per STFT frame (plus a learned within-unit position
vector), a few blocks at the frame rate and a 1x1 projection to ``n_freq`` bins.
Padded positions are zeroed after every block, so valid outputs do not depend
on the padding (see :mod:`taste_toolkit.plugins.vocoder.unit_to_spec`).
"""

import torch
from torch import nn


class ResBlock(nn.Module):
    """``x + conv(gelu(conv(gelu(norm(x)))))`` over ``(B, C, T)``; zero-padded "same" convs."""

    def __init__(self, dim, kernel_size, dilation, dropout=0.0):
        super().__init__()
        pad = dilation * (kernel_size - 1) // 2
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.conv1 = nn.Conv1d(dim, dim, kernel_size, dilation=dilation, padding=pad)
        self.conv2 = nn.Conv1d(dim, dim, 1)

    def forward(self, x, mask):
        h = self.norm(x.transpose(1, 2)).transpose(1, 2)
        h = self.conv2(self.dropout(nn.functional.gelu(self.conv1(nn.functional.gelu(h) * mask))))
        return (x + h) * mask


class UnitToSpecNet(nn.Module):
    """Unit ids ``(B, S)`` -> log-magnitude frames ``(B, S * fpu, n_freq)``.

    Arguments
    ---------
    num_units : int
        Vocabulary V.
    n_freq : int
        Output bins (``n_fft // 2 + 1``).
    frames_per_unit : int
        STFT frames per unit (fpu).
    dim : int
        Channels.
    unit_dilations, frame_dilations : list of int
        One residual block per dilation, at the unit / frame rate.
    kernel_size : int
        Odd kernel of every dilated conv.
    dropout : float
        Dropout inside every residual block (training only).
    speaker_dim : int
        Width of an utterance-level speaker vector added (through a linear map) at
        the input of the unit-rate and of the frame-rate blocks; 0: none.
    """

    def __init__(self, num_units, n_freq, frames_per_unit, dim, unit_dilations, frame_dilations, kernel_size,
                 dropout=0.0, speaker_dim=0):
        super().__init__()
        self.fpu = frames_per_unit
        self.speaker_dim = speaker_dim
        self.embed = nn.Embedding(num_units, dim)
        # Units say what is said, not by whom: without the voice the net can only predict
        # the average formants of all training voices (a blurred spectrogram).
        self.speaker = nn.Linear(speaker_dim, 2 * dim) if speaker_dim else None
        self.unit_blocks = nn.ModuleList(ResBlock(dim, kernel_size, d, dropout) for d in unit_dilations)
        self.frame_blocks = nn.ModuleList(ResBlock(dim, kernel_size, d, dropout) for d in frame_dilations)
        # Position of a frame inside its unit (the unit blocks know nothing below the unit rate).
        self.phase = nn.Parameter(torch.zeros(dim, frames_per_unit))
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Conv1d(dim, n_freq, 1)

    def forward(self, units, lengths, speaker=None):
        """``units (B, S)`` long, ``lengths (B,)``, ``speaker (B, speaker_dim)`` or None ->
        ``(B, S * fpu, n_freq)`` natural-log magnitudes."""
        batch, steps = units.shape
        mask = (torch.arange(steps, device=units.device)[None] < lengths[:, None]).to(self.phase.dtype)
        mask = mask.unsqueeze(1)  # (B, 1, S)
        x = self.embed(units.clamp(min=0)).transpose(1, 2)  # (B, dim, S)
        spk_units = spk_frames = 0.0
        if self.speaker is not None:
            spk_units, spk_frames = self.speaker(speaker.to(x.dtype)).unsqueeze(-1).chunk(2, dim=1)
        x = (x + spk_units) * mask
        for block in self.unit_blocks:
            x = block(x, mask)
        x = x.repeat_interleave(self.fpu, dim=2) + self.phase.repeat(1, steps)[None] + spk_frames
        mask = mask.repeat_interleave(self.fpu, dim=2)
        x = x * mask
        for block in self.frame_blocks:
            x = block(x, mask)
        x = nn.functional.gelu(self.norm(x.transpose(1, 2))).transpose(1, 2)
        return self.out(x).transpose(1, 2)
