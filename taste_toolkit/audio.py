"""Reading, validating and resampling audio: the one place for it in the toolkit.

The data pipeline, the API, the CLI, the evaluation harness and the metric
plugins read files with :func:`read_audio` / :func:`load_audio` and resample
with :func:`resample`.

Every waveform that enters the toolkit from outside goes through
:func:`prepare_waveform` (or :func:`load_audio`, which calls it), so bad audio
fails early with an :class:`~taste_toolkit.errors.InputError` that says what is
wrong, instead of producing NaN losses or garbage tokens later.

Rules applied, in order
-----------------------
1. ``sample_rate`` must be positive (and a whole number of Hz).
2. Dtypes: float32/float64/float16 are kept as is; integer PCM is scaled to
   ``[-1, 1]``: int8 / 128, int16 / 32768, int32 / 2**31, uint8 (offset binary)
   ``(x - 128) / 128``. Other dtypes (bool, complex, int64) are rejected, as
   their scale is ambiguous.
3. Shape: ``(S,)``, or 2-D with one *channel* axis. The channel axis is the
   **smaller** of the two dimensions and must be ``<= 8``; on a tie the layout
   is taken as ``(S, C)`` (soundfile's frames x channels). So ``(S, 2)`` and
   ``(2, S)`` are both stereo. A 2-D array with both dimensions > 8 is
   rejected (we cannot tell channels from samples); more than 2-D is rejected.
   Channels are downmixed by averaging.
4. Empty audio and NaN/inf samples are rejected.
5. Audio longer than ``max_seconds`` is rejected (never truncated).
6. Clipping and silence only log a warning: the caller decides.
7. Resampling to ``target_sr`` uses :func:`torchaudio.functional.resample`, or an
   FFT resampler for unusual rates whose polyphase filter would be huge (:func:`resample`).
"""

import logging
import math
import os

import numpy as np
import torch

from taste_toolkit.errors import InputError

logger = logging.getLogger(__name__)

#: Largest channel count accepted in a 2-D array (beyond that it is ambiguous).
MAX_CHANNELS = 8
#: A sample at or above this absolute value counts as clipped.
CLIP_LEVEL = 0.99
#: Fraction of clipped samples above which a warning is logged.
CLIP_FRACTION = 0.01
#: Peak amplitude below which audio is reported as silent (-80 dBFS).
SILENCE_PEAK = 1e-4

# Divisors mapping integer PCM to [-1, 1]; uint8 is offset binary (128 = zero).
_INT_SCALE = {
    torch.int8: (0.0, 128.0),
    torch.int16: (0.0, 32768.0),
    torch.int32: (0.0, 2147483648.0),
    torch.uint8: (128.0, 128.0),
}


def _to_tensor(wav):
    """Numpy array or tensor -> tensor (without copying when possible)."""
    if isinstance(wav, torch.Tensor):
        return wav.detach()
    if isinstance(wav, (np.ndarray, np.generic)):
        arr = np.asarray(wav)  # not ascontiguousarray: it turns 0-D into (1,)
        if not (arr.flags.c_contiguous and arr.flags.writeable):
            arr = arr.copy(order="C")  # torch needs positive strides, warns on read-only
        return torch.from_numpy(arr)
    if isinstance(wav, (list, tuple)):
        return torch.as_tensor(np.asarray(wav, dtype=np.float32))
    raise InputError(
        f"Audio must be a numpy array or a torch tensor, got {type(wav).__name__}."
    )


def _to_float(wav):
    """Scale integer PCM to float32 in [-1, 1]; keep float audio as float32."""
    if wav.dtype in _INT_SCALE:
        offset, scale = _INT_SCALE[wav.dtype]
        # float64 first so int32 values keep their precision before scaling
        return ((wav.to(torch.float64) - offset) / scale).to(torch.float32)
    if wav.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        return wav.to(torch.float32)
    raise InputError(
        f"Unsupported audio dtype {wav.dtype}. Use float32/float64 samples in [-1, 1] "
        "or int8/int16/int32/uint8 PCM."
    )


def _downmix(wav):
    """``(S,)`` or 2-D with a channel axis (see module rules) -> ``(S,)``."""
    if wav.dim() == 0:
        raise InputError("Audio is a scalar; expected samples of shape (S,), (S, C) or (C, S).")
    if wav.dim() == 1:
        return wav
    if wav.dim() > 2:
        raise InputError(
            f"Audio has {wav.dim()} dimensions {tuple(wav.shape)}; expected (S,), (S, C) "
            "or (C, S). Pass one utterance at a time."
        )
    rows, cols = wav.shape
    channel_axis = 0 if rows < cols else 1  # tie -> (S, C), soundfile's layout
    if wav.shape[channel_axis] > MAX_CHANNELS:
        raise InputError(
            f"Cannot tell channels from samples in audio of shape {tuple(wav.shape)}: "
            f"the channel axis must have at most {MAX_CHANNELS} entries. Pass (S,), "
            "(S, C) or (C, S)."
        )
    return wav.mean(dim=channel_axis)


