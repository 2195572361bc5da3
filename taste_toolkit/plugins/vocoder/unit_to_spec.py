"""``unit_to_spec`` vocoder: units -> conv net -> linear log-magnitude STFT -> Griffin-Lim.

A small non-causal convolutional network, trained in a few CPU minutes on the
training audio (:func:`taste_toolkit.training.unit_vocoder.fit_unit_vocoder`),
maps a unit sequence to the *linear* log-magnitude STFT of the speech, and
Griffin-Lim (with momentum) recovers a phase. Compared with ``griffin_lim``
(one mean log-mel per unit, inverted through an 80-band mel), the network sees
about +-1.5 s of unit context (38 units each side with the default dilations),
so transitions are smooth instead of piecewise-constant and a unit is rendered
according to its neighbours, and there is no mel -> linear least-squares step.
Griffin-Lim from the TRUE linear magnitude (n_fft 512 or 1024, hop 160, 64
iterations) is as intelligible as the source for the offline ASR, so the error
left is the network's.

Network
-------
``Embedding(V, dim)`` -> residual dilated conv blocks at the unit rate ->
repeat each unit ``frames_per_unit`` times -> residual conv blocks at the
STFT frame rate -> 1x1 conv to ``n_fft // 2 + 1`` log-magnitudes (natural log
of ``|STFT|``, floored at ``log_floor``). Every block is followed by zeroing the
padded positions, so an utterance sees the same zeros beyond its end alone or
padded in a batch: :meth:`UnitToSpecVocoder.spectrogram` is batch invariant up
to float rounding; :meth:`UnitToSpecVocoder.forward` runs the network and
Griffin-Lim (fixed seed) one utterance at a time, so a waveform is bit-identical
alone or in any batch.

Length convention
-----------------
Unit ``u`` owns samples ``[u * samples_per_unit, (u + 1) * samples_per_unit)``
and STFT frames ``u * fpu .. u * fpu + fpu - 1`` (``fpu = samples_per_unit //
hop_length``; frame ``f`` is centred on sample ``f * hop_length``), so ``S``
units give exactly ``S * samples_per_unit`` samples, as ``griffin_lim`` and
``unit_hifigan`` (``mel_kmeans``: 1-640 samples longer than the source).

Units identity
--------------
The vocoder records ``num_units`` and the fingerprint of the fitted unit
extractor it was trained for (:func:`taste_toolkit.data.unit_cache.extractor_fingerprint`);
:meth:`UnitToSpecVocoder.check_units` refuses another extractor with a clear
message (``TasteTokenizer`` calls it when both are given).
"""

import json

import torch

from taste_toolkit.errors import ConfigError, InputError, MissingResourceError
from taste_toolkit.interfaces import Vocoder
from taste_toolkit.nn.unit_to_spec_net import UnitToSpecNet
from taste_toolkit.registry import register


