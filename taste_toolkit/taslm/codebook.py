"""Frozen RVQ codebooks of the TASTE tokenizer, as TASLM uses them.

TASLM works in the RVQ's code space (the original TASLM's "drop-proj" choice):
a TASTE token enters the LM as the sum of its R codewords ``(d,)`` and the
embedding head predicts such a sum, which is re-quantized here by the same
residual nearest-neighbour search the RVQ runs. The codebooks are a buffer copy,
so the LM never changes them.

The official release feeds the LM the RVQ's *output* instead (``project_out`` of
the code sum, back in the aggregator's space, e.g. 1280-d): a codebook built with
``project_out`` weights offers that as :meth:`SpeechCodebook.output`.
"""

import torch
from torch import nn

from taste_toolkit.errors import ConfigError, InputError


class SpeechCodebook(nn.Module):
    """``(R, K, d)`` frozen codebooks with ``embed`` (codes -> sum) and ``quantize`` (vector -> codes).

    Example
    -------
    >>> cb = SpeechCodebook(torch.randn(2, 4, 3))
    >>> codes = torch.tensor([[1, 2], [3, 0]])
    >>> bool((cb.quantize(cb.embed(codes)) == codes).all())
    True
    """

    def __init__(self, codebooks, project_out_weight=None, project_out_bias=None):
        super().__init__()
        if codebooks.dim() != 3:
            raise ConfigError(f"codebooks must be (R, K, d), got shape {tuple(codebooks.shape)}.")
        self.register_buffer("codebooks", codebooks.detach().clone().float())
        self.register_buffer("project_out_weight", None)
        self.register_buffer("project_out_bias", None)
        if project_out_weight is not None:
            w = project_out_weight.detach().clone().float()
            b = (project_out_bias.detach().clone().float() if project_out_bias is not None
                 else torch.zeros(w.shape[0]))
            if w.dim() != 2 or w.shape[1] != codebooks.shape[-1] or b.shape != (w.shape[0],):
                raise ConfigError(f"project_out weight (D, d={codebooks.shape[-1]}) and bias (D,) expected, got "
                                  f"{tuple(w.shape)} and {tuple(b.shape)}.")
            self.project_out_weight, self.project_out_bias = w, b
        # RMS per dimension of a code sum with independent uniform codes: the RVQ's
        # code space has an arbitrary scale (100x Llama's embeddings here), so TASLM
        # feeds and predicts code sums divided by it (unit scale).
        books = self.codebooks
        self.scale = float((books.pow(2).sum(-1).mean(-1).sum() / books.shape[-1]).sqrt().clamp(min=1e-8))

    @classmethod
    def from_quantizer(cls, quantizer):
        """Copy the codebooks of a tokenizer's quantizer (``rvq``-like: has ``codebooks``)."""
        books = getattr(quantizer, "codebooks", None)
        if books is None or getattr(quantizer, "num_quantizers", 0) < 1:
            raise ConfigError(
                f"TASLM needs a tokenizer with discrete RVQ codes; its quantizer "
                f"{type(quantizer).__name__} has none (a no-VQ or text-only tokenizer cannot drive TASLM)."
            )
        if getattr(quantizer, "initialised", True) is False:
            raise ConfigError("The tokenizer's RVQ codebooks were never initialised (untrained tokenizer?).")
        proj = getattr(getattr(quantizer, "rvq", None), "project_out", None)
        if isinstance(proj, nn.Linear):
            return cls(books.detach(), proj.weight, proj.bias)
        return cls(books.detach())

    @property
    def has_project_out(self):
        return self.project_out_weight is not None

    @property
    def output_dim(self):
        """Size ``D`` of :meth:`output` vectors (the code-space size without ``project_out``)."""
        return self.project_out_weight.shape[0] if self.has_project_out else self.dim

    def output(self, codes):
        """``project_out(code sum)`` ``(..., D)`` of ``codes (..., R)`` (the RVQ's output vectors,
        official ``get_output_from_indices``); ``-1`` codes add nothing to the sum."""
        if not self.has_project_out:
            raise ConfigError("These codebooks have no project_out weights (speech_input 'project_out' needs a "
                              "tokenizer whose RVQ projects its code space, as the official release's does).")
        return torch.nn.functional.linear(self.embed(codes), self.project_out_weight, self.project_out_bias)

    def extra_tensors(self):
        """Tensors to save beside ``codebook`` (``{name: tensor}``; empty without ``project_out``)."""
        if not self.has_project_out:
            return {}
        return {"codebook_project_out.weight": self.project_out_weight.detach().cpu().contiguous(),
                "codebook_project_out.bias": self.project_out_bias.detach().cpu().contiguous()}

    @property
    def num_quantizers(self):
        return self.codebooks.shape[0]

    @property
    def codebook_size(self):
        return self.codebooks.shape[1]

    @property
    def dim(self):
        return self.codebooks.shape[2]

    def embed(self, codes, normalized=False):
        """Code sums ``(..., d)`` of ``codes (..., R)`` (divided by :attr:`scale` if ``normalized``);
        ``-1`` codes add nothing."""
        if codes.shape[-1] != self.num_quantizers:
            raise InputError(f"codes have {codes.shape[-1]} layers, the codebooks {self.num_quantizers}.")
        out = 0
        for r in range(self.num_quantizers):
            c = codes[..., r]
            out = out + self.codebooks[r][c.clamp(min=0)] * (c >= 0)[..., None]
        return out / self.scale if normalized else out

    @torch.no_grad()
    def quantize(self, z, normalized=False):
        """Codes ``(..., R)`` of vectors ``z (..., d)`` (in :attr:`scale` units if ``normalized``)
        by residual nearest-neighbour search."""
        if z.shape[-1] != self.dim:
            raise InputError(f"vectors have size {z.shape[-1]}, the codebooks {self.dim}.")
        residual = z.reshape(-1, self.dim).float() * (self.scale if normalized else 1.0)
        codes = []
        for r in range(self.num_quantizers):
            idx = torch.cdist(residual, self.codebooks[r]).argmin(-1)
            codes.append(idx)
            residual = residual - self.codebooks[r][idx]
        return torch.stack(codes, -1).reshape(*z.shape[:-1], self.num_quantizers)
