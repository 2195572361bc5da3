"""``mel_kmeans`` units plugin: k-means over stacked log-mel frames (no download).

A stand-in for CosyVoice's S3 tokens that needs nothing but the training audio:
log-mel frames at ``sample_rate / hop_length`` Hz (50 Hz by default), ``stack``
consecutive frames concatenated into one vector (25 Hz by default), clustered
by k-means after per-dimension standardization. Each unit keeps its centroid in
raw log-mel space (``unit_log_mels``), so a vocoder can turn a unit sequence
back into a mel spectrogram and invert it (Griffin-Lim).

Log-mel definition (a vocoder must use the same one): magnitude (power 1)
STFT with a Hann window of ``n_fft`` samples, hop ``hop_length``,
``center=True`` with zero padding, HTK mel scale, no filter normalization,
``f_min=0``, ``f_max=sample_rate/2``, then ``log(clamp(mel, 1e-5))``; see
:attr:`MelKMeansUnits.mel_options`.

Unit count
----------
For a waveform of ``n`` valid samples there are exactly
``S = n // (hop_length * stack) + 1`` units. Unit ``u`` is made of mel frames
``u*stack ... u*stack + stack - 1`` (frame ``f`` is centred on sample
``f * hop_length``) of the waveform extended with zeros, so the tail is never
dropped: the last unit covers the last samples and some trailing silence.
Samples beyond ``wav_lengths`` are zeroed before the STFT, so an utterance gives
exactly the same units alone or padded in a batch.
"""

import torch

from taste_toolkit.errors import ConfigError, InputError
from taste_toolkit.interfaces import UnitExtractor
from taste_toolkit.kmeans import assign, kmeans
from taste_toolkit.registry import register

NOT_FITTED = "fit the unit extractor first (taste prepares units automatically)"


def random_subset(vector_batches, limit, seed):
    """A seeded uniform subset of at most ``limit`` rows of a stream of matrices.

    Every row gets a random key from a generator seeded with ``seed`` and the
    ``limit`` smallest keys win; the pool is pruned whenever it exceeds
    ``2 * limit`` rows, so memory stays bounded whatever the stream length.

    Arguments
    ---------
    vector_batches : iterable of torch.Tensor
        ``(N_i, D)`` matrices (one per utterance), moved to CPU.
    limit : int
        Maximum rows kept.
    seed : int
        Seed of the keys.

    Returns
    -------
    kept : torch.Tensor or None
        ``(min(limit, sum N_i), D)`` (None for an empty stream).
    seen : int
        ``sum N_i``, the rows seen.
    """
    generator = torch.Generator().manual_seed(seed)
    kept, keys, seen = None, None, 0
    for feats in vector_batches:
        feats = feats.cpu()
        seen += feats.shape[0]
        new_keys = torch.rand(feats.shape[0], generator=generator)
        kept = feats if kept is None else torch.cat([kept, feats])
        keys = new_keys if keys is None else torch.cat([keys, new_keys])
        if kept.shape[0] > 2 * limit:
            order = torch.argsort(keys, stable=True)[:limit]
            kept, keys = kept[order], keys[order]
    if kept is not None and kept.shape[0] > limit:
        kept = kept[torch.argsort(keys, stable=True)[:limit]]
    return kept, seen


def standardized_kmeans(vectors, num_units, iters, seed):
    """Per-dimension standardization then k-means.

    Arguments
    ---------
    vectors : torch.Tensor
        ``(N, D)`` raw vectors, ``N >= num_units``.

    Returns
    -------
    mean, std : torch.Tensor
        ``(D,)`` standardization (``std`` floored at 1e-5).
    centroids : torch.Tensor
        ``(num_units, D)`` in standardized space.
    """
    mean = vectors.mean(dim=0)
    std = vectors.std(dim=0).clamp(min=1e-5)
    centroids = kmeans((vectors - mean) / std, num_units, iters=iters, seed=seed)
    return mean, std, centroids


