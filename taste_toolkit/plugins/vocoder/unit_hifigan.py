"""``unit_hifigan`` vocoder: SpeechBrain's unit HiFi-GAN, discrete units -> waveform.

Wraps :class:`speechbrain.lobes.models.HifiGAN.UnitHifiganGenerator` (unit
embedding, then HiFi-GAN transposed-convolution upsampling with multi-receptive-
field residual blocks). Training companions live here too: a discriminator
builder (:func:`build_discriminator`, SpeechBrain's MPD + MSD with adjustable
widths) and a multi-resolution STFT loss (:class:`MultiResolutionSTFTLoss`).
The recipe is ``recipes/librispeech/train_vocoder.py``.

Length convention
-----------------
Every unit becomes exactly ``samples_per_unit`` samples (the product of the
upsampling factors): ``wav_lengths = unit_lengths * samples_per_unit``; the
default 640 matches the default ``mel_kmeans`` units (hop 320 x stack 2 at
16 kHz, 25 Hz). Unit ``u`` is rendered at samples ``[640 u, 640 (u + 1))``.
``mel_kmeans`` gives ``n // 640 + 1`` units for ``n`` samples, so the vocoded
waveform is 1-640 samples longer than the original (trailing silence).

Padding
-------
The generator is a stack of "same" convolutions (zero-padded, as in the original
HiFi-GAN; SpeechBrain's wrapper defaults to reflect padding, which fails on
sequences shorter than 4 units). Near its end, a sequence sees zeros when alone
but the (non-zero) activations of padded units when padded in a batch: with
the default sizes one unit influences the output about 8 units (0.3 s) away.
Masking the padded units cannot undo that (biases, residual paths), so rows of
a batch with different lengths are vocoded in groups of equal length, each
cropped to its own length: the valid output of an utterance is the same alone
or padded in a batch (up to float rounding), whatever the padded unit ids are.
Training batches are equal-length segments, i.e. one group.
"""

import math

import torch
from torch import nn

from taste_toolkit.errors import ConfigError, InputError
from taste_toolkit.interfaces import Vocoder
from taste_toolkit.registry import register


