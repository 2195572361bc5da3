"""Weighted sum of two aligned streams with softmax-normalised scalar weights.

The fusion of TASTE's unit decoder (``WeightedSum`` in the release's
``modules_taste/fusion.py``): ``softmax(w)[0] * audio + softmax(w)[1] * text``.
The parameter is named ``weights`` as in the release.
"""

import torch
import torch.nn.functional as F
from torch import nn

#: Initial ``weights``: equal streams, or text-dominated (softmax ~ [0.02, 0.98]).
FUSION_INITS = {"balance": (1.0, 1.0), "zero_audio": (-2.0, 2.0)}


class WeightedSumFusion(nn.Module):
    """``softmax(weights)[0] * audio + softmax(weights)[1] * text``.

    Arguments
    ---------
    normalize : bool
        Parameter-free LayerNorm of both streams first (False in the TASTE release).
    init : str
        Key of :data:`FUSION_INITS`.
    trainable : bool
        Learn the two weights.
    """

    def __init__(self, normalize=False, init="balance", trainable=True):
        super().__init__()
        self.normalize = normalize
        self.weights = nn.Parameter(torch.tensor(FUSION_INITS[init]), requires_grad=trainable)

    def forward(self, audio, text):
        """``audio, text (B, N, D)`` -> ``(B, N, D)``."""
        if self.normalize:
            audio = F.layer_norm(audio, audio.shape[-1:])
            text = F.layer_norm(text, text.shape[-1:])
        weights = torch.softmax(self.weights, dim=0)
        return weights[0] * audio + weights[1] * text