def _check_sample_rate(sample_rate, name="sample_rate"):
    try:
        value = float(sample_rate)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number of Hz, got {sample_rate!r}.") from None
    if not math.isfinite(value) or value <= 0:
        raise InputError(f"{name} must be positive, got {sample_rate!r}.")
    if value != int(value):
        raise InputError(
            f"{name} must be a whole number of Hz, got {sample_rate!r}."
        )
    return int(value)


#: Largest reduced rate ratio (``rate / gcd``) resampled with torchaudio's polyphase
#: sinc filter; its kernel has ``(target/gcd) x (orig/gcd)`` taps, so a rate such as
#: 25337 Hz -> 16 kHz (gcd 1) would need 400 M taps and minutes. Beyond it the
#: resampling is done in the frequency domain (O(S log S), any ratio).
MAX_POLYPHASE_RATIO = 1000


def _resample_fft(wav, orig_sr, target_sr):
    """Band-limited resampling by truncating / zero-padding the spectrum of the whole signal."""
    n = wav.shape[-1]
    n_out = max(1, int(round(n * target_sr / orig_sr)))
    spectrum = torch.fft.rfft(wav.to(torch.float64), dim=-1)
    keep = min(spectrum.shape[-1], n_out // 2 + 1)
    out = torch.zeros(wav.shape[:-1] + (n_out // 2 + 1,), dtype=spectrum.dtype, device=wav.device)
    out[..., :keep] = spectrum[..., :keep]
    return (torch.fft.irfft(out, n=n_out, dim=-1) * (n_out / n)).to(wav.dtype)


def resample(wav, orig_sr, target_sr):
    """Resample ``wav (..., S)`` from ``orig_sr`` to ``target_sr`` (no-op if equal).

    The toolkit's one resampler: the data pipeline, the API, the evaluation
    harness and the metric plugins all call it. Common rates (8, 11.025, 22.05,
    24, 44.1, 48 kHz ...) use :func:`torchaudio.functional.resample`; unusual
    ones (large reduced ratio, see :data:`MAX_POLYPHASE_RATIO`) an FFT
    resampler, so no rate can stall the caller.

    Parameters
    ----------
    wav : torch.Tensor or numpy.ndarray
        Float samples, time on the last axis.
    orig_sr, target_sr : int
        Sample rates in Hz.

    Returns
    -------
    torch.Tensor or numpy.ndarray
        A tensor (same dtype) for a tensor input, returned as is when the rates
        are equal; a float32 NumPy array for any other input.
    """
    if not isinstance(wav, torch.Tensor):
        wav = np.asarray(wav, dtype=np.float32)
        if int(orig_sr) == int(target_sr):
            return wav
        return resample(torch.from_numpy(np.ascontiguousarray(wav)), int(orig_sr), int(target_sr)).numpy()
    if orig_sr == target_sr:
        return wav
    g = math.gcd(int(orig_sr), int(target_sr))
    if max(orig_sr, target_sr) // g > MAX_POLYPHASE_RATIO:
        return _resample_fft(wav, orig_sr, target_sr)
    import torchaudio.functional as AF

    return AF.resample(wav, orig_sr, target_sr)


def prepare_waveform(wav, sample_rate, target_sr=16000, max_seconds=None):
    """Validate, convert to float mono and resample one utterance.

    Arguments
    ---------
    wav : numpy.ndarray or torch.Tensor
        ``(S,)``, ``(S, C)`` or ``(C, S)``; float or integer PCM (see the
        module docstring for the channel-axis rule and integer scaling).
    sample_rate : int
        Sample rate of ``wav`` in Hz.
    target_sr : int
        Sample rate of the output.
    max_seconds : float, optional
        Longest accepted duration; longer audio raises (it is never cut).

    Returns
    -------
    torch.Tensor
        ``(S',)`` float32 mono at ``target_sr``, on the input's device.

    Raises
    ------
    InputError
        Bad sample rate, unsupported dtype or shape, empty audio, NaN/inf
        samples, or audio longer than ``max_seconds``.

    Example
    -------
    >>> import numpy as np
    >>> stereo = np.zeros((2, 4410), dtype=np.int16)
    >>> prepare_waveform(stereo, 44100).shape
    torch.Size([1600])
    """
    sample_rate = _check_sample_rate(sample_rate)
    target_sr = _check_sample_rate(target_sr, "target_sr")
    wav = _to_float(_to_tensor(wav))
    # before downmixing: the mean over an empty axis would give NaN, not "empty"
    if wav.numel() == 0:
        raise InputError(
            f"Audio is empty (0 samples, shape {tuple(wav.shape)}); check the file or the recording."
        )
    wav = _downmix(wav)

    finite = torch.isfinite(wav)
    if not bool(finite.all()):
        n_nan = int(torch.isnan(wav).sum())
        n_inf = int(torch.isinf(wav).sum())
        raise InputError(
            f"Audio contains {n_nan} NaN and {n_inf} inf samples out of {wav.numel()}. "
            "Clean it first (e.g. numpy.nan_to_num, or re-export the file)."
        )

    seconds = wav.numel() / sample_rate
    if max_seconds is not None and seconds > max_seconds:
        raise InputError(
            f"Audio is {seconds:.2f} s long, longer than the limit of {max_seconds} s. "
            "Split it into shorter segments (e.g. at pauses) and process them one by one; "
            "it is not truncated automatically."
        )

    peak = float(wav.abs().max())
    clipped = float((wav.abs() >= CLIP_LEVEL).float().mean())
    if clipped > CLIP_FRACTION:
        logger.warning(
            "Audio looks clipped: %.1f%% of samples are at or above %.2f of full scale; "
            "results may degrade.",
            100 * clipped,
            CLIP_LEVEL,
        )
    if peak < SILENCE_PEAK:
        logger.warning(
            "Audio is silent (peak %.2e < %.0e); check the input.", peak, SILENCE_PEAK
        )

    return resample(wav, sample_rate, target_sr).contiguous()


def read_audio(path):
    """Read an audio file as it is: float32 mono samples and the file's sample rate.

    The toolkit's one audio reader (:func:`load_audio` adds validation and
    resampling on top of it). Any format/subtype libsndfile reads (WAV, FLAC,
    OGG, ...; PCM or float) is accepted; channels are averaged. The samples are
    not checked (see :func:`prepare_waveform` for that).

    Parameters
    ----------
    path : str or os.PathLike
        Audio file.

    Returns
    -------
    wav : numpy.ndarray
        ``(S,)`` float32.
    sample_rate : int
        The file's sample rate in Hz.

    Raises
    ------
    InputError
        The file is missing or unreadable (the message names the path and
        soundfile's error).
    """
    import soundfile as sf

    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(f"Audio file {path!r} does not exist.")
    try:
        # always_2d: (frames, channels) even for mono, so downmixing is uniform
        data, sample_rate = sf.read(path, dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile errors, truncated headers, etc.
        raise InputError(
            f"Cannot read audio file {path!r}: {exc}. Convert it to WAV or FLAC "
            "(e.g. with sox or ffmpeg)."
        ) from exc
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    return mono, int(sample_rate)


def load_audio(path, target_sr=16000, max_seconds=None):
    """Read an audio file as validated float mono at ``target_sr``.

    :func:`read_audio` followed by :func:`prepare_waveform`.

    Arguments
    ---------
    path : str or os.PathLike
        Audio file.
    target_sr : int
        Output sample rate.
    max_seconds : float, optional
        Longest accepted duration (see :func:`prepare_waveform`).

    Returns
    -------
    torch.Tensor
        ``(S,)`` float32.

    Raises
    ------
    InputError
        The file is missing or unreadable (the message names the path and
        soundfile's error), or its content fails validation.
    """
    mono, sample_rate = read_audio(path)
    try:
        return prepare_waveform(mono, sample_rate, target_sr, max_seconds=max_seconds)
    except InputError as exc:
        raise InputError(f"{os.fspath(path)}: {exc}") from exc


def is_silent(wav, threshold_db=-60.0):
    """Whether the RMS level of ``wav`` is below ``threshold_db`` dBFS.

    Full scale is 1.0 (integer PCM is scaled first, as in
    :func:`prepare_waveform`). RMS rather than peak is used so that a single
    click does not make a silent recording count as speech. Empty audio is
    silent.

    Arguments
    ---------
    wav : numpy.ndarray or torch.Tensor
        Samples of any shape.
    threshold_db : float
        Level in dB relative to full scale (e.g. ``-60``).

    Returns
    -------
    bool
    """
    wav = _to_float(_to_tensor(wav))
    if wav.numel() == 0:
        return True
    rms = float(wav.double().pow(2).mean().sqrt())
    if rms == 0.0:
        return True
    return 20.0 * math.log10(rms) < threshold_db