@register("vocoder", "unit_hifigan")
class UnitHifiGAN(Vocoder):
    """Unit HiFi-GAN generator (SpeechBrain), sized for CPU by default.

    Arguments
    ---------
    num_units : int
        Unit vocabulary V; valid unit ids are ``[0, V)``.
    embedding_dim : int
        Size of the unit embedding (the generator's input channels).
    upsample_factors : list of int
        Stride of each transposed convolution; their product must equal
        ``samples_per_unit``.
    upsample_kernel_sizes : list of int
        Kernel of each transposed convolution; ``kernel - factor`` must be even
        and >= 0 so that each layer upsamples exactly by its factor.
    upsample_initial_channel : int
        Channels after the input convolution, halved after every upsampling.
    resblock_type : str
        ``"1"`` (3 conv pairs per block) or ``"2"`` (2 convs per block).
    resblock_kernel_sizes : list of int
        Kernel of each parallel residual block (multi-receptive-field fusion).
    resblock_dilation_sizes : list of list of int
        Dilations of each residual block (3 per block for type 1, 2 for type 2).
    sample_rate : int
        Output sample rate (Hz).
    samples_per_unit : int
        Waveform samples per unit (640 = 25 Hz units at 16 kHz); checked
        against the product of ``upsample_factors``.

    Example
    -------
    >>> voc = UnitHifiGAN(num_units=16, upsample_initial_channel=16, resblock_kernel_sizes=[3],
    ...                   resblock_dilation_sizes=[[1, 3, 5]])
    >>> wavs, lengths = voc(torch.randint(0, 16, (2, 5)), torch.tensor([5, 3]))
    >>> wavs.shape, lengths.tolist()
    (torch.Size([2, 3200]), [3200, 1920])

    Paper-scale (SpeechBrain "v1") sizes: ``embedding_dim=128,
    upsample_initial_channel=512, resblock_kernel_sizes=[3, 7, 11],
    resblock_dilation_sizes=[[1, 3, 5]] * 3`` (see hparams/vocoder/unit_hifigan.yaml).
    """

    def __init__(
        self,
        num_units: int = 256,
        embedding_dim: int = 64,
        upsample_factors: list = (8, 5, 4, 4),
        upsample_kernel_sizes: list = (16, 11, 8, 8),
        upsample_initial_channel: int = 128,
        resblock_type: str = "1",
        resblock_kernel_sizes: list = (3, 7),
        resblock_dilation_sizes: list = ((1, 3, 5), (1, 3, 5)),
        sample_rate: int = 16000,
        samples_per_unit: int = 640,
    ):
        super().__init__()
        factors = [int(f) for f in upsample_factors]
        kernels = [int(k) for k in upsample_kernel_sizes]
        res_kernels = [int(k) for k in resblock_kernel_sizes]
        dilations = [[int(d) for d in ds] for ds in resblock_dilation_sizes]
        for name, value in (
            ("num_units", num_units),
            ("embedding_dim", embedding_dim),
            ("sample_rate", sample_rate),
            ("samples_per_unit", samples_per_unit),
        ):
            if value < 1:
                raise ConfigError(f"unit_hifigan option {name} must be >= 1, got {value}.")
        if not factors or len(factors) != len(kernels):
            raise ConfigError(
                f"unit_hifigan needs one upsample kernel per upsample factor, got factors "
                f"{factors} and kernels {kernels}."
            )
        for f, k in zip(factors, kernels):
            if f < 1 or k < f or (k - f) % 2:
                raise ConfigError(
                    f"unit_hifigan upsample kernel {k} for factor {f}: the kernel must be >= the "
                    "factor and differ from it by an even number (e.g. 2 * factor), otherwise "
                    "the layer does not upsample by exactly its factor."
                )
        if math.prod(factors) != samples_per_unit:
            raise ConfigError(
                f"unit_hifigan upsample_factors {factors} multiply to {math.prod(factors)} samples "
                f"per unit, but samples_per_unit is {samples_per_unit} (sample_rate / unit rate, "
                "e.g. 16000 / 25 = 640). Change the factors or samples_per_unit so they agree."
            )
        if upsample_initial_channel >> len(factors) < 1:
            raise ConfigError(
                f"unit_hifigan upsample_initial_channel={upsample_initial_channel} is halved "
                f"{len(factors)} times and must stay >= 1; use at least {2 ** len(factors)}."
            )
        per_block = {"1": 3, "2": 2}.get(resblock_type)
        if per_block is None:
            raise ConfigError(f"unit_hifigan resblock_type must be '1' or '2', got {resblock_type!r}.")
        if not res_kernels or len(res_kernels) != len(dilations) or any(len(d) != per_block for d in dilations):
            raise ConfigError(
                f"unit_hifigan needs one dilation list of {per_block} values per residual-block "
                f"kernel (resblock_type {resblock_type!r}); got kernels {res_kernels} and "
                f"dilations {dilations}."
            )
        from speechbrain.lobes.models.HifiGAN import UnitHifiganGenerator

        # The layout as lists of int (plain data), recorded by resolve_options.
        self._layout = dict(upsample_factors=factors, upsample_kernel_sizes=kernels,
                            resblock_kernel_sizes=res_kernels, resblock_dilation_sizes=dilations)
        self.num_units = num_units
        self.samples_per_unit = samples_per_unit
        self._sample_rate = sample_rate
        # One codebook per step: "none" pooling just drops the codebook axis.
        self.generator = UnitHifiganGenerator(
            in_channels=embedding_dim,
            out_channels=1,
            resblock_type=resblock_type,
            resblock_dilation_sizes=dilations,
            resblock_kernel_sizes=res_kernels,
            upsample_kernel_sizes=kernels,
            upsample_initial_channel=upsample_initial_channel,
            upsample_factors=factors,
            vocab_size=num_units,
            embedding_dim=embedding_dim,
            pooling_type="none",
        )
        from speechbrain.nnet.CNN import Conv1d

        for module in self.generator.modules():
            if isinstance(module, Conv1d):
                module.padding_mode = "constant"  # zeros: any length works (see "Padding")

    def resolve_options(self, options):
        """Record the layout options as lists of int (tuples and YAML lists alike)."""
        return dict(options, **self._layout)

    @property
    def sample_rate(self) -> int:
        return self._sample_rate

    def _check(self, units, unit_lengths):
        if not isinstance(units, torch.Tensor) or units.dim() != 2:
            raise InputError(f"unit_hifigan expects units (B, S), got {getattr(units, 'shape', type(units))}.")
        if units.dtype.is_floating_point or units.dtype in (torch.bool, torch.complex64, torch.complex128):
            raise InputError(f"unit_hifigan expects integer unit ids, got dtype {units.dtype}.")
        batch, steps = units.shape
        if batch == 0 or steps == 0:
            raise InputError(f"unit_hifigan got an empty batch of units {tuple(units.shape)}.")
        if unit_lengths is None:
            unit_lengths = torch.full((batch,), steps, dtype=torch.long, device=units.device)
        unit_lengths = torch.as_tensor(unit_lengths, device=units.device).long()
        if unit_lengths.shape != (batch,):
            raise InputError(f"unit_lengths must be ({batch},), got {tuple(unit_lengths.shape)}.")
        if (unit_lengths < 1).any() or (unit_lengths > steps).any():
            raise InputError(
                f"unit_lengths must be absolute unit counts in [1, {steps}], got "
                f"{unit_lengths.tolist()} (relative lengths? convert them first)."
            )
        valid = torch.arange(steps, device=units.device)[None] < unit_lengths[:, None]
        bad = valid & ((units < 0) | (units >= self.num_units))
        if bad.any():
            b, s = (int(i) for i in bad.nonzero()[0])
            raise InputError(
                f"unit_hifigan unit ids must be in [0, {self.num_units}); got {int(units[b, s])} "
                f"at row {b}, position {s}. Use the vocoder trained for these units (num_units)."
            )
        return units.long(), unit_lengths

    def forward(self, units, unit_lengths=None):
        """Vocode a batch of unit sequences.

        Arguments
        ---------
        units : torch.Tensor
            ``(B, S)`` integer unit ids; values after ``unit_lengths`` are ignored.
        unit_lengths : torch.Tensor, optional
            ``(B,)`` valid units (absolute); ``None`` means all ``S``.

        Returns
        -------
        wavs : torch.Tensor
            ``(B, S * samples_per_unit)`` float in ``[-1, 1]``, zeros after each length.
        wav_lengths : torch.Tensor
            ``(B,)`` ``unit_lengths * samples_per_unit``.
        """
        units, unit_lengths = self._check(units, unit_lengths)
        batch, steps = units.shape
        spu = self.samples_per_unit
        if bool((unit_lengths == steps).all()):
            return self._generate(units), unit_lengths * spu
        wavs = None
        # Equal lengths share one pass, cropped to that length (see "Padding").
        for length in unit_lengths.unique().tolist():
            rows = (unit_lengths == length).nonzero().squeeze(1)
            out = self._generate(units[rows, :length])
            if wavs is None:
                wavs = out.new_zeros(batch, steps * spu)
            wavs = wavs.index_copy(0, rows, nn.functional.pad(out, (0, (steps - length) * spu)))
        return wavs, unit_lengths * spu

    def _generate(self, units):
        """``(B, S)`` valid unit ids -> ``(B, S * samples_per_unit)``."""
        wavs, _ = self.generator(units.unsqueeze(-1))  # (B, 1, L): SpeechBrain wants (B, S, codebooks)
        return wavs.squeeze(1)