@register("vocoder", "unit_to_spec")
class UnitToSpecVocoder(Vocoder):
    """Trained unit -> linear-spectrogram network + Griffin-Lim phase recovery.

    Arguments
    ---------
    num_units : int
        Unit vocabulary V; valid ids are ``[0, V)``.
    units_fingerprint : str
        Fingerprint of the fitted unit extractor the weights were trained for
        (``""``: unknown, only ``num_units`` is checked).
    sample_rate : int
        Output rate (Hz).
    samples_per_unit : int
        Output samples per unit (640 = 25 Hz units at 16 kHz).
    n_fft, hop_length : int
        STFT size (Hann window of ``n_fft``) and hop; ``hop_length`` must divide
        ``samples_per_unit``.
    dim : int
        Channels of the network.
    unit_dilations, frame_dilations : list of int
        Residual blocks at the unit rate and at the frame rate.
    kernel_size : int
        Odd conv kernel.
    dropout : float
        Dropout in the residual blocks while training (the data sets are small).
    log_floor : float
        Magnitude floor before ``log`` (the training target's silence level).
    n_iter, momentum : int, float
        Griffin-Lim iterations and fast-GL momentum.
    seed : int
        Seed of Griffin-Lim's random initial phase (the same for every utterance).
    speaker_dim : int
        Width of the utterance-level speaker vector the network is conditioned on
        (the tokenizer's speaker plugin computes it from the source audio, as
        CosyVoice's x-vector); 0: units alone. Units carry what is said, not the
        voice, so without it the network predicts the average of all training
        voices' formants.

    Example
    -------
    >>> voc = UnitToSpecVocoder(num_units=8, dim=16, unit_dilations=[1], frame_dilations=[1], n_iter=2)
    >>> wavs, lengths = voc(torch.tensor([[1, 2, 3], [4, 5, 0]]), torch.tensor([3, 2]))
    >>> wavs.shape, lengths.tolist()
    (torch.Size([2, 1920]), [1920, 1280])
    """

    def __init__(
        self,
        num_units: int = 256,
        units_fingerprint: str = "",
        sample_rate: int = 16000,
        samples_per_unit: int = 640,
        n_fft: int = 512,
        hop_length: int = 160,
        dim: int = 128,
        unit_dilations: list = (1, 2, 4, 8, 16, 1, 2, 4),
        frame_dilations: list = (1,),
        kernel_size: int = 3,
        dropout: float = 0.1,
        log_floor: float = 1e-5,
        n_iter: int = 64,
        momentum: float = 0.99,
        seed: int = 0,
        speaker_dim: int = 0,
    ):
        super().__init__()
        unit_dilations = [int(d) for d in unit_dilations]
        frame_dilations = [int(d) for d in frame_dilations]
        for name, value in (
            ("num_units", num_units), ("sample_rate", sample_rate), ("samples_per_unit", samples_per_unit),
            ("n_fft", n_fft), ("hop_length", hop_length), ("dim", dim), ("n_iter", n_iter),
        ):  # fmt: skip
            if value < 1:
                raise ConfigError(f"unit_to_spec option {name} must be >= 1, got {value}.")
        if samples_per_unit % hop_length:
            raise ConfigError(
                f"unit_to_spec hop_length {hop_length} must divide samples_per_unit {samples_per_unit} "
                "(a whole number of STFT frames per unit), e.g. 160 for 640."
            )
        if kernel_size < 1 or kernel_size % 2 == 0 or any(d < 1 for d in unit_dilations + frame_dilations):
            raise ConfigError(
                f"unit_to_spec needs an odd kernel_size and dilations >= 1, got {kernel_size}, "
                f"{unit_dilations}, {frame_dilations}."
            )
        if speaker_dim < 0:
            raise ConfigError(f"unit_to_spec option speaker_dim must be >= 0 (0: no speaker), got {speaker_dim}.")
        if not 0 <= dropout < 1 or not 0 <= momentum < 1 or log_floor <= 0 or hop_length > n_fft:
            raise ConfigError(
                "unit_to_spec needs 0 <= dropout < 1, 0 <= momentum < 1, log_floor > 0 and hop_length "
                f"<= n_fft; got dropout={dropout}, momentum={momentum}, log_floor={log_floor}, "
                f"hop_length={hop_length}, n_fft={n_fft}."
            )
        self.unit_dilations, self.frame_dilations = unit_dilations, frame_dilations
        self.num_units = num_units
        self.units_fingerprint = str(units_fingerprint)
        self.samples_per_unit = samples_per_unit
        self.frames_per_unit = samples_per_unit // hop_length
        self._sample_rate = sample_rate
        self.net = UnitToSpecNet(
            num_units, n_fft // 2 + 1, self.frames_per_unit, dim, unit_dilations, frame_dilations, kernel_size,
            dropout, speaker_dim,
        )
        self.speaker_dim = int(speaker_dim)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    @property
    def sample_rate(self) -> int:
        return self._sample_rate

    @property
    def receptive_field_units(self) -> int:
        """Units on each side that can change a unit's output (the network's reach, rounded up)."""
        half = (self.options["kernel_size"] - 1) // 2
        frames = half * sum(self.frame_dilations)
        return half * sum(self.unit_dilations) + -(-frames // self.frames_per_unit)

    def resolve_options(self, options):
        """Record plain data: the fingerprint as a string, the dilations as lists of int."""
        return dict(options, units_fingerprint=self.units_fingerprint, unit_dilations=list(self.unit_dilations),
                    frame_dilations=list(self.frame_dilations))

    # ------------------------------------------------------------ identity

    def check_units(self, extractor):
        """Raise ConfigError unless ``extractor`` is the unit extractor these weights were trained for.

        Arguments
        ---------
        extractor : UnitExtractor
            A fitted unit extractor (its count and fingerprint are compared).
        """
        from taste_toolkit.data.unit_cache import extractor_fingerprint

        count = int(extractor.num_units)
        if count != self.num_units:
            raise ConfigError(
                f"The unit_to_spec vocoder was trained for {self.num_units} units but the unit "
                f"extractor has {count}; train a vocoder for these units (fit_unit_vocoder)."
            )
        if self.units_fingerprint:
            theirs = extractor_fingerprint(extractor)
            if theirs != self.units_fingerprint:
                raise ConfigError(
                    f"The unit_to_spec vocoder was trained for other units (fingerprint "
                    f"{self.units_fingerprint}, the unit extractor's is {theirs}): the same count but "
                    "other clusters. Train a vocoder for these units (fit_unit_vocoder)."
                )

    # ------------------------------------------------------------ STFT

    def log_magnitude(self, wav):
        """Training target: natural-log ``|STFT|`` frames of a waveform.

        Arguments
        ---------
        wav : torch.Tensor
            ``(B, L)`` waveforms, ``L = S * samples_per_unit`` (zero-extended to whole units).

        Returns
        -------
        torch.Tensor
            ``(B, S * fpu, n_freq)``: centred frames ``0 .. S * fpu - 1`` (zero padding).
        """
        opts = self.options
        frames = wav.shape[-1] // opts["hop_length"]
        spec = torch.stft(
            wav, opts["n_fft"], opts["hop_length"], window=self.window, center=True, pad_mode="constant",
            return_complex=True,
        )  # fmt: skip
        return spec.abs().clamp(min=opts["log_floor"]).log().transpose(1, 2)[:, :frames]

    def _invert(self, log_mag):
        """``(F, n_freq)`` log-magnitude of one utterance -> ``(F * hop_length,)`` waveform."""
        import torchaudio

        opts = self.options
        frames, hop = log_mag.shape[0], opts["hop_length"]
        # The reflect-padded STFT inside Griffin-Lim needs more than n_fft // 2 samples;
        # a centred STFT of N * hop samples has N + 1 frames: repeat the last one.
        synth = max(frames, -(-(opts["n_fft"] // 2 + 1) // hop))
        log_mag = torch.cat([log_mag, log_mag[-1:].expand(synth + 1 - frames, -1)])
        with torch.random.fork_rng(devices=[log_mag.device] if log_mag.device.type == "cuda" else []):
            torch.manual_seed(opts["seed"])
            return torchaudio.functional.griffinlim(
                log_mag.exp().T, self.window, opts["n_fft"], hop, opts["n_fft"], 1.0,
                opts["n_iter"], opts["momentum"], synth * hop, True,
            )[: frames * hop]  # fmt: skip

    # ------------------------------------------------------------ synthesis

    def _check(self, units, unit_lengths):
        if not isinstance(units, torch.Tensor) or units.dim() != 2:
            raise InputError(f"unit_to_spec expects units (B, S), got {getattr(units, 'shape', type(units))}.")
        if units.is_floating_point() or units.is_complex() or units.dtype == torch.bool:
            raise InputError(f"unit_to_spec expects integer unit ids, got dtype {units.dtype}.")
        batch, steps = units.shape
        if unit_lengths is None:
            unit_lengths = torch.full((batch,), steps, dtype=torch.long)
        lengths = torch.as_tensor(unit_lengths, device=units.device)
        if lengths.shape != (batch,) or lengths.is_floating_point():
            raise InputError(
                f"unit_lengths must be ({batch},) integer counts, got {tuple(lengths.shape)} "
                f"{lengths.dtype} (relative lengths? convert them first)."
            )
        lengths = lengths.long()
        if (lengths < 0).any() or (lengths > steps).any():
            raise InputError(f"unit_lengths must be in [0, {steps}], got {lengths.tolist()}.")
        valid = torch.arange(steps, device=units.device)[None] < lengths[:, None]
        bad = valid & ((units < 0) | (units >= self.num_units))
        if bad.any():
            b, s = (int(i) for i in bad.nonzero()[0])
            raise InputError(
                f"unit_to_spec unit ids must be in [0, {self.num_units}); got {int(units[b, s])} at row "
                f"{b}, position {s}. This vocoder was trained for {self.num_units} units: use the one "
                "trained for these units."
            )
        return units.long(), lengths

    def _check_speaker(self, speaker, batch):
        """``(B, speaker_dim)`` float speaker vectors, or None for a vocoder without them."""
        if not self.speaker_dim:
            return None  # a speaker vector a vocoder cannot use is ignored, as by griffin_lim
        if speaker is None:
            raise InputError(
                f"This unit_to_spec vocoder was trained with {self.speaker_dim}-d speaker vectors: pass "
                "speaker=(B, speaker_dim) from the speaker plugin it was trained with (TasteTokenizer "
                "does this from the source audio)."
            )
        speaker = torch.as_tensor(speaker)
        if speaker.dim() == 1:
            speaker = speaker.unsqueeze(0)
        if tuple(speaker.shape) != (batch, self.speaker_dim) or not speaker.is_floating_point():
            raise InputError(
                f"unit_to_spec expects speaker vectors ({batch}, {self.speaker_dim}) float, got "
                f"{tuple(speaker.shape)} {speaker.dtype}."
            )
        if not torch.isfinite(speaker).all():
            raise InputError("unit_to_spec speaker vectors hold NaN or inf.")
        return speaker.to(self.window.device)

    def spectrogram(self, units, unit_lengths=None, speaker=None):
        """Predicted log-magnitudes (differentiable; used for training).

        Arguments
        ---------
        units : torch.Tensor
            ``(B, S)`` unit ids; values after ``unit_lengths`` are ignored.
        unit_lengths : torch.Tensor, optional
            ``(B,)`` valid units (absolute); ``None`` means all ``S``.
        speaker : torch.Tensor, optional
            ``(B, speaker_dim)``; required when ``speaker_dim > 0``.

        Returns
        -------
        log_mag : torch.Tensor
            ``(B, S * fpu, n_fft // 2 + 1)``, zeros after each length.
        frame_lengths : torch.Tensor
            ``(B,)`` ``unit_lengths * fpu``.
        """
        units, lengths = self._check(units, unit_lengths)
        speaker = self._check_speaker(speaker, units.shape[0])
        device = self.window.device
        units, lengths = units.to(device), lengths.to(device)
        log_mag = self.net(units, lengths, speaker)
        frame_lengths = lengths * self.frames_per_unit
        mask = torch.arange(log_mag.shape[1], device=device)[None] < frame_lengths[:, None]
        return log_mag * mask.unsqueeze(-1), frame_lengths

    @torch.no_grad()
    def forward(self, units, unit_lengths=None, speaker=None):
        """Synthesize a batch.

        Arguments
        ---------
        units : torch.Tensor
            ``(B, S)`` integer unit ids; values after ``unit_lengths`` are ignored.
        unit_lengths : torch.Tensor, optional
            ``(B,)`` valid units (absolute, 0 gives an empty waveform); ``None`` = all.
        speaker : torch.Tensor, optional
            ``(B, speaker_dim)`` speaker vectors; required when ``speaker_dim > 0``.

        Returns
        -------
        wavs : torch.Tensor
            ``(B, max(wav_lengths))`` float at ``sample_rate``, zero after each length.
        wav_lengths : torch.Tensor
            ``(B,)`` long, ``unit_lengths * samples_per_unit``.
        """
        units, lengths = self._check(units, unit_lengths)
        speaker = self._check_speaker(speaker, units.shape[0])
        wav_lengths = lengths * self.samples_per_unit
        wavs = self.window.new_zeros(units.shape[0], int(wav_lengths.max()) if wav_lengths.numel() else 0)
        # One utterance at a time (Griffin-Lim dominates the cost): the output of an
        # utterance is bit-identical alone or in any batch. Synthesis never uses dropout.
        was_training = self.net.training
        self.net.eval()
        try:
            for i, n in enumerate(lengths.tolist()):
                if n > 0:
                    log_mag, _ = self.spectrogram(units[i : i + 1, :n],
                                                  speaker=None if speaker is None else speaker[i : i + 1])
                    wavs[i, : n * self.samples_per_unit] = self._invert(log_mag[0])
        finally:
            self.net.train(was_training)
        return wavs, wav_lengths

    # ------------------------------------------------------------ files

    def save(self, path, metadata=None):
        """Write weights + options to one safetensors file (atomic).

        Arguments
        ---------
        path : str
            ``*.safetensors`` file.
        metadata : dict, optional
            Extra plain data (training summary), kept under ``"training"``.
        """
        from taste_toolkit.data.unit_cache import _atomic_save, _tensors_digest

        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        meta = {
            "name": "unit_to_spec",
            "options": json.dumps(self.options, sort_keys=True),
            "training": json.dumps(metadata or {}, sort_keys=True),
            "sha256": _tensors_digest(state),
        }
        _atomic_save(state, path, meta)
        return path

    @classmethod
    def from_pretrained(cls, path, **overrides):
        """Load a file written by :meth:`save`.

        Arguments
        ---------
        path : str
            ``*.safetensors`` file.
        **overrides
            Synthesis options to change (``n_iter``, ``momentum``, ``seed``).

        Raises
        ------
        MissingResourceError
            The file is missing, corrupt or not a ``unit_to_spec`` vocoder.
        """
        from taste_toolkit.data.unit_cache import _load_checked

        try:
            tensors, metadata = _load_checked(path)
            options = json.loads(metadata["options"])
            if metadata.get("name") != "unit_to_spec":
                raise ValueError(f"it holds a {metadata.get('name')!r} model")
        except Exception as exc:
            raise MissingResourceError(
                f"unit_to_spec vocoder file {path!r} is missing or corrupt ({exc}); train it again "
                "with taste_toolkit.training.unit_vocoder.fit_unit_vocoder."
            ) from exc
        allowed = {"n_iter", "momentum", "seed"}
        if set(overrides) - allowed:
            raise ConfigError(
                f"Only synthesis options {sorted(allowed)} can be changed on a trained unit_to_spec "
                f"vocoder, got {sorted(set(overrides) - allowed)}."
            )
        options.update(overrides)
        vocoder = cls(**options)
        vocoder.load_state_dict(tensors)
        vocoder.training_summary = json.loads(metadata.get("training", "{}"))
        return vocoder.eval()

    def num_parameters(self):
        """Trainable parameter count."""
        return sum(p.numel() for p in self.parameters())

