"""``gated`` fusion (ablation): per-position sigmoid gates on the text and speech streams.

Like the original ``gated`` fusion of TASTE's SpokenLM code (``Linear(2H -> 2)``
gates), but the gate layer starts at zero weight with a bias of ``[4, -4]``, so
the initial model is ~text-only (gates 0.982 / 0.018) like ``weighted_sum``; the
gates then depend on the position's content as training proceeds.
"""

import torch
from torch import nn

from taste_toolkit.errors import ConfigError, InputError
from taste_toolkit.interfaces import Fusion
from taste_toolkit.registry import register


@register("fusion", "gated")
class GatedFusion(Fusion):
    """``g_t * text + g_s * Linear(speech)``, ``(g_t, g_s) = sigmoid(Linear([text; Linear(speech)]))``.

    Arguments
    ---------
    text_dim, speech_dim : int
        LM hidden size and speech-vector size (wired by the model).
    init_bias : list of float
        Initial gate biases ``[text, speech]`` (gate weights start at zero).
    speech_dropout : float
        Drop whole speech vectors (per position) in training with this probability,
        so the LM cannot lean on speech alone.

    Example
    -------
    >>> f = GatedFusion(text_dim=8, speech_dim=4)
    >>> f(torch.randn(2, 3, 8), torch.randn(2, 3, 4)).shape
    torch.Size([2, 3, 8])
    """

    def __init__(self, text_dim: int, speech_dim: int, init_bias: list = (4.0, -4.0), speech_dropout: float = 0.0):
        super().__init__()
        if text_dim < 1 or speech_dim < 1:
            raise ConfigError(f"gated fusion needs text_dim and speech_dim >= 1, got {text_dim}, {speech_dim}.")
        if len(init_bias) != 2 or not 0.0 <= speech_dropout < 1.0:
            raise ConfigError("gated fusion: init_bias must be [text, speech] and speech_dropout in [0, 1).")
        self.text_dim, self.speech_dim = text_dim, speech_dim
        self.proj = nn.Linear(speech_dim, text_dim)
        self.gate = nn.Linear(2 * text_dim, 2)
        nn.init.zeros_(self.gate.weight)
        with torch.no_grad():
            self.gate.bias.copy_(torch.tensor([float(b) for b in init_bias]))
        self.speech_dropout = speech_dropout

    def gates(self, text, speech_proj):
        """``(B, N, 2)`` gates for text and projected speech."""
        return torch.sigmoid(self.gate(torch.cat([text, speech_proj], dim=-1)))

    def forward(self, text, speech):
        """Fuse ``text (B, N, H)`` with ``speech (B, N, D_s)`` -> ``(B, N, H)``."""
        if speech.shape[:-1] != text.shape[:-1] or speech.shape[-1] != self.speech_dim:
            raise InputError(f"gated fusion got text {tuple(text.shape)} and speech {tuple(speech.shape)}; "
                             f"expected speech (..., {self.speech_dim}) at the same positions.")
        s = self.proj(speech.to(self.proj.weight.dtype)).to(text.dtype)
        if self.training and self.speech_dropout > 0:
            keep = (torch.rand(s.shape[:-1], device=s.device) >= self.speech_dropout).to(s.dtype)
            s = s * keep[..., None]
        g = self.gates(text, s).to(text.dtype)
        return g[..., :1] * text + g[..., 1:] * s
