"""``rvq`` quantizer: TASTE's residual vector quantizer (lucidrains ``ResidualVQ``).

TASTE (reference-taste.md section 4) quantizes each aggregated vector with
``ResidualVQ(dim=D, num_quantizers=4, codebook_dim=256, codebook_size=512,
decay=0.99, kmeans_init=True, quantize_dropout=True)``: one ``Linear(D->256)``
before and one ``Linear(256->D)`` after the residual stack, EMA codebooks,
commitment loss summed over layers, and quantizer dropout that keeps a random
1..R layers in training. We use the library for all of that and add what it does
not do the way we need:

* padding is removed *before* the library sees it (valid positions are gathered
  into one ``(1, N, d)`` sequence and scattered back), so padded values can never
  reach k-means init, EMA statistics, dead-code expiry or the loss, whatever the
  library's ``mask=`` handling does internally;
* dead-code replacement (``threshold_ema_dead_code``, default 2; TASTE used 0);
* codebook synchronisation across DDP ranks is decided at *forward* time (the
  library decides once, at construction, and crashes if it then has no group);
* codebook usage / perplexity metrics, an eval-mode commitment loss, and a
  ``decode`` that reproduces the eval forward bit for bit.
"""

import logging

import torch
import torch.distributed as dist

from taste_toolkit.errors import ConfigError, InputError
from taste_toolkit.interfaces import Quantizer, QuantizerOutput
from taste_toolkit.registry import register
from taste_toolkit.utils import lengths_to_mask

logger = logging.getLogger(__name__)


