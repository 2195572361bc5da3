"""``whisper_mel_griffin_lim`` vocoder: Whisper log-mel frames -> waveform (no weights).

Inverts the features Whisper's encoder reads (``WhisperFeatureExtractor``: 16 kHz,
``n_fft`` 400, hop 160, Slaney mel filters, ``log10`` of the power mel,
``(x + 4) / 4``), which is what LM-SPT's ``mel_transformer`` decoder predicts:

1. undo the scaling: power mel = ``10 ** (4 x - 4)``;
2. power spectrogram by the pseudo-inverse of the exact filter matrix (least
   squares, negatives clipped; like ``torchaudio.transforms.InverseMelScale``);
3. phase by :func:`torchaudio.functional.griffinlim`.

Input contract: unlike unit vocoders, ``forward`` takes continuous frames
``(B, F, n_mels)`` (``input_kind = "log_mel"``) with ``lengths (B,)``; ``F``
frames give ``F * 160`` samples (Whisper's STFT yields ``S // 160`` frames for
``S`` samples, so the output matches the source length to within one hop).
Every utterance is inverted on its own with a fixed seed: padding and batch
composition never change the valid output. Intelligibility is limited by
Griffin-Lim's phase; it is a listening and scoring tool, not a neural vocoder.
"""

import torch

from taste_toolkit.errors import ConfigError, InputError
from taste_toolkit.interfaces import Vocoder
from taste_toolkit.registry import register

N_FFT, HOP, SAMPLE_RATE = 400, 160, 16000


@register("vocoder", "whisper_mel_griffin_lim")
class WhisperMelGriffinLim(Vocoder):
    """Whisper-scaled log-mel ``(B, F, n_mels)`` -> waveform ``(B, F * 160)`` at 16 kHz.

    Arguments
    ---------
    n_mels : int
        Mel bins (80, or 128 for Whisper large-v3).
    n_iter : int
        Griffin-Lim iterations.
    momentum : float
        Fast Griffin-Lim momentum.
    seed : int
        Seed of the random initial phase (the same for every utterance).

    Example
    -------
    >>> voc = WhisperMelGriffinLim(n_iter=2)
    >>> wavs, lengths = voc(torch.full((2, 10, 80), -0.5), torch.tensor([10, 4]))
    >>> wavs.shape, lengths.tolist()
    (torch.Size([2, 1600]), [1600, 640])
    """

    input_kind = "log_mel"

    def __init__(self, n_mels: int = 80, n_iter: int = 32, momentum: float = 0.99, seed: int = 0):
        super().__init__()
        from transformers import WhisperFeatureExtractor

        if n_iter < 1 or not 0 <= momentum < 1:
            raise ConfigError(f"whisper_mel_griffin_lim needs n_iter >= 1 and 0 <= momentum < 1, got {n_iter}, {momentum}.")
        self.n_mels, self.n_iter, self.momentum, self.seed = n_mels, n_iter, momentum, seed
        filters = torch.from_numpy(WhisperFeatureExtractor(feature_size=n_mels).mel_filters).float().T  # (M, 201)
        # Derived from the fixed filter bank: nothing to save in a checkpoint.
        self.register_buffer("inverse", torch.linalg.pinv(filters.double()).float(), persistent=False)  # (201, M)
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)

    @property
    def sample_rate(self):
        return SAMPLE_RATE

    @property
    def hop_length(self):
        return HOP

    def _invert(self, log_mel):
        """One utterance ``(F, M)`` -> ``(F * 160,)`` samples."""
        import torchaudio

        frames = log_mel.shape[0]
        # A centred STFT of F * hop samples has F + 1 frames (Whisper drops the last):
        # repeat the last frame; very short inputs are synthesized longer, then cut.
        synth = max(frames, N_FFT // HOP + 1)
        log_mel = torch.cat([log_mel, log_mel[-1:].expand(synth + 1 - frames, -1)])
        power_mel = torch.pow(10.0, 4.0 * log_mel.float() - 4.0).T  # (M, synth + 1)
        spec = (self.inverse @ power_mel).clamp(min=0.0)  # (201, synth + 1) power
        with torch.random.fork_rng(devices=[spec.device] if spec.device.type == "cuda" else []):
            torch.manual_seed(self.seed)
            wav = torchaudio.functional.griffinlim(
                spec, self.window, N_FFT, HOP, N_FFT, 2.0, self.n_iter, self.momentum, synth * HOP, True
            )
        return wav[: frames * HOP]

    @torch.no_grad()
    def forward(self, mels, lengths):
        """Synthesize ``mels (B, F, n_mels)`` with ``lengths (B,)`` valid frames.

        Returns
        -------
        wavs : torch.Tensor
            ``(B, max(lengths) * 160)``, zeros after each length.
        wav_lengths : torch.Tensor
            ``(B,)`` = ``lengths * 160``.
        """
        if not isinstance(mels, torch.Tensor) or mels.dim() != 3 or mels.shape[-1] != self.n_mels:
            shape = getattr(mels, "shape", type(mels))
            raise InputError(f"whisper_mel_griffin_lim expects log-mels (B, F, {self.n_mels}), got {shape}.")
        if not mels.is_floating_point():
            raise InputError(f"whisper_mel_griffin_lim takes log-mel frames, got integer dtype {mels.dtype} "
                             "(unit ids need a unit vocoder such as griffin_lim).")
        lengths = torch.as_tensor(lengths).long().cpu()
        if lengths.shape != (mels.shape[0],) or (lengths < 0).any() or (lengths > mels.shape[1]).any():
            raise InputError(f"lengths must be ({mels.shape[0]},) counts in [0, {mels.shape[1]}], got {lengths.tolist()}.")
        if not torch.isfinite(mels).all():
            raise InputError("log-mels contain NaN or infinite values.")
        wav_lengths = lengths * HOP
        wavs = mels.new_zeros(mels.shape[0], int(wav_lengths.max()) if len(lengths) else 0)
        for i, n in enumerate(lengths.tolist()):
            if n > 0:
                wavs[i, : n * HOP] = self._invert(mels[i, :n]).to(wavs.dtype)
        return wavs, wav_lengths.to(mels.device)