@register("units", "mel_kmeans")
class MelKMeansUnits(UnitExtractor):
    """k-means units over stacked log-mel frames (default 256 units at 25 Hz).

    Arguments
    ---------
    num_units : int
        Number of clusters (unit vocabulary V).
    sample_rate : int
        Expected waveform sample rate (Hz).
    n_mels : int
        Mel bands.
    n_fft : int
        STFT size and Hann window length (samples).
    hop_length : int
        Mel frame hop (samples); 320 at 16 kHz = 50 Hz frames.
    stack : int
        Consecutive mel frames per unit; unit rate = sample_rate / (hop_length * stack).
    fit_frames : int
        Maximum number of unit vectors used by k-means (a uniform random subset
        of all vectors of the fit data, drawn with ``seed``).
    kmeans_iters : int
        Lloyd iterations.
    seed : int
        Seed of the subsampling and k-means.

    Example
    -------
    >>> import torch
    >>> ext = MelKMeansUnits(num_units=4, stack=1)
    >>> g = torch.Generator().manual_seed(0)
    >>> ext.fit([torch.randn(16000, generator=g) * s for s in (0.01, 0.1, 1.0)])
    >>> units, lengths = ext(torch.zeros(2, 16000), torch.tensor([16000, 8000]))
    >>> units.shape, lengths.tolist()
    (torch.Size([2, 51]), [51, 26])
    """

    needs_fit = True

    def __init__(
        self,
        num_units: int = 256,
        sample_rate: int = 16000,
        n_mels: int = 80,
        n_fft: int = 1024,
        hop_length: int = 320,
        stack: int = 2,
        fit_frames: int = 200000,
        kmeans_iters: int = 30,
        seed: int = 0,
    ):
        super().__init__()
        import torchaudio

        for name, value in (
            ("num_units", num_units),
            ("sample_rate", sample_rate),
            ("n_mels", n_mels),
            ("n_fft", n_fft),
            ("hop_length", hop_length),
            ("stack", stack),
            ("fit_frames", fit_frames),
        ):
            if value < 1:
                raise ConfigError(f"{self.registry_name} option {name} must be >= 1, got {value}.")
        if fit_frames < num_units:
            raise ConfigError(
                f"{self.registry_name} fit_frames ({fit_frames}) must be >= num_units ({num_units})."
            )
        self.sample_rate = sample_rate
        self.n_mels, self.hop_length, self.stack = n_mels, hop_length, stack
        self._num_units = num_units
        #: Everything needed to recompute (or invert) the same log-mel.
        self.mel_options = dict(
            sample_rate=sample_rate,
            n_fft=n_fft,
            win_length=n_fft,
            hop_length=hop_length,
            n_mels=n_mels,
            f_min=0.0,
            f_max=sample_rate / 2,
            power=1.0,
            center=True,
            pad_mode="constant",
            mel_scale="htk",
            norm=None,
            log_floor=1e-5,
        )
        mel_kwargs = {k: v for k, v in self.mel_options.items() if k != "log_floor"}
        self.mel = torchaudio.transforms.MelSpectrogram(**mel_kwargs)
        dim = stack * n_mels
        # Fitted state: buffers so that state_dict/safetensors carry it.
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.register_buffer("centroids", torch.zeros(num_units, dim))
        self.register_buffer("unit_log_mels", torch.zeros(num_units, stack, n_mels))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @property
    def num_units(self) -> int:
        return self._num_units

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / (self.hop_length * self.stack)

    @property
    def samples_per_unit(self) -> int:
        """Waveform samples per unit (``hop_length * stack``)."""
        return self.hop_length * self.stack

    def num_frames(self, num_samples):
        """Units for ``num_samples`` valid samples: ``n // (hop * stack) + 1``.

        Works on ints and on long tensors ``(B,)``.
        """
        return num_samples // self.samples_per_unit + 1

    def features(self, wavs, wav_lengths):
        """Stacked log-mel vectors (not standardized).

        Arguments
        ---------
        wavs : torch.Tensor
            ``(B, L)`` float waveforms at ``sample_rate``.
        wav_lengths : torch.Tensor
            ``(B,)`` valid samples (absolute, >= 1).

        Returns
        -------
        feats : torch.Tensor
            ``(B, S, stack * n_mels)``; vector ``u`` is frames ``u*stack ..
            u*stack+stack-1`` concatenated frame by frame (reshape to
            ``(B, S, stack, n_mels)`` to get them back).
        lengths : torch.Tensor
            ``(B,)`` valid units, ``num_frames(wav_lengths)``.
        """
        wavs, wav_lengths = self._check_inputs(wavs, wav_lengths)
        lengths = self.num_frames(wav_lengths)
        max_units = int(lengths.max())
        # Zero the padding and extend every row to a whole number of units, so
        # each frame sees the same samples alone or in a batch.
        total = max_units * self.samples_per_unit
        positions = torch.arange(wavs.shape[1], device=wavs.device)
        wavs = wavs * (positions.unsqueeze(0) < wav_lengths.unsqueeze(1)).to(wavs.dtype)
        if wavs.shape[1] < total:
            wavs = torch.nn.functional.pad(wavs, (0, total - wavs.shape[1]))
        wavs = wavs[:, :total]
        log_mel = self.mel(wavs).clamp(min=self.mel_options["log_floor"]).log()  # (B, M, F)
        frames = log_mel.transpose(1, 2)[:, : max_units * self.stack]  # (B, F', M)
        feats = frames.reshape(frames.shape[0], max_units, self.stack * self.n_mels)
        return feats, lengths

    def cluster_features(self, wavs, wav_lengths):
        """The vectors k-means clusters, ``(B, S, D)`` and ``lengths (B,)``.

        Here the stacked log-mels of :meth:`features`; subclasses clustering
        other features (``whisper_kmeans``) override this and reuse ``forward``.
        """
        return self.features(wavs, wav_lengths)

    def _check_inputs(self, wavs, wav_lengths):
        if not isinstance(wavs, torch.Tensor) or wavs.dim() != 2:
            raise InputError(
                f"{self.registry_name} expects waveforms (B, L), got "
                f"{getattr(wavs, 'shape', type(wavs))}."
            )
        if wav_lengths is None:
            wav_lengths = torch.full((wavs.shape[0],), wavs.shape[1], dtype=torch.long)
        wav_lengths = torch.as_tensor(wav_lengths, device=wavs.device).long()
        if wav_lengths.shape != (wavs.shape[0],):
            raise InputError(f"wav_lengths must be ({wavs.shape[0]},), got {tuple(wav_lengths.shape)}.")
        if wavs.shape[0] == 0:
            raise InputError(f"{self.registry_name} got an empty batch.")
        if (wav_lengths < 1).any() or (wav_lengths > wavs.shape[1]).any():
            raise InputError(
                f"wav_lengths must be absolute sample counts in [1, {wavs.shape[1]}], "
                f"got {wav_lengths.tolist()} (relative lengths? convert them first)."
            )
        return wavs.float(), wav_lengths

    @torch.no_grad()
    def fit(self, waveforms):
        """Fit standardization and centroids on an iterable of 1-D waveforms.

        At most ``fit_frames`` unit vectors are kept (see :func:`random_subset`:
        a uniform sample over all the data that never holds more than about
        ``2 * fit_frames`` vectors in memory).
        """
        kept, seen = random_subset(
            (self.features(wav.unsqueeze(0), torch.tensor([wav.numel()], device=wav.device))[0][0]
             for wav in self._fit_waveforms(waveforms)),
            self.options["fit_frames"],
            self.options["seed"],
        )
        self._check_fit_count(kept, seen)
        mean, std, centroids = standardized_kmeans(
            kept, self.num_units, self.options["kmeans_iters"], self.options["seed"]
        )
        self.mean.copy_(mean)
        self.std.copy_(std)
        self.centroids.copy_(centroids)
        # Centroids in raw log-mel space: a linear map of the standardized mean
        # equals the mean of the raw vectors of each cluster.
        raw = centroids * std + mean
        self.unit_log_mels.copy_(raw.reshape(self.num_units, self.stack, self.n_mels))
        self.fitted.fill_(True)

    def _fit_waveforms(self, waveforms):
        """Checked 1-D float32 waveforms on the extractor's device (a generator)."""
        device = self.mean.device
        for wav in waveforms:
            wav = torch.as_tensor(wav, dtype=torch.float32, device=device)
            if wav.dim() != 1 or wav.numel() == 0:
                raise InputError(
                    f"{self.registry_name}.fit expects non-empty 1-D waveforms, got shape {tuple(wav.shape)}."
                )
            yield wav

    def _check_fit_count(self, kept, seen):
        if kept is None or kept.shape[0] < self.num_units:
            raise InputError(
                f"{self.registry_name} needs at least num_units={self.num_units} unit frames to fit, "
                f"got {seen}; give more audio (about {self.num_units / self.frame_rate:.0f} s) "
                "or lower num_units."
            )

    @torch.no_grad()
    def forward(self, wavs, wav_lengths):
        """Units of a batch.

        Arguments
        ---------
        wavs : torch.Tensor
            ``(B, L)`` float waveforms at ``sample_rate``.
        wav_lengths : torch.Tensor
            ``(B,)`` valid samples (absolute).

        Returns
        -------
        units : torch.Tensor
            ``(B, S)`` long in ``[0, num_units)``; padded positions are 0.
        lengths : torch.Tensor
            ``(B,)`` valid units, ``wav_lengths // (hop_length * stack) + 1``.
        """
        if not bool(self.fitted):
            raise ConfigError(NOT_FITTED)
        feats, lengths = self.cluster_features(wavs, wav_lengths)
        batch, steps, dim = feats.shape
        standardized = (feats.reshape(-1, dim) - self.mean) / self.std
        units = assign(standardized, self.centroids).reshape(batch, steps)
        valid = torch.arange(steps, device=units.device).unsqueeze(0) < lengths.unsqueeze(1)
        return units.masked_fill(~valid, 0), lengths
