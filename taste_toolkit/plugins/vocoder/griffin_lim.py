"""``griffin_lim`` vocoder plugin: unit -> mean log-mel -> Griffin-Lim (no download).

The offline default vocoder. Every unit id owns ``stack`` log-mel frames (its
mean log-mel, the "unit table"); a unit sequence becomes a mel spectrogram by
table look-up, which is inverted with :class:`torchaudio.transforms.InverseMelScale`
(least squares, linear magnitude) and :func:`torchaudio.functional.griffinlim`
(phase recovery). Intelligibility is limited (one mean spectrum per unit, no
pitch), but it is deterministic, needs no weights and lets you *listen* to units.

Where the table comes from
--------------------------
* ``mel_kmeans`` units carry it: :meth:`GriffinLimVocoder.from_units_extractor`
  copies the extractor's log-mel options and its ``unit_log_mels`` buffer.
* Units without one (e.g. ``s3``): :meth:`GriffinLimVocoder.fit` averages
  :meth:`GriffinLimVocoder.log_mel` frames of paired audio per unit.

Length convention
-----------------
A unit covers ``samples_per_unit = stack * hop_length`` samples, so ``S`` valid
units give exactly ``S * stack * hop_length`` samples (``wav_lengths``). This is
the inverse of ``mel_kmeans`` (``n // samples_per_unit + 1`` units for ``n``
samples): the output is at most one unit longer than the source audio.

Every utterance is inverted on its own with its own seed, so padding and batch
composition never change the valid output. The amplitude is not calibrated (the
least-squares mel inversion spreads a tone over its whole mel band), so peaks may
exceed 1: normalize before writing 16-bit audio.
"""

import logging
import math
from typing import Optional

import torch

from taste_toolkit.errors import ConfigError, InputError, MissingResourceError
from taste_toolkit.interfaces import Vocoder
from taste_toolkit.registry import register

logger = logging.getLogger(__name__)

NOT_FITTED = (
    "The griffin_lim vocoder has no unit table yet. Build it with "
    "GriffinLimVocoder.from_units_extractor(fitted_mel_kmeans_extractor), load a table "
    "with load_table(unit_log_mels) or a checkpoint with load_state_dict, or compute one "
    "from paired audio with fit(units_list, log_mels_list)."
)


