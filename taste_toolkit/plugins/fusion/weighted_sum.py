"""``weighted_sum`` fusion: TASLM's input fusion (official ``WeightedSumFusion``).

The speech vector is projected to the LM's hidden size and mixed with the text
embedding by a softmax over two trainable scalars. The scalars start at
``[2, -2]`` (text, speech), i.e. ~0.982 text and ~0.018 speech: the pretrained LM
first sees almost exactly the inputs it was trained on, and learns how much
speech to let in (reference-taste.md section 8).
"""

import torch
from torch import nn

from taste_toolkit.errors import ConfigError, InputError
from taste_toolkit.interfaces import Fusion
from taste_toolkit.registry import register


@register("fusion", "weighted_sum")
class WeightedSumFusion(Fusion):
    """``w_text * text + w_speech * Linear(speech)`` with ``(w_text, w_speech) = softmax(logits)``.

    Arguments
    ---------
    text_dim : int
        LM hidden size ``H`` (wired by the model).
    speech_dim : int
        Speech-vector size ``D_s`` (wired by the model).
    init_logits : list of float
        Initial ``[text, speech]`` logits; the default gives ~0.98 text.

    Example
    -------
    >>> f = WeightedSumFusion(text_dim=8, speech_dim=4)
    >>> f(torch.randn(2, 3, 8), torch.randn(2, 3, 4)).shape
    torch.Size([2, 3, 8])
    >>> round(float(f.weights[0]), 3)
    0.982
    """

    def __init__(self, text_dim: int, speech_dim: int, init_logits: list = (2.0, -2.0)):
        super().__init__()
        if text_dim < 1 or speech_dim < 1:
            raise ConfigError(f"weighted_sum fusion needs text_dim and speech_dim >= 1, got {text_dim}, {speech_dim}.")
        if len(init_logits) != 2:
            raise ConfigError(f"weighted_sum init_logits must be [text, speech], got {list(init_logits)}.")
        self.text_dim, self.speech_dim = text_dim, speech_dim
        self.proj = nn.Linear(speech_dim, text_dim)
        self.logits = nn.Parameter(torch.tensor([float(v) for v in init_logits]))

    @property
    def weights(self):
        """``(2,)`` current ``[text, speech]`` weights (they sum to 1)."""
        return torch.softmax(self.logits, dim=0)

    def forward(self, text, speech):
        """Fuse ``text (B, N, H)`` with ``speech (B, N, D_s)`` -> ``(B, N, H)``."""
        if speech.shape[:-1] != text.shape[:-1] or speech.shape[-1] != self.speech_dim:
            raise InputError(f"weighted_sum fusion got text {tuple(text.shape)} and speech {tuple(speech.shape)}; "
                             f"expected speech (..., {self.speech_dim}) at the same positions.")
        w = self.weights.to(text.dtype)
        return w[0] * text + w[1] * self.proj(speech.to(self.proj.weight.dtype)).to(text.dtype)
