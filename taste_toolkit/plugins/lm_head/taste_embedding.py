"""``taste_embedding`` LM head: TASLM embedding mode (continuous TASTE prediction).

The head predicts a Gaussian over the code sum of the next word's TASTE token
(the sum of its R codewords, in the RVQ code space): a mean ``mu = Linear(H -> d)``
and a log-variance (a learned vector, input-independent as in the official head,
or a linear map). Training minimizes a regression loss on a reparameterized sample
plus the KL divergence to ``N(target, prior_std^2 I)``; the prediction is
re-quantized by the frozen RVQ codebooks into R codes, so the rest of TASLM is
shared with token mode. The Gaussian lives in units of the codebook's scale
(code sums divided by ``codebook.scale``, unit RMS), so ``prior_std`` and the
losses do not depend on the RVQ's arbitrary code-space scale.

Two defects of the official code are fixed here (reference-taste.md section 11):
the KL uses the log-variance (the original passes ``mu`` as ``logvar``), and
inference uses the mean ``mu`` (the official code uses ``mu + sigma`` or keeps
sampling) unless sampling is asked for.

Point prediction (``point``), both offered:

* ``"mean"`` (default): re-quantize ``mu``;
* ``"mean_plus_sigma"``: re-quantize ``mu + exp(0.5 * logvar)``, what the official
  release (``ContinueLatentLinearLastExtract`` in eval mode, used by its
  ``inference_completion``) does: sigma is added, not sampled.

``predict(sample=True)`` draws ``mu + temperature * sigma * eps`` instead. With
``normalized=False`` the Gaussian lives in the raw RVQ code space, as in the release
(``fc_mu`` predicts the code sum itself); imported release heads use it.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from taste_toolkit.errors import ConfigError
from taste_toolkit.interfaces import LMHead
from taste_toolkit.registry import register


def gaussian_kl(mu, logvar, target, prior_std=1.0):
    """Elementwise ``KL(N(mu, exp(logvar)) || N(target, prior_std^2))``.

    ``log(s / sigma) + (sigma^2 + (mu - target)^2) / (2 s^2) - 1/2`` per dimension.
    """
    var_ratio = logvar.exp() / prior_std ** 2
    return 0.5 * (var_ratio + (mu - target) ** 2 / prior_std ** 2 - 1.0 - logvar) + math.log(prior_std)


@register("lm_head", "taste_embedding")
class TasteEmbeddingHead(LMHead):
    """Gaussian over the next word's TASTE code sum, re-quantized by the frozen RVQ.

    Arguments
    ---------
    input_dim : int
        LM hidden size ``H`` (wired by the model).
    num_quantizers, codebook_size : int
        RVQ geometry ``R x K``; must match the tokenizer's quantizer.
    embedding_dim : int
        Code-space size ``d`` of the RVQ (``codebook_dim``); must match it.
    logvar : str
        ``"learned"`` (one trainable vector, the official choice) or ``"linear"``
        (``Linear(H -> d)``, input-dependent).
    init_logvar : float
        Initial log-variance.
    regression_weight, kl_weight : float
        ``loss = regression_weight * MSE(z, target) + kl_weight * KL``, with
        ``z = mu + sigma * eps`` (MSE averaged over dimensions, KL summed over
        dimensions and averaged over positions).
    prior_std : float
        Standard deviation of the KL target ``N(target, prior_std^2 I)``.
    normalized : bool
        Work in codebook-scale units (True) or in the raw code space (False, release).
    point : str
        Point prediction without sampling: ``"mean"`` or ``"mean_plus_sigma"`` (release).

    Example
    -------
    >>> head = TasteEmbeddingHead(input_dim=8, num_quantizers=2, codebook_size=4, embedding_dim=3)
    >>> mu, logvar = head(torch.randn(1, 5, 8))
    >>> mu.shape, logvar.shape
    (torch.Size([1, 5, 3]), torch.Size([1, 5, 3]))
    """

    POINTS = ("mean", "mean_plus_sigma")

    def __init__(self, input_dim: int, num_quantizers: int = 4, codebook_size: int = 512, embedding_dim: int = 256,
                 logvar: str = "learned", init_logvar: float = 0.0, regression_weight: float = 1.0,
                 kl_weight: float = 1.0, prior_std: float = 1.0, normalized: bool = True, point: str = "mean"):
        super().__init__()
        if logvar not in ("learned", "linear"):
            raise ConfigError(f"taste_embedding logvar must be 'learned' or 'linear', got {logvar!r}.")
        if point not in self.POINTS:
            raise ConfigError(f"taste_embedding point must be one of {self.POINTS}, got {point!r}.")
        self.normalized, self.point = bool(normalized), point
        if min(input_dim, num_quantizers, embedding_dim) < 1 or codebook_size < 2:
            raise ConfigError("taste_embedding needs input_dim, num_quantizers, embedding_dim >= 1 and codebook_size >= 2.")
        if regression_weight < 0 or kl_weight < 0 or prior_std <= 0:
            raise ConfigError("taste_embedding weights must be >= 0 and prior_std > 0.")
        self._input_dim = input_dim
        self.num_quantizers, self.codebook_size, self.embedding_dim = num_quantizers, codebook_size, embedding_dim
        self.regression_weight, self.kl_weight, self.prior_std = regression_weight, kl_weight, prior_std
        self.mu = nn.Linear(input_dim, embedding_dim)
        self.logvar_mode = logvar
        if logvar == "learned":
            self.logvar = nn.Parameter(torch.full((embedding_dim,), float(init_logvar)))
        else:
            self.logvar = nn.Linear(input_dim, embedding_dim)
            nn.init.zeros_(self.logvar.weight)
            nn.init.constant_(self.logvar.bias, float(init_logvar))

    @property
    def input_dim(self):
        return self._input_dim

    def forward(self, hidden):
        """``hidden (B, N, H)`` -> ``(mu, logvar)``, each ``(B, N, d)`` float32."""
        h = hidden.to(self.mu.weight.dtype)
        mu = self.mu(h).float()
        if self.logvar_mode == "learned":
            logvar = self.logvar.float().expand_as(mu)
        else:
            logvar = self.logvar(h).float()
        return mu, logvar

    def loss(self, output, targets, codebook):
        """Regression + Gaussian KL at labelled positions.

        Arguments
        ---------
        output : tuple
            ``(mu, logvar)`` from :meth:`forward`.
        targets : torch.Tensor
            ``(B, N, R)`` codes, ``-1`` where there is no label.
        codebook : SpeechCodebook
            Frozen RVQ codebooks (target code sums and re-quantization).

        Returns
        -------
        loss : torch.Tensor
        stats : dict
            ``count``, ``correct_l{r}`` (codes of the re-quantized mean), ``sum_correct`` (its
            code sum equals the target's), ``mse_sum``, ``kl_sum``.
        """
        mu, logvar = output
        mask = targets[..., 0] >= 0
        n = int(mask.sum())
        stats = {"count": n}
        if n == 0:
            return mu.sum() * 0.0, stats
        m, lv, tgt = mu[mask], logvar[mask], targets[mask]
        t = codebook.embed(tgt, normalized=self.normalized).float()
        # Reparameterization: the gradient reaches mu and sigma through the sample.
        z = m + torch.exp(0.5 * lv) * torch.randn_like(m) if self.training else m
        mse = F.mse_loss(z, t)
        kl = gaussian_kl(m, lv, t, self.prior_std).sum(-1).mean()
        with torch.no_grad():
            pred = codebook.quantize(self._point(m, lv), normalized=self.normalized)
            for r in range(self.num_quantizers):
                stats[f"correct_l{r}"] = int((pred[:, r] == tgt[:, r]).sum())
            # Same vector after re-quantization (a degenerate RVQ has duplicate codewords, so
            # per-layer code equality can miss predictions that decode to the target itself).
            gap = (codebook.embed(pred, normalized=self.normalized) - t).norm(dim=-1)
            stats["sum_correct"] = int((gap <= 1e-3 * max(1.0, float(t.norm(dim=-1).mean()))).sum())
        stats["mse_sum"] = float(F.mse_loss(m, t, reduction="none").mean(-1).sum())
        stats["kl_sum"] = float(kl.detach()) * n
        return self.regression_weight * mse + self.kl_weight * kl, stats

    def log_likelihood(self, output, targets, codebook):
        """``(B, N)`` Gaussian log-density of the target code sums, 0 where unlabelled."""
        mu, logvar = output
        mask = targets[..., 0] >= 0
        t = codebook.embed(targets, normalized=self.normalized).float()
        logp = -0.5 * (logvar + (t - mu) ** 2 / logvar.exp() + math.log(2 * math.pi))
        return logp.sum(-1) * mask

    def _point(self, mu, logvar):
        """The point prediction: ``mu`` or ``mu + sigma`` (see ``point``)."""
        return mu + torch.exp(0.5 * logvar) if self.point == "mean_plus_sigma" else mu

    @torch.no_grad()
    def predict(self, output, codebook, sample=False, top_p=0.0, temperature=1.0, generator=None):
        """Codes ``(..., R)`` of the re-quantized point prediction (``mu``, or ``mu + sigma`` with
        ``point="mean_plus_sigma"``), or of a sample ``mu + temperature * sigma * eps``."""
        mu, logvar = output
        z = self._point(mu, logvar)
        if sample:
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
            z = mu + temperature * torch.exp(0.5 * logvar) * eps
        return codebook.quantize(z, normalized=self.normalized)