@register("vocoder", "griffin_lim")
class GriffinLimVocoder(Vocoder):
    """Units -> per-unit mean log-mel frames -> InverseMelScale + Griffin-Lim.

    Arguments
    ---------
    num_units : int
        Unit vocabulary size V.
    n_mels, stack : int
        Mel bands; mel frames per unit.
    sample_rate, n_fft, hop_length, win_length : int
        Output rate and STFT geometry of the log-mel (Hann window, ``center=True``).
    f_min, f_max : float
        Mel filter range; ``f_max=None`` means ``sample_rate / 2``.
    mel_scale, norm : str
        ``"htk"``/``"slaney"`` and ``None``/``"slaney"`` (as torchaudio).
    power : float
        Exponent of the magnitude inside the mel (1 = magnitude, 2 = power).
    log_floor : float
        Floor of the mel before ``log`` (also the level of "silence").
    n_iter, momentum : int, float
        Griffin-Lim iterations and fast-GL momentum.
    rand_init : bool
        Random initial phase (drawn from a generator seeded with ``seed``, so
        still deterministic) instead of zero phase.
    seed : int
        Seed of the initial phase, the same for every utterance.
    smooth_frames : int
        Half-width ``k`` of a moving average over ``2k+1`` log-mel frames that
        softens the steps at unit boundaries (0 = off).

    Example
    -------
    >>> import torch
    >>> voc = GriffinLimVocoder(num_units=4, n_mels=16, stack=1, n_fft=256, hop_length=64, n_iter=4)
    >>> _ = voc.load_table(torch.full((4, 1, 16), -3.0))
    >>> wavs, lengths = voc(torch.tensor([[0, 1, 2], [3, 0, 0]]), torch.tensor([3, 1]))
    >>> wavs.shape, lengths.tolist()
    (torch.Size([2, 192]), [192, 64])
    """

    def __init__(
        self,
        num_units: int = 256,
        n_mels: int = 80,
        stack: int = 2,
        sample_rate: int = 16000,
        n_fft: int = 1024,
        hop_length: int = 320,
        win_length: Optional[int] = None,
        f_min: float = 0.0,
        f_max: Optional[float] = None,
        mel_scale: str = "htk",
        norm: Optional[str] = None,
        power: float = 1.0,
        log_floor: float = 1e-5,
        n_iter: int = 32,
        momentum: float = 0.99,
        rand_init: bool = True,
        seed: int = 0,
        smooth_frames: int = 0,
    ):
        super().__init__()
        import torchaudio

        win_length = win_length or n_fft
        f_max = float(f_max) if f_max is not None else sample_rate / 2
        for name, value in (
            ("num_units", num_units), ("n_mels", n_mels), ("stack", stack),
            ("sample_rate", sample_rate), ("n_fft", n_fft), ("hop_length", hop_length),
            ("n_iter", n_iter),
        ):  # fmt: skip
            if value < 1:
                raise ConfigError(f"griffin_lim option {name} must be >= 1, got {value}.")
        if win_length > n_fft or not 0 <= momentum < 1 or power <= 0 or log_floor <= 0:
            raise ConfigError(
                "griffin_lim needs win_length <= n_fft, 0 <= momentum < 1, power > 0 and "
                f"log_floor > 0; got win_length={win_length}, n_fft={n_fft}, "
                f"momentum={momentum}, power={power}, log_floor={log_floor}."
            )
        if smooth_frames < 0:
            raise ConfigError(f"griffin_lim smooth_frames must be >= 0, got {smooth_frames}.")
        self._sample_rate = sample_rate
        self.win_length, self.f_max = win_length, f_max  # resolved (see resolve_options)
        self.num_units, self.n_mels, self.stack = num_units, n_mels, stack
        mel_kwargs = dict(
            sample_rate=sample_rate, f_min=f_min, f_max=f_max, norm=norm, mel_scale=mel_scale
        )
        # Forward mel: used by log_mel() (fit data); identical to mel_kmeans's definition.
        self.mel = torchaudio.transforms.MelSpectrogram(
            n_fft=n_fft, win_length=win_length, hop_length=hop_length, n_mels=n_mels,
            power=power, center=True, pad_mode="constant", **mel_kwargs,
        )  # fmt: skip
        # gelsd also copes with rank-deficient filter banks (empty mel bands).
        self.inverse_mel = torchaudio.transforms.InverseMelScale(
            n_stft=n_fft // 2 + 1, n_mels=n_mels, driver="gelsd", **mel_kwargs
        )
        self.register_buffer("window", torch.hann_window(win_length), persistent=False)
        # The table and its flag are the only persistent state (derived filters are not).
        for module in (self.mel.spectrogram, self.mel.mel_scale, self.inverse_mel):
            names = [name for name, _ in module.named_buffers(recurse=False)]
            module._non_persistent_buffers_set.update(names)
        self.register_buffer("unit_log_mels", torch.zeros(num_units, stack, n_mels))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def resolve_options(self, options):
        """Record the resolved ``win_length`` (``n_fft`` when unset) and ``f_max`` (Nyquist)."""
        return dict(options, win_length=self.win_length, f_max=self.f_max)

    # ------------------------------------------------------------ properties

    @property
    def sample_rate(self) -> int:
        return self._sample_rate

    @property
    def samples_per_unit(self) -> int:
        """Output samples per unit (``stack * hop_length``)."""
        return self.stack * self.options["hop_length"]

    # ------------------------------------------------------------ the table

    @classmethod
    def from_units_extractor(cls, extractor, **options):
        """Vocoder matching a fitted extractor that has a unit table (``mel_kmeans``).

        Arguments
        ---------
        extractor : UnitExtractor
            Needs ``mel_options`` (dict), ``unit_log_mels`` ``(V, stack, n_mels)``
            and ``fitted``.
        **options
            Griffin-Lim options (``n_iter``, ``momentum``, ``rand_init``, ``seed``,
            ``smooth_frames``).
        """
        mel_options = getattr(extractor, "mel_options", None)
        table = getattr(extractor, "unit_log_mels", None)
        if mel_options is None or table is None:
            raise ConfigError(
                f"{type(extractor).__name__} has no unit table (mel_options/unit_log_mels); "
                "build GriffinLimVocoder(...) with its log-mel options and call fit(units_list, "
                "log_mels_list) on paired audio instead."
            )
        if not bool(getattr(extractor, "fitted", True)):
            raise MissingResourceError(
                "The unit extractor is not fitted, so its unit table is empty; fit it first."
            )
        if not mel_options.get("center", True) or mel_options.get("pad_mode", "constant") != "constant":
            raise ConfigError("griffin_lim only inverts centred, zero-padded log-mels.")
        keys = ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels", "f_min",
                "f_max", "power", "mel_scale", "norm", "log_floor")  # fmt: skip
        built = {k: mel_options[k] for k in keys if k in mel_options}
        built.update(num_units=int(table.shape[0]), stack=int(table.shape[1]))
        built.update(options)
        # The instance records ``built`` as its build_spec (registry.register): standalone
        # checkpoints rebuild it from the plain options, then load the table.
        return cls(**built).load_table(table)

    @torch.no_grad()
    def load_table(self, unit_log_mels):
        """Set the unit table ``(V, stack, n_mels)`` (natural-log mel) and mark fitted."""
        table = torch.as_tensor(unit_log_mels, dtype=torch.float32)
        if table.shape != self.unit_log_mels.shape:
            raise InputError(
                f"unit_log_mels must be {tuple(self.unit_log_mels.shape)} (num_units, stack, "
                f"n_mels), got {tuple(table.shape)}."
            )
        if not torch.isfinite(table).all():
            raise InputError("unit_log_mels contains NaN or infinite values.")
        self.unit_log_mels.copy_(table)
        self.fitted.fill_(True)
        return self

    @torch.no_grad()
    def log_mel(self, wav):
        """Log-mel frames of one waveform, framed exactly like ``mel_kmeans``.

        Arguments
        ---------
        wav : torch.Tensor
            ``(L,)`` float waveform at ``sample_rate``.

        Returns
        -------
        torch.Tensor
            ``(F, n_mels)`` with ``F = (L // samples_per_unit + 1) * stack``: the
            waveform is zero-extended to whole units, like the unit extractors.
        """
        wav = torch.as_tensor(wav, dtype=torch.float32, device=self.window.device)
        if wav.dim() != 1 or wav.numel() == 0:
            raise InputError(f"log_mel expects a non-empty 1-D waveform, got {tuple(wav.shape)}.")
        units = wav.numel() // self.samples_per_unit + 1
        wav = torch.nn.functional.pad(wav, (0, units * self.samples_per_unit - wav.numel()))
        mel = self.mel(wav).clamp(min=self.options["log_floor"]).log()  # (n_mels, F + 1)
        return mel.T[: units * self.stack]

    @torch.no_grad()
    def fit(self, units_list, log_mels_list):
        """Unit table = mean log-mel frames of each unit over paired data.

        Arguments
        ---------
        units_list : iterable of torch.Tensor
            ``(S_i,)`` unit ids of each utterance.
        log_mels_list : iterable of torch.Tensor
            ``(F_i, n_mels)`` log-mel frames of the same utterances
            (:meth:`log_mel`); unit ``u`` takes frames ``u*stack .. u*stack+stack-1``.
            A mismatch of up to 2 units (edge conventions of other tokenizers) is
            trimmed; more means the unit rate does not match ``sample_rate /
            samples_per_unit`` and raises.

        Returns
        -------
        torch.Tensor
            ``(V,)`` occurrences of each unit. Units never seen get the silence
            level ``log(log_floor)`` (a warning says how many).
        """
        sums = torch.zeros_like(self.unit_log_mels, dtype=torch.float64)
        counts = torch.zeros(self.num_units, dtype=torch.long, device=sums.device)
        pairs = 0
        for units, log_mels in zip(units_list, log_mels_list, strict=True):
            units = torch.as_tensor(units, device=sums.device).long().reshape(-1)
            log_mels = torch.as_tensor(log_mels, device=sums.device)
            if log_mels.dim() != 2 or log_mels.shape[1] != self.n_mels:
                raise InputError(f"log-mels must be (F, {self.n_mels}), got {tuple(log_mels.shape)}.")
            usable = min(units.numel(), log_mels.shape[0] // self.stack)
            if abs(units.numel() - log_mels.shape[0] // self.stack) > 2:
                raise InputError(
                    f"{units.numel()} units but {log_mels.shape[0]} mel frames ({self.stack} per "
                    "unit): the unit rate does not match sample_rate / (stack * hop_length)."
                )
            units = units[:usable]
            self._check_range(units)
            frames = log_mels[: usable * self.stack].reshape(usable, self.stack, self.n_mels)
            sums.index_add_(0, units, frames.double())
            counts += torch.bincount(units, minlength=self.num_units)
            pairs += 1
        if pairs == 0 or int(counts.sum()) == 0:
            raise InputError("griffin_lim.fit got no (units, log-mels) pairs.")
        table = sums / counts.clamp(min=1).view(-1, 1, 1)
        unseen = counts == 0
        table[unseen] = math.log(self.options["log_floor"])
        if unseen.any():
            logger.warning(
                "griffin_lim.fit: %d of %d units never occur in the fit data; they will "
                "be rendered as silence.", int(unseen.sum()), self.num_units,
            )  # fmt: skip
        self.load_table(table.float())
        return counts

    def _check_range(self, units):
        if units.numel() and (int(units.min()) < 0 or int(units.max()) >= self.num_units):
            raise InputError(
                f"unit ids must be in [0, {self.num_units}), got values in "
                f"[{int(units.min())}, {int(units.max())}]; is the vocoder built for these units?"
            )

    # ------------------------------------------------------------ synthesis

    def _smooth(self, log_mel):
        """Moving average over ``2k+1`` frames with edge replication. ``(F, M)``."""
        k = self.options["smooth_frames"]
        if k == 0:
            return log_mel
        padded = torch.nn.functional.pad(log_mel.T.unsqueeze(0), (k, k), mode="replicate")
        return torch.nn.functional.avg_pool1d(padded, 2 * k + 1, stride=1)[0].T

    def _invert(self, units):
        """One utterance ``(S,)`` -> ``(S * samples_per_unit,)`` waveform."""
        import torchaudio

        opts = self.options
        log_mel = self._smooth(self.unit_log_mels[units].reshape(-1, self.n_mels))  # (F, M)
        frames = log_mel.shape[0]
        # Griffin-Lim's reflect-padded STFT needs more than n_fft // 2 samples, so very
        # short inputs are synthesized longer and trimmed. A centred STFT of N * hop
        # samples has N + 1 frames: the extra frames repeat the last one.
        synth = max(frames, -(-(opts["n_fft"] // 2 + 1) // opts["hop_length"]))
        log_mel = torch.cat([log_mel, log_mel[-1:].expand(synth + 1 - frames, -1)])
        mel = log_mel.exp().T  # (M, synth + 1)
        if mel.device.type != "cpu":
            self.inverse_mel.driver = "gels"  # the only driver lstsq has off CPU
        spec = self.inverse_mel(mel.unsqueeze(0))[0]  # (n_freq, synth + 1), |X| ** power
        with torch.random.fork_rng(devices=[spec.device] if spec.device.type == "cuda" else []):
            torch.manual_seed(opts["seed"])  # same initial phase alone or in a batch
            return torchaudio.functional.griffinlim(
                spec, self.window, opts["n_fft"], opts["hop_length"], opts["win_length"],
                opts["power"], opts["n_iter"], opts["momentum"],
                synth * opts["hop_length"], opts["rand_init"],
            )[: frames * opts["hop_length"]]  # fmt: skip

    @torch.no_grad()
    def forward(self, units, unit_lengths):
        """Synthesize a batch.

        Arguments
        ---------
        units : torch.Tensor
            ``(B, S)`` integer unit ids; values after ``unit_lengths`` are ignored.
        unit_lengths : torch.Tensor
            ``(B,)`` valid units (absolute, 0 gives an empty waveform).

        Returns
        -------
        wavs : torch.Tensor
            ``(B, max(wav_lengths))`` float at ``sample_rate``, zero after each length.
        wav_lengths : torch.Tensor
            ``(B,)`` long, ``unit_lengths * stack * hop_length``.
        """
        if not bool(self.fitted):
            raise MissingResourceError(NOT_FITTED)
        if not isinstance(units, torch.Tensor) or units.dim() != 2:
            shape = getattr(units, "shape", type(units))
            raise InputError(f"griffin_lim expects units (B, S), got {shape}.")
        if units.is_floating_point() or units.is_complex():
            raise InputError(f"units must be integer ids, got dtype {units.dtype}.")
        lengths = torch.as_tensor(unit_lengths, device=units.device)
        if lengths.shape != (units.shape[0],) or lengths.is_floating_point():
            raise InputError(
                f"unit_lengths must be ({units.shape[0]},) integer counts, got "
                f"{tuple(lengths.shape)} {lengths.dtype} (relative lengths? convert them first)."
            )
        lengths = lengths.long()
        if (lengths < 0).any() or (lengths > units.shape[1]).any():
            raise InputError(f"unit_lengths must be in [0, {units.shape[1]}], got {lengths.tolist()}.")
        units = units.long().to(self.unit_log_mels.device)
        for row, n in zip(units, lengths.tolist()):
            self._check_range(row[:n])
        wav_lengths = lengths.cpu() * self.samples_per_unit
        wavs = torch.zeros(units.shape[0], int(wav_lengths.max()), device=self.unit_log_mels.device)
        for i, n in enumerate(lengths.tolist()):
            if n > 0:
                wavs[i, : n * self.samples_per_unit] = self._invert(units[i, :n])
        return wavs, wav_lengths.to(units.device)