# --------------------------------------------------------------------------
# Training companions
# --------------------------------------------------------------------------


def _bare(cls):
    """An instance of ``cls`` whose layers we build ourselves (its forward is reused)."""
    obj = cls.__new__(cls)
    nn.Module.__init__(obj)
    return obj


def build_discriminator(
    periods=(2, 3, 5, 7, 11),
    period_channels=(32, 128, 512, 1024, 1024),
    num_scales=3,
    scale_width=1.0,
):
    """SpeechBrain's HiFi-GAN discriminator (MPD + MSD) with adjustable sizes.

    The defaults rebuild :class:`speechbrain.lobes.models.HifiGAN.HifiganDiscriminator`
    exactly (same layers and state-dict keys; 70 M parameters). Smaller values give
    the same architecture, narrower, for CPU runs. The forward passes are
    SpeechBrain's: ``D(wavs (B, 1, L)) -> (scores, feats)``, one entry per
    sub-discriminator (periods first, then scales).

    Arguments
    ---------
    periods : list of int
        Periods of the multi-period discriminator.
    period_channels : list of int
        Output channels of its 5 convolutions (SpeechBrain: 32, 128, 512, 1024, 1024).
    num_scales : int
        Scale discriminators (input, then average-pooled by 2 each time); 0 = none.
    scale_width : float
        Width multiplier of the scale discriminators' channels (1.0 = 128 ... 1024).
    """
    from speechbrain.lobes.models import HifiGAN as sb_hifigan
    from speechbrain.nnet.CNN import Conv2d

    if not periods or len(period_channels) != 5 or min(period_channels) < 1:
        raise ConfigError(
            f"build_discriminator needs >= 1 period and 5 positive period_channels, got "
            f"periods={list(periods)}, period_channels={list(period_channels)}."
        )
    if num_scales < 0 or scale_width <= 0:
        raise ConfigError(f"num_scales must be >= 0 and scale_width > 0, got {num_scales}, {scale_width}.")

    def period_disc(period, kernel_size=5, stride=3):
        disc = _bare(sb_hifigan.DiscriminatorP)
        disc.period = period
        chans = [1] + [int(c) for c in period_channels]
        conv = dict(padding="same", skip_transpose=True, weight_norm=True)
        disc.convs = nn.ModuleList(
            Conv2d(in_channels=chans[i], out_channels=chans[i + 1], kernel_size=(kernel_size, 1),
                   stride=(stride if i < 4 else 1, 1), **conv)
            for i in range(5)
        )
        disc.conv_post = Conv2d(in_channels=chans[-1], out_channels=1, kernel_size=(3, 1), stride=1, **conv)
        return disc

    def scale_disc(spectral):
        norm = nn.utils.spectral_norm if spectral else nn.utils.parametrizations.weight_norm
        chans = [1] + [max(1, round(c * scale_width)) for c in (128, 128, 256, 512, 1024, 1024, 1024)]
        # (kernel, stride, groups) of SpeechBrain's DiscriminatorS; groups shrink with the width.
        layout = [(15, 1, 1), (41, 2, 4), (41, 2, 16), (41, 4, 16), (41, 4, 16), (41, 1, 16), (5, 1, 1)]
        disc = _bare(sb_hifigan.DiscriminatorS)
        disc.convs = nn.ModuleList(
            norm(nn.Conv1d(chans[i], chans[i + 1], k, s, groups=math.gcd(g, chans[i], chans[i + 1]), padding=k // 2))
            for i, (k, s, g) in enumerate(layout)
        )
        disc.conv_post = norm(nn.Conv1d(chans[-1], 1, 3, 1, padding=1))
        return disc

    disc = _bare(sb_hifigan.HifiganDiscriminator)
    disc.mpd = _bare(sb_hifigan.MultiPeriodDiscriminator)
    disc.mpd.discriminators = nn.ModuleList(period_disc(int(p)) for p in periods)
    disc.msd = _bare(sb_hifigan.MultiScaleDiscriminator)
    disc.msd.discriminators = nn.ModuleList(scale_disc(i == 0) for i in range(num_scales))
    disc.msd.meanpools = nn.ModuleList(nn.AvgPool1d(4, 2, padding=2) for _ in range(max(0, num_scales - 1)))
    return disc


class MultiResolutionSTFTLoss(nn.Module):
    """Multi-resolution STFT loss, a drop-in for SpeechBrain's ``MultiScaleSTFTLoss``.

    SpeechBrain 1.1.2's ``stft`` helper calls ``torch.stft`` without
    ``return_complex``, which torch >= 2 rejects; this computes the same two
    terms (log-magnitude L1 and spectral convergence, averaged over
    resolutions, magnitudes floored at 1e-4) with a Hann window.

    Arguments
    ---------
    n_ffts, hop_lengths, win_lengths : list of int
        One entry per resolution.

    Returns (forward)
    -----------------
    ``(loss_mag, loss_sc)`` for ``y_hat, y`` of shape ``(B, L)`` or ``(B, 1, L)``,
    as :class:`speechbrain.lobes.models.HifiGAN.GeneratorLoss` expects.
    """

    def __init__(self, n_ffts=(1024, 2048, 512), hop_lengths=(120, 240, 50), win_lengths=(600, 1200, 240)):
        super().__init__()
        if not (len(n_ffts) == len(hop_lengths) == len(win_lengths) >= 1):
            raise ConfigError("MultiResolutionSTFTLoss needs equally long, non-empty n_ffts/hop_lengths/win_lengths.")
        self.resolutions = list(zip(n_ffts, hop_lengths, win_lengths))

    def forward(self, y_hat, y):
        y_hat, y = y_hat.reshape(-1, y_hat.shape[-1]), y.reshape(-1, y.shape[-1])
        loss_mag, loss_sc = 0.0, 0.0
        for n_fft, hop, win in self.resolutions:
            window = torch.hann_window(win, device=y.device, dtype=y.dtype)
            mags = [
                torch.stft(x, n_fft, hop, win, window=window, return_complex=True).abs().clamp(min=1e-4)
                for x in (y_hat, y)
            ]
            loss_mag = loss_mag + nn.functional.l1_loss(mags[1].log(), mags[0].log())
            loss_sc = loss_sc + torch.linalg.norm(mags[1] - mags[0]) / torch.linalg.norm(mags[1])
        return loss_mag / len(self.resolutions), loss_sc / len(self.resolutions)
