"""``fsq`` quantizer: Finite Scalar Quantization (Mentzer et al. 2023, arXiv 2309.15505).

FSQ replaces a learned codebook by a fixed grid. Each vector is projected to
``d = len(levels)`` dimensions, every dimension is squashed with ``tanh`` into a
bounded interval and rounded to one of ``levels[j]`` integer values; the rounded
vector is projected back to ``input_dim``. The codebook is implicit: the grid of
``prod(levels)`` points. There is nothing to learn in the codebook, so there is no
commitment loss, no codebook collapse and no k-means init; only the two
projections train, through the straight-through estimator of the rounding.

Bounding follows the reference implementation (lucidrains ``vector-quantize-pytorch``
``FSQ``): ``tanh(z + shift) * half_l - offset`` with ``half_l = (L - 1)(1 + eps) / 2``
and, for even ``L``, ``offset = 1/2`` and ``shift = atanh(offset / half_l)`` so that an
even number of levels ``{-L/2, ..., L/2 - 1}`` is reachable and ``z = 0`` maps to 0.

In the toolkit's terms one vector gets ONE code (``R = 1``): the mixed-radix index of
its grid point, ``codebook_size = prod(levels)``.
"""

import math

import torch
from torch import nn

from taste_toolkit.errors import ConfigError, InputError
from taste_toolkit.interfaces import Quantizer, QuantizerOutput
from taste_toolkit.registry import register
from taste_toolkit.utils import lengths_to_mask

#: Widens the tanh range a little so the extreme levels are reached by finite inputs.
_EPS = 1e-3


