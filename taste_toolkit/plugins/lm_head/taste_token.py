"""``taste_token`` LM head: TASLM token mode, one categorical head per RVQ layer.

At a position where the next LM input starts a new word, the head predicts the R
RVQ codes of the TASTE token that enters there (the delayed word). The original
TASLM uses one ``Linear(H -> R*K, bias=False)`` and weights the per-layer
cross-entropies (``0.52^(r+1)``); the HF port averages them. ``layer_weights``
covers both (empty = average).
"""

import torch
import torch.nn.functional as F
from torch import nn

from taste_toolkit.errors import ConfigError
from taste_toolkit.interfaces import LMHead
from taste_toolkit.registry import register


def top_p_sample(logits, top_p, temperature=1.0, generator=None):
    """Nucleus sampling over the last axis of ``logits (..., K)``; greedy when ``top_p <= 0``.

    Keeps the smallest set of classes whose probability reaches ``top_p`` (the most
    likely class is always kept), renormalizes, and draws one class per row.
    """
    if top_p <= 0 or temperature <= 0:
        return logits.argmax(-1)
    flat = logits.reshape(-1, logits.shape[-1]).float() / temperature
    probs = torch.softmax(flat, dim=-1)
    sorted_p, order = probs.sort(dim=-1, descending=True)
    # Drop a class when the mass before it already reaches top_p.
    drop = (sorted_p.cumsum(-1) - sorted_p) >= top_p
    sorted_p = sorted_p.masked_fill(drop, 0.0)
    pick = torch.multinomial(sorted_p / sorted_p.sum(-1, keepdim=True), 1, generator=generator)
    return order.gather(-1, pick).reshape(logits.shape[:-1])


@register("lm_head", "taste_token")
class TasteTokenHead(LMHead):
    """R categorical heads over the RVQ codes of the next word's TASTE token.

    Arguments
    ---------
    input_dim : int
        LM hidden size ``H`` (wired by the model).
    num_quantizers : int
        RVQ layers ``R``; must match the tokenizer's quantizer.
    codebook_size : int
        Codes per layer ``K``; must match the tokenizer's quantizer.
    layer_weights : list of float
        Loss weight of each layer (normalized to sum 1); empty = equal weights.
    bias : bool
        Bias in the output projection (the original has none).

    Example
    -------
    >>> head = TasteTokenHead(input_dim=8, num_quantizers=2, codebook_size=4)
    >>> logits = head(torch.randn(1, 3, 8))
    >>> logits.shape
    torch.Size([1, 3, 2, 4])
    """

    def __init__(self, input_dim: int, num_quantizers: int = 4, codebook_size: int = 512,
                 layer_weights: list = (), bias: bool = False):
        super().__init__()
        if input_dim < 1 or num_quantizers < 1 or codebook_size < 2:
            raise ConfigError("taste_token head needs input_dim >= 1, num_quantizers >= 1, codebook_size >= 2.")
        weights = [float(w) for w in layer_weights] or [1.0] * num_quantizers
        if len(weights) != num_quantizers or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ConfigError(f"taste_token layer_weights must be {num_quantizers} non-negative numbers "
                              f"(one per RVQ layer) with a positive sum, got {list(layer_weights)}.")
        self._input_dim = input_dim
        self.num_quantizers, self.codebook_size = num_quantizers, codebook_size
        self.register_buffer("layer_weights", torch.tensor(weights) / sum(weights), persistent=False)
        self.proj = nn.Linear(input_dim, num_quantizers * codebook_size, bias=bias)

    @property
    def input_dim(self):
        return self._input_dim

    def forward(self, hidden):
        """``hidden (B, N, H)`` -> logits ``(B, N, R, K)`` in float32."""
        out = self.proj(hidden.to(self.proj.weight.dtype)).float()
        return out.reshape(*hidden.shape[:-1], self.num_quantizers, self.codebook_size)

    def loss(self, logits, targets, codebook=None):
        """Weighted per-layer cross-entropy at labelled positions.

        Arguments
        ---------
        logits : torch.Tensor
            ``(B, N, R, K)`` from :meth:`forward`.
        targets : torch.Tensor
            ``(B, N, R)`` codes, ``-1`` where there is no label.

        Returns
        -------
        loss : torch.Tensor
            Scalar (0 with a graph when nothing is labelled).
        stats : dict
            ``count`` labelled positions, ``correct_l{r}`` top-1 hits per layer.
        """
        mask = targets[..., 0] >= 0
        n = int(mask.sum())
        stats = {"count": n}
        if n == 0:
            return logits.sum() * 0.0, stats
        sel, tgt = logits[mask], targets[mask]  # (n, R, K), (n, R)
        per_layer = torch.stack([F.cross_entropy(sel[:, r], tgt[:, r]) for r in range(self.num_quantizers)])
        pred = sel.argmax(-1)
        for r in range(self.num_quantizers):
            stats[f"correct_l{r}"] = int((pred[:, r] == tgt[:, r]).sum())
        return (per_layer * self.layer_weights).sum(), stats

    def log_likelihood(self, logits, targets, codebook=None):
        """``(B, N)`` log-probability of the target codes (sum over layers), 0 where unlabelled."""
        mask = targets[..., 0] >= 0
        logp = torch.log_softmax(logits, dim=-1).gather(-1, targets.clamp(min=0)[..., None])[..., 0]
        return logp.sum(-1) * mask

    @torch.no_grad()
    def predict(self, logits, codebook=None, sample=False, top_p=0.0, temperature=1.0, generator=None):
        """Codes ``(..., R)``: greedy by default, per-layer top-p when ``sample`` and ``top_p > 0``."""
        if not sample:
            return logits.argmax(-1)
        return top_p_sample(logits, top_p, temperature, generator)