@register("quantizer", "rvq")
class ResidualVQQuantizer(Quantizer):
    """Residual VQ with EMA codebooks, k-means init, dead-code expiry and dropout.

    Arguments
    ---------
    input_dim : int
        Feature size ``D`` of the vectors (wired from the aggregator).
    num_quantizers : int
        Residual layers ``R``.
    codebook_size : int
        Codes per layer ``K``.
    codebook_dim : int
        Size of the code space; a ``Linear(D->codebook_dim)`` and back is used
        when it differs from ``input_dim``.
    decay : float
        EMA decay of the codebooks.
    commitment_weight : float
        Weight of the commitment loss (summed over layers).
    kmeans_init : bool
        Initialise each codebook by k-means on its first training batch.
    kmeans_iters : int
        k-means iterations of that init.
    threshold_ema_dead_code : float
        Codes whose EMA cluster size falls below this are replaced by random
        inputs of the current batch (0 disables, as in TASTE's release).
    quantize_dropout : bool
        In training keep only the first ``1..R`` layers (chosen at random per
        batch, same on every DDP rank); dropped layers get code ``-1``.
    sync_codebook : bool
        All-reduce k-means and EMA statistics when ``torch.distributed`` is
        initialised with more than one process.
    standardize : bool
        Quantize per-dimension standardized vectors (mean and std measured by
        :meth:`init_codebooks`, kept as buffers; outputs are mapped back to the
        input scale). Whisper's hidden states have a few dimensions of very large
        variance; Euclidean k-means would spend the codes on them. Off = the paper.
    standardize_dims : int
        Standardize only the first N dimensions (0 = all), e.g. the value tap,
        leaving features appended on purpose at a chosen scale (the aggregator's
        log attention width) as they are.
    commitment_to_input : bool
        Let the commitment loss's gradient reach the module that made the vectors
        (the aggregator), as in the paper (True). False stops it at the quantizer's
        input: the aggregator then moves only for the decoder (straight-through) and
        its own losses. The cheapest way to lower the commitment loss is to make
        every word vector alike, which is how the codebooks collapse over training
        on the embedded corpus (RESULTS.md, session 6).
    projection_init : str
        What :meth:`init_codebooks` does to ``project_in``/``project_out`` (only
        when ``codebook_dim < input_dim``): ``"pca"`` sets them to the top
        ``codebook_dim`` principal directions of the given vectors and back, so the
        codebooks are fitted in a space that already reconstructs the input;
        ``"keep"`` leaves the random init (the paper). With random projections, the
        decoder's first straight-through gradients rewrite ``project_in`` and move
        its outputs away from the freshly fitted codes: layer 0 fell to one code in
        the first epoch (RESULTS.md, session 7).
    projection_whitening : float
        With ``projection_init="pca"``, divide each principal direction by its
        standard deviation to this power (and multiply it back in ``project_out``):
        0 = plain PCA (code space keeps the data's variances), 1 = whitened,
        0.5 = halfway (variances become standard deviations). Euclidean k-means
        spends its codes on the directions of largest variance, which hold the
        word's phonetic content; evening them out lets the codes reach the
        smaller directions where voice and prosody live (RESULTS.md, session 15).
    projection_trainable : bool
        Train ``project_in``/``project_out`` with the model (True, the paper). False
        keeps them where :meth:`init_codebooks` put them: the codes then live in a
        fixed space and only the codebooks (EMA) and the input move. Measured: with
        codebooks fitted on an untrained aggregator, a whitened layer 0 fell from 213
        codes to 8-15 on dev either way, so the projections were not what moved; the
        fix was fitting them after a no-VQ stage (RESULTS.md, session 15).

    Example
    -------
    >>> q = ResidualVQQuantizer(input_dim=16, num_quantizers=2, codebook_size=8, codebook_dim=4)
    >>> out = q(torch.randn(2, 5, 16), torch.tensor([5, 3]))
    >>> out.quantized.shape, out.codes.shape
    (torch.Size([2, 5, 16]), torch.Size([2, 5, 2]))
    """

    def __init__(
        self,
        input_dim: int,
        num_quantizers: int = 4,
        codebook_size: int = 512,
        codebook_dim: int = 256,
        decay: float = 0.99,
        commitment_weight: float = 1.0,
        kmeans_init: bool = True,
        kmeans_iters: int = 10,
        threshold_ema_dead_code: float = 2.0,
        quantize_dropout: bool = True,
        sync_codebook: bool = True,
        standardize: bool = False,
        standardize_dims: int = 0,
        commitment_to_input: bool = True,
        projection_init: str = "pca",
        projection_whitening: float = 0.0,
        projection_trainable: bool = True,
    ):
        super().__init__()
        from vector_quantize_pytorch import ResidualVQ

        for name, value in (
            ("input_dim", input_dim),
            ("num_quantizers", num_quantizers),
            ("codebook_size", codebook_size),
            ("codebook_dim", codebook_dim),
        ):
            if value < 1:
                raise ConfigError(f"rvq option {name} must be >= 1, got {value}.")
        if codebook_size < 2:
            raise ConfigError(f"rvq codebook_size must be >= 2, got {codebook_size}.")
        if not 0.0 <= decay < 1.0:
            raise ConfigError(f"rvq decay must be in [0, 1), got {decay}.")
        if threshold_ema_dead_code < 0 or commitment_weight < 0 or kmeans_iters < 0:
            raise ConfigError(
                "rvq threshold_ema_dead_code, commitment_weight and kmeans_iters must be >= 0."
            )
        self._input_dim = input_dim
        self._num_quantizers = num_quantizers
        self._codebook_size = codebook_size
        self.commitment_weight = float(commitment_weight)
        self.sync_codebook = sync_codebook
        self._sync_active = False
        self.rvq = ResidualVQ(
            dim=input_dim,
            num_quantizers=num_quantizers,
            codebook_size=codebook_size,
            codebook_dim=codebook_dim,
            decay=decay,
            commitment_weight=commitment_weight,
            kmeans_init=kmeans_init,
            kmeans_iters=kmeans_iters,
            threshold_ema_dead_code=threshold_ema_dead_code,
            quantize_dropout=quantize_dropout,
            # Plain straight-through as in TASTE; 1.32 defaults to the rotation trick.
            rotation_trick=False,
            # Turned on per forward by _configure_sync (see there).
            sync_codebook=False,
        )
        self._warned_uninitialised = False
        if not 0 <= standardize_dims <= input_dim:
            raise ConfigError(f"rvq standardize_dims must be in [0, input_dim={input_dim}], got {standardize_dims}.")
        if projection_init not in ("pca", "keep"):
            raise ConfigError(f"rvq projection_init must be 'pca' or 'keep', got {projection_init!r}.")
        self.projection_init = projection_init
        if not 0.0 <= projection_whitening <= 1.0:
            raise ConfigError(f"rvq projection_whitening must be in [0, 1], got {projection_whitening}.")
        if projection_whitening and projection_init != "pca":
            raise ConfigError("rvq projection_whitening scales the principal directions that projection_init 'pca' "
                              "sets: use projection_init: pca, or projection_whitening: 0.")
        self.projection_whitening = float(projection_whitening)
        self.projection_trainable = bool(projection_trainable)
        if not self.projection_trainable:
            self.rvq.project_in.requires_grad_(False)
            self.rvq.project_out.requires_grad_(False)
        self.standardize = bool(standardize)
        self.commitment_to_input = bool(commitment_to_input)
        self.standardize_dims = int(standardize_dims) or input_dim
        if self.standardize:  # identity until init_codebooks measures the data (saved with the weights)
            self.register_buffer("input_mean", torch.zeros(input_dim))
            self.register_buffer("input_std", torch.ones(input_dim))

    # ------------------------------------------------------------------ properties

    @property
    def input_dim(self):
        return self._input_dim

    @property
    def num_quantizers(self):
        return self._num_quantizers

    @property
    def codebook_size(self):
        return self._codebook_size

    @property
    def codebooks(self):
        """``(R, K, codebook_dim)`` current codebooks (a view; do not edit)."""
        return self.rvq.codebooks

    @property
    def initialised(self):
        """False until k-means init ran (first training forward)."""
        return all(bool(layer._codebook.initted) for layer in self.rvq.layers)

    # ------------------------------------------------------------------ helpers

    def _to_code_space(self, x):
        """Standardize ``(..., D)`` inputs (identity unless ``standardize``)."""
        return (x - self.input_mean.to(x.dtype)) / self.input_std.to(x.dtype) if self.standardize else x

    def _from_code_space(self, x):
        return x * self.input_std.to(x.dtype) + self.input_mean.to(x.dtype) if self.standardize else x

    def _configure_sync(self):
        """Point the codebooks' reduce/sample functions at torch.distributed or not.

        The library fixes ``use_ddp`` and its all-reduce functions when the module
        is built; a model built before ``init_process_group`` would never sync, and
        one built under a group would crash when used without it. Deciding here,
        per forward, makes ``sync_codebook`` mean "sync whenever there are ranks".
        """
        from vector_quantize_pytorch import vector_quantize_pytorch as vqp

        active = bool(
            self.sync_codebook
            and dist.is_available()
            and dist.is_initialized()
            and dist.get_world_size() > 1
        )
        if active == self._sync_active:
            return
        sample = vqp.sample_vectors_distributed if active else vqp.batched_sample_vectors
        reduce = dist.all_reduce if active else vqp.noop
        for layer in self.rvq.layers:
            codebook = layer._codebook
            codebook.use_ddp = active
            codebook.sample_fn = codebook.replace_sample_fn = sample
            codebook.kmeans_all_reduce_fn = codebook.all_reduce_fn = reduce
        self._sync_active = active

    def _check(self, x, lengths):
        if x.dim() != 3 or x.shape[-1] != self.input_dim:
            raise InputError(
                f"rvq expects x of shape (B, M, {self.input_dim}), got {tuple(x.shape)}; "
                "check that input_dim matches the aggregator's output_dim."
            )
        lengths = torch.as_tensor(lengths, device=x.device).long()
        if lengths.shape != (x.shape[0],) or (lengths < 0).any() or (lengths > x.shape[1]).any():
            raise InputError(
                f"rvq lengths must be (B,)={x.shape[0]} absolute counts in [0, {x.shape[1]}], "
                f"got {lengths.tolist()}."
            )
        return lengths_to_mask(lengths, x.shape[1])

    def _empty_codes(self, mask):
        """``(B, M, R)`` codes that are all ``-1``."""
        shape = (*mask.shape, self.num_quantizers)
        return torch.full(shape, -1, dtype=torch.long, device=mask.device)

    def _uninitialised(self, x, mask):
        """Eval/encode before any training: the library would run k-means on this
        (evaluation) data, i.e. change state. Use the all-zero codebook as it is:
        every code is 0, which is what nearest-neighbour search returns there."""
        if not self._warned_uninitialised:
            logger.warning(
                "rvq codebooks are not initialised (no training forward and no checkpoint "
                "loaded); every vector gets code 0."
            )
            self._warned_uninitialised = True
        codes = self._empty_codes(mask)
        codes[mask] = 0
        return codes

    def _metrics(self, codes):
        """Per-layer usage and perplexity from ``(N, R)`` codes (``-1`` = dropped)."""
        metrics = {"bits_per_vector": self.bits_per_vector}
        with torch.no_grad():
            for r in range(codes.shape[1]):
                layer = codes[:, r]
                layer = layer[layer >= 0]
                if layer.numel() == 0:  # dropped this batch: no statistic to report
                    continue
                hist = torch.bincount(layer, minlength=self.codebook_size).float()
                prob = hist / hist.sum()
                entropy = -(prob[prob > 0] * prob[prob > 0].log()).sum()
                metrics[f"rvq_usage_l{r}"] = float((hist > 0).float().mean())
                metrics[f"rvq_perplexity_l{r}"] = float(entropy.exp())
        return metrics

    def _eval_commitment(self, flat, codes):
        """Commitment loss in eval mode, which the library only computes in training
        (validation loss would otherwise drop this term)."""
        residual = self.rvq.project_in(flat)
        all_codes = self.rvq.get_codes_from_indices(codes)  # (R, 1, N, d), 0 at -1
        loss = flat.new_zeros(())
        for r in range(self.num_quantizers):
            if (codes[..., r] < 0).all():
                break
            loss = loss + torch.nn.functional.mse_loss(all_codes[r], residual)
            residual = residual - all_codes[r]
        return loss

    # ------------------------------------------------------------------ API

    def forward(self, x, lengths):
        """Quantize the valid positions of ``x``.

        Arguments
        ---------
        x : torch.Tensor
            ``(B, M, D)`` vectors.
        lengths : torch.Tensor
            ``(B,)`` valid positions per row.

        Returns
        -------
        QuantizerOutput
            ``quantized (B, M, D)`` (zeros at padding, straight-through gradients
            in training), ``codes (B, M, R)`` (``-1`` at padding and at layers
            dropped by quantizer dropout), ``loss`` = ``commitment_weight`` x
            commitment MSE averaged over valid positions and summed over layers,
            ``metrics`` (``rvq_usage_l{r}``, ``rvq_perplexity_l{r}``,
            ``bits_per_vector``).
        """
        mask = self._check(x, lengths)
        B, M, _ = x.shape
        quantized = x.new_zeros(B, M, self.input_dim)
        codes = self._empty_codes(mask)
        if not mask.any():  # nothing valid: nothing to quantize or learn from
            metrics = {"bits_per_vector": self.bits_per_vector}
            return QuantizerOutput(quantized, codes, x.new_zeros(()), metrics)
        if self.training:
            self._configure_sync()
        flat = self._to_code_space(x[mask].unsqueeze(0))  # (1, N, D): padding never reaches the library
        if not self.training and not self.initialised:
            codes = self._uninitialised(x, mask)
            quantized = self.decode(codes)
            loss = self.commitment_weight * self._eval_commitment(flat, codes[mask].unsqueeze(0))
            return QuantizerOutput(quantized, codes, loss, self._metrics(codes[mask]))
        if self.training and not self.commitment_to_input:
            # The library sees a detached copy (its commitment and projections train as usual);
            # the decoder's gradient still reaches the input, straight through.
            q, idx, layer_losses = self.rvq(flat.detach())
            q = q + (flat - flat.detach())
        else:
            q, idx, layer_losses = self.rvq(flat)
        q = self._from_code_space(q)
        if self.training:
            # The library already multiplied each layer's MSE by commitment_weight.
            loss = layer_losses.sum()
        else:
            loss = self.commitment_weight * self._eval_commitment(flat, idx)
        quantized = quantized.to(q.dtype)
        quantized[mask] = q[0]
        codes[mask] = idx[0]
        return QuantizerOutput(quantized, codes, loss, self._metrics(idx[0]))

    @torch.no_grad()
    def init_codebooks(self, vectors, iters=30, seed=0):
        """Initialize every codebook by k-means on many vectors, residual by residual.

        The library's own k-means init runs on the first training batch alone: a
        batch of ~150 word vectors for 256 codes starts the codebooks with
        duplicated codes, which the EMA then never separates. Called before
        training with the aggregator outputs of a pass over the training set (or
        several batches), each layer is fitted on the residuals the previous
        layers leave, so the codebooks start distinct and spread over the data.

        Arguments
        ---------
        vectors : torch.Tensor
            ``(N, D)`` aggregator outputs (valid positions only), ``N >= codebook_size``.
        iters : int
            Lloyd iterations per layer.
        seed : int
            Seed of the k-means++ draws (deterministic).

        Returns
        -------
        dict
            ``{"vectors": N, "perplexity_l{r}": ...}``: how evenly the fitted
            codes split the given vectors, per layer; with ``projection_init="pca"``
            also ``projection_variance_kept`` (share of the variance the
            ``codebook_dim`` principal directions keep).

        Raises
        ------
        InputError
            Wrong shape, non-finite values, or fewer vectors than codes.
        """
        from taste_toolkit.kmeans import assign, kmeans

        if vectors.dim() != 2 or vectors.shape[-1] != self.input_dim:
            raise InputError(f"init_codebooks expects (N, {self.input_dim}) vectors, got {tuple(vectors.shape)}.")
        if vectors.shape[0] < self.codebook_size:
            raise InputError(
                f"init_codebooks got {vectors.shape[0]} vectors for codebooks of {self.codebook_size}: "
                "collect more batches (rvq_init_batches) so that every code starts on a distinct vector."
            )
        device = self.codebooks.device
        vectors = vectors.to(device).float()
        if self.standardize:
            k = self.standardize_dims
            self.input_mean.zero_()
            self.input_std.fill_(1.0)
            self.input_mean[:k] = vectors[:, :k].mean(0)
            self.input_std[:k] = vectors[:, :k].std(0).clamp(min=1e-5)
        report = {"vectors": int(vectors.shape[0])}
        if self.projection_init == "pca" and isinstance(self.rvq.project_in, torch.nn.Linear):
            report["projection_variance_kept"] = self._init_projection_pca(self._to_code_space(vectors))
        residual = self.rvq.project_in(self._to_code_space(vectors))
        for r, layer in enumerate(self.rvq.layers):
            book = layer._codebook
            centroids = kmeans(residual, self.codebook_size, iters=iters, seed=seed + r)
            labels = assign(residual, centroids)
            counts = torch.bincount(labels, minlength=self.codebook_size).to(centroids)
            book.embed.data.copy_(centroids.view_as(book.embed))
            # EMA statistics as the library's own init leaves them: sum = mean * count.
            book.embed_avg.data.copy_((centroids * counts[:, None]).view_as(book.embed_avg))
            book.cluster_size.data.copy_(counts.view_as(book.cluster_size))
            book.initted.data.copy_(torch.ones_like(book.initted))
            prob = counts / counts.sum()
            prob = prob[prob > 0]
            report[f"perplexity_l{r}"] = round(float(torch.exp(-(prob * prob.log()).sum())), 2)
            residual = residual - centroids[labels]
        return report

    @torch.no_grad()
    def _init_projection_pca(self, vectors):
        """Set ``project_in`` to the top principal directions of ``vectors (N, D)``
        (centred) and ``project_out`` to the way back; returns the variance share kept.

        With ``projection_whitening`` p > 0, direction i is divided by ``std_i ** p``
        in ``project_in`` and multiplied by it in ``project_out``: still an exact
        round trip on the kept subspace, but the code space's variances become
        ``std_i ** (2 - 2p)``."""
        project_in, project_out = self.rvq.project_in, self.rvq.project_out
        d = project_in.out_features
        mean = vectors.mean(0)
        centred = vectors - mean
        # Economy SVD of the (N, D) data: rows of vt are the principal directions.
        _, singular, vt = torch.linalg.svd(centred, full_matrices=False)
        directions = vt[:d]  # (d, D); fewer than d when N < d (the rest stays zero)
        std = singular[: directions.shape[0]] / max(vectors.shape[0] - 1, 1) ** 0.5
        # Directions of (near-)zero variance are not scaled up: their std is floored at 1e-3 of the largest.
        scale = std.clamp(min=1e-3 * float(std.max().clamp(min=1e-12))).pow(self.projection_whitening)
        weight = torch.zeros_like(project_in.weight)
        weight[: directions.shape[0]] = directions.to(weight)
        back = weight.t().clone()
        weight[: directions.shape[0]] /= scale[:, None].to(weight)
        back[:, : directions.shape[0]] *= scale[None].to(weight)
        project_in.weight.copy_(weight)
        project_out.weight.copy_(back)
        if project_in.bias is not None:
            project_in.bias.copy_(-(weight @ mean.to(weight)))
        if project_out.bias is not None:
            project_out.bias.copy_(mean.to(project_out.bias))
        energy = singular.pow(2)
        return round(float(energy[:d].sum() / energy.sum().clamp(min=1e-12)), 4)

    @torch.no_grad()
    def encode(self, x, lengths):
        """Codes ``(B, M, R)`` of ``x (B, M, D)``, ``-1`` at padding.

        Always uses every layer and never updates codebooks (the module is put in
        eval mode for the call, so neither EMA nor dropout apply).
        """
        mask = self._check(x, lengths)
        codes = self._empty_codes(mask)
        if not mask.any():
            return codes
        if not self.initialised:
            return self._uninitialised(x, mask)
        was_training = self.rvq.training
        self.rvq.eval()
        try:
            _, idx, _ = self.rvq(self._to_code_space(x[mask].unsqueeze(0)))
        finally:
            self.rvq.train(was_training)
        codes[mask] = idx[0]
        return codes

    def decode(self, codes):
        """Vectors ``(B, M, D)`` from codes ``(B, M, R')`` with ``R' <= R``.

        ``-1`` (and missing trailing layers) contribute nothing; positions whose
        codes are all ``-1`` (padding) decode to zeros. Matches the eval-mode
        ``forward`` exactly: same layer-by-layer summation order, and the output
        projection runs on the same ``(1, N, d)`` gathered rows.
        """
        codes = torch.as_tensor(codes).long()
        if codes.dim() != 3 or not 1 <= codes.shape[-1] <= self.num_quantizers:
            raise InputError(
                f"rvq decode expects codes (B, M, R) with 1 <= R <= {self.num_quantizers}, "
                f"got shape {tuple(codes.shape)}."
            )
        if ((codes < -1) | (codes >= self.codebook_size)).any():
            raise InputError(
                f"rvq codes must be in [0, {self.codebook_size}) or -1, got values in "
                f"[{int(codes.min())}, {int(codes.max())}]."
            )
        codes = codes.to(self.codebooks.device)
        B, M, R = codes.shape
        if R < self.num_quantizers:  # coarse codes: pad the missing fine layers
            codes = torch.nn.functional.pad(codes, (0, self.num_quantizers - R), value=-1)
        project_out = self.rvq.project_out
        dtype = project_out.weight.dtype if hasattr(project_out, "weight") else self.codebooks.dtype
        out = torch.zeros(B, M, self.input_dim, device=codes.device, dtype=dtype)
        present = (codes >= 0).any(-1)
        if not present.any():
            return out
        layer_codes = self.rvq.get_codes_from_indices(codes[present].unsqueeze(0))  # (R, 1, N, d)
        summed = torch.zeros_like(layer_codes[0])
        for r in range(self.num_quantizers):  # same order as the forward's residual loop
            summed = summed + layer_codes[r]
        out[present] = self._from_code_space(project_out(summed)[0]).to(dtype)
        return out