@register("quantizer", "fsq")
class FSQQuantizer(Quantizer):
    """Finite Scalar Quantization: tanh-bounded per-dimension rounding, implicit codebook.

    Arguments
    ---------
    input_dim : int
        Feature size ``D`` of the vectors (wired from the aggregator).
    levels : list of int
        Quantization levels per FSQ dimension (each >= 2). The paper's
        recommendations: ``[8, 5, 5, 5]`` (1000 codes), ``[8, 8, 8, 5, 5, 5]`` (64000).

    Example
    -------
    >>> q = FSQQuantizer(input_dim=16, levels=[8, 5, 5, 5])
    >>> out = q(torch.randn(2, 5, 16), torch.tensor([5, 3]))
    >>> out.quantized.shape, out.codes.shape, q.codebook_size
    (torch.Size([2, 5, 16]), torch.Size([2, 5, 1]), 1000)
    >>> out.codes[1, 3:, 0].tolist()
    [-1, -1]
    """

    # The default list is never mutated (it is copied below); a list, not a tuple,
    # so that `taste plugins` shows the value a YAML file would write.
    def __init__(self, input_dim: int, levels: list = [8, 5, 5, 5]):  # noqa: B006
        super().__init__()
        if input_dim < 1:
            raise ConfigError(f"fsq input_dim must be >= 1, got {input_dim}.")
        levels = list(levels)
        if not levels or not all(
            isinstance(L, int) and not isinstance(L, bool) and L >= 2 for L in levels
        ):
            raise ConfigError(
                f"fsq levels must be a non-empty list of integers >= 2, got {levels!r}; "
                "e.g. [8, 5, 5, 5] (1000 codes)."
            )
        self._input_dim = input_dim
        self.levels = levels
        self._codebook_size = math.prod(levels)
        if self._codebook_size >= 2**62:  # indices are int64
            raise ConfigError(f"fsq levels {levels} give more than 2**62 codes; use fewer levels.")
        dim = len(levels)
        lv = torch.tensor(levels, dtype=torch.float64)
        half_l = (lv - 1) * (1 + _EPS) / 2
        offset = torch.where(lv % 2 == 0, 0.5, 0.0)
        # Buffers (not parameters): fixed by `levels`, saved with the state_dict so a
        # checkpoint cannot be loaded into a quantizer with other levels unnoticed.
        self.register_buffer("_levels", torch.tensor(levels, dtype=torch.long))
        self.register_buffer("_half_l", half_l.float())
        self.register_buffer("_offset", offset.float())
        self.register_buffer("_shift", torch.atanh(offset / half_l).float())
        self.register_buffer("_half_width", (lv // 2).float())
        basis = [1]
        for L in levels[:-1]:
            basis.append(basis[-1] * L)
        self.register_buffer("_basis", torch.tensor(basis, dtype=torch.long))
        self.project_in = nn.Linear(input_dim, dim)
        self.project_out = nn.Linear(dim, input_dim)

    # ------------------------------------------------------------------ properties

    @property
    def input_dim(self):
        return self._input_dim

    @property
    def num_quantizers(self):
        return 1

    @property
    def codebook_size(self):
        return self._codebook_size

    # ------------------------------------------------------------------ grid maths

    def latent_levels(self, z):
        """Integer level of each FSQ dimension, ``(..., d)`` long in ``[0, L_j)``.

        ``z`` is the projected (unbounded) latent ``(..., d)``.
        """
        rounded = self._bound(z).round()
        return (rounded + self._half_width).long()

    def _bound(self, z):
        return torch.tanh(z + self._shift) * self._half_l - self._offset

    def levels_to_indices(self, level_ids):
        """Mixed-radix code index ``(...)`` of per-dimension levels ``(..., d)``."""
        return (level_ids * self._basis).sum(-1)

    def indices_to_levels(self, indices):
        """Per-dimension levels ``(..., d)`` of code indices ``(...)`` in ``[0, K)``."""
        return torch.div(indices[..., None], self._basis, rounding_mode="floor") % self._levels

    def _levels_to_latent(self, level_ids):
        # Normalized grid point in [-1, 1]: the value project_out sees.
        return (level_ids.float() - self._half_width) / self._half_width

    # ------------------------------------------------------------------ API

    def _check(self, x, lengths):
        if x.dim() != 3 or x.shape[-1] != self.input_dim:
            raise InputError(
                f"fsq expects x of shape (B, M, {self.input_dim}), got {tuple(x.shape)}; "
                "check that input_dim matches the aggregator's output_dim."
            )
        lengths = torch.as_tensor(lengths, device=x.device).long()
        if lengths.shape != (x.shape[0],) or (lengths < 0).any() or (lengths > x.shape[1]).any():
            raise InputError(
                f"fsq lengths must be (B,)={x.shape[0]} absolute counts in [0, {x.shape[1]}], "
                f"got {lengths.tolist()}."
            )
        return lengths_to_mask(lengths, x.shape[1])

    def _quantize(self, x, mask):
        """Return (quantized (B, M, D) with padding zeroed, codes (B, M, 1))."""
        z = self.project_in(x)
        bounded = self._bound(z)
        rounded = bounded.round().detach()
        # Straight-through: the value is exactly `rounded` (bounded - bounded == 0),
        # the gradient is that of `bounded`. Written this way (not
        # bounded + (rounded - bounded)) so forward and decode() agree bit for bit.
        level_values = rounded + (bounded - bounded.detach())
        latent = level_values / self._half_width
        # where(), not a multiplication: NaN/inf in padded positions must not leak.
        quantized = torch.where(mask[..., None], self.project_out(latent), 0.0)
        level_ids = (rounded + self._half_width).long()
        codes = self.levels_to_indices(level_ids).masked_fill(~mask, -1)[..., None]
        return quantized, codes

    def forward(self, x, lengths):
        """Quantize ``x (B, M, D)``; codes ``(B, M, 1)`` with ``-1`` at padding, zero loss."""
        mask = self._check(x, lengths)
        quantized, codes = self._quantize(x, mask)
        valid = codes[..., 0][mask]
        metrics = {}
        if valid.numel():
            # unique(), not bincount(): the grid can be far larger than the batch.
            counts = torch.unique(valid, return_counts=True)[1].double()
            probs = counts / counts.sum()
            entropy = -(probs * probs.log()).sum()
            metrics = {
                "fsq_usage": counts.numel() / self.codebook_size,
                "fsq_perplexity": float(entropy.exp()),
            }
        # FSQ has no codebook to pull towards the inputs: no auxiliary loss.
        return QuantizerOutput(
            quantized=quantized, codes=codes, loss=x.new_zeros(()), metrics=metrics
        )

    @torch.no_grad()
    def encode(self, x, lengths):
        """Codes ``(B, M, 1)`` (``-1`` at padding); deterministic, no state changes."""
        mask = self._check(x, lengths)
        return self._quantize(x, mask)[1]

    @torch.no_grad()
    def decode(self, codes):
        """Vectors ``(B, M, D)`` of codes ``(B, M, 1)``; code ``-1`` gives zeros."""
        if codes.dim() != 3 or codes.shape[-1] != 1:
            raise InputError(f"fsq decode expects codes of shape (B, M, 1), got {tuple(codes.shape)}.")
        idx = codes[..., 0].long()
        if (idx < -1).any() or (idx >= self.codebook_size).any():
            raise InputError(
                f"fsq codes must be in [0, {self.codebook_size}) or -1 (padding); "
                f"got values in [{int(idx.min())}, {int(idx.max())}]."
            )
        mask = idx >= 0
        latent = self._levels_to_latent(self.indices_to_levels(idx.clamp(min=0)))
        return torch.where(mask[..., None], self.project_out(latent), 0.0)
