"""Prosody supervision: ask each word's speech token how the word was spoken.

Why: the aggregator's continuous word vectors know the voice and most of the
prosody (probes 0.98 / 0.72), but the 4 x 8-bit RVQ tokens keep almost none of
the prosody (0.14, chance 0.125; ``recipes/librispeech/RESULTS.md``, sessions
6-7). Nothing downstream asks for it: the unit decoder predicts Whisper k-means
units, which carry the words and little of the pitch or loudness, so the
codebooks spend their 32 bits per word on what dominates the vectors' variance.

This auxiliary loss gives the tokens a reason to keep it. From the waveform
alone (no corpus labels) each word gets four acoustic descriptors over its
frames (the word of every unit, ``unit_word_ids``):

* log duration (frames),
* mean log F0 over its voiced frames (YIN),
* voiced fraction,
* mean log energy,

and a linear head reads them back from the word's *quantized* vector, so the
gradient (straight through the RVQ, into its input projection and the
aggregator) shapes what the codebooks keep. Each
descriptor is standardized over the batch's words, so the loss is scale free:

    L_pro = mean over (words, descriptors) of (head(z_hat_w) - standardized target)^2

A linear head, as the probes are linear. ``weight: 0`` = the paper's loss
(the head is then not built into the loss at all). Like FastSpeech 2's
variance predictors, but on the tokenizer's side of the bottleneck.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from taste_toolkit.errors import ConfigError, InputError

#: Names of the per-word descriptors, in the order of the target's last axis.
DESCRIPTORS = ("log_duration", "log_f0", "voiced_fraction", "log_energy")


def yin_frames(wavs, sample_rate, hop, num_frames, fmin=60.0, fmax=500.0, threshold=0.15):
    """F0 (Hz), aperiodicity and log energy of frames whose samples are centred on ``(i + 0.5) * hop``.

    Each frame reads ``W + tau_max + 1`` samples centred there: the ``W``-sample
    window (whose energy is the log energy) is its first part, and the lags reach
    ``tau_max`` samples past it.

    YIN (de Cheveigne & Kawahara, 2002) steps 2-5, batched with FFTs: the
    difference function over a window of ``W`` samples, its cumulative-mean
    normalization ``d'``, and the first local minimum of ``d'`` below
    ``threshold`` (else the global minimum) in the lag range of ``[fmin, fmax]``,
    refined by a parabola through its neighbours.

    Arguments
    ---------
    wavs : torch.Tensor
        ``(B, T)`` waveforms (zeros after each one's end).
    sample_rate : int
        Hz.
    hop : int
        Samples between frame centres (``sample_rate / frame rate``).
    num_frames : int
        Frames ``S`` per row.

    Returns
    -------
    f0, aperiodicity, log_energy : torch.Tensor
        ``(B, S)`` each; ``aperiodicity`` is ``d'`` at the chosen lag (near 0 =
        periodic, voiced; near 1 = noise or silence).
    """
    if wavs.dim() != 2:
        raise InputError(f"yin_frames expects (B, T) waveforms, got shape {tuple(wavs.shape)}.")
    if not 0 < fmin < fmax < sample_rate / 2:
        raise ConfigError(f"Need 0 < fmin < fmax < sample_rate / 2; got fmin={fmin}, fmax={fmax}, sr={sample_rate}.")
    tau_min = max(2, int(sample_rate / fmax))
    tau_max = int(math.ceil(sample_rate / fmin))
    window = max(tau_max, 2 * hop)  # the difference function's integration window W
    length = window + tau_max + 1  # samples each frame reads
    x = wavs.float()
    centres = (torch.arange(num_frames, device=x.device) * hop + hop // 2)
    pad = length
    # Frames may reach past the waveform (the unit grid rounds up): they read zeros.
    x = F.pad(x, (pad, pad + max(0, num_frames * hop - x.shape[1])))
    starts = centres + pad - length // 2  # (S,)
    index = starts[:, None] + torch.arange(length, device=x.device)[None]  # (S, L)
    frames = x[:, index]  # (B, S, L)
    frames = frames - frames.mean(-1, keepdim=True)
    head = frames[..., :window]
    n_fft = 1 << int(math.ceil(math.log2(length + window)))
    spec = torch.fft.rfft(frames, n_fft) * torch.conj(torch.fft.rfft(head, n_fft))
    corr = torch.fft.irfft(spec, n_fft)[..., : tau_max + 1]  # c(tau) = sum_j x_j x_{j+tau}, j < W
    sq = F.pad(frames.pow(2).cumsum(-1), (1, 0))  # prefix sums of x^2
    taus = torch.arange(tau_max + 1, device=x.device)
    energy_at = sq[..., taus + window] - sq[..., taus]  # sum_{j=tau}^{tau+W-1} x_j^2
    diff = (energy_at[..., :1] + energy_at - 2 * corr).clamp(min=0)  # d(tau), d(0) = 0
    cum = diff[..., 1:].cumsum(-1)
    cmnd = torch.ones_like(diff)
    # A frame with no signal (digital silence) has nothing periodic: d' = 1, not 0 / 0.
    cmnd[..., 1:] = torch.where(cum > 1e-9, diff[..., 1:] * taus[1:] / cum.clamp(min=1e-9), torch.ones_like(cum))
    lagged = cmnd[..., tau_min : tau_max + 1]
    # First local minimum under the threshold (YIN step 4), else the global minimum.
    left = F.pad(lagged, (1, 0), value=float("inf"))[..., :-1]
    right = F.pad(lagged, (0, 1), value=float("inf"))[..., 1:]
    dips = (lagged < threshold) & (lagged <= left) & (lagged <= right)
    first = torch.where(dips.any(-1), dips.float().argmax(-1), lagged.argmin(-1))
    at = lagged.gather(-1, first[..., None])[..., 0]
    # Parabolic interpolation between the neighbouring lags (YIN step 5): sub-sample periods.
    before = lagged.gather(-1, (first - 1).clamp(min=0)[..., None])[..., 0]
    after = lagged.gather(-1, (first + 1).clamp(max=lagged.shape[-1] - 1)[..., None])[..., 0]
    curve = before - 2 * at + after
    inner = (first > 0) & (first < lagged.shape[-1] - 1) & (curve > 1e-9)
    shift = torch.where(inner, 0.5 * (before - after) / curve.clamp(min=1e-9), torch.zeros_like(at)).clamp(-1, 1)
    aperiodicity = at.clamp(0, 1)
    f0 = sample_rate / (first.float() + tau_min + shift)
    log_energy = torch.log(head.pow(2).mean(-1) + 1e-8)
    return f0, aperiodicity, log_energy


def word_prosody_targets(wavs, wav_lengths, unit_word_ids, sample_rate, frame_rate, voiced_threshold=0.3,
                         silence_db=-50.0):
    """The four per-word descriptors of :data:`DESCRIPTORS` and where they are defined.

    Arguments
    ---------
    wavs : torch.Tensor
        ``(B, T)`` waveforms at ``sample_rate``.
    wav_lengths : torch.Tensor
        ``(B,)`` samples per row.
    unit_word_ids : torch.Tensor
        ``(B, S)`` word of every unit frame (``-1`` = padding), at ``frame_rate``.

    Returns
    -------
    targets : torch.Tensor
        ``(B, W, 4)`` with ``W = max word id + 1``.
    mask : torch.BoolTensor
        ``(B, W, 4)``: the word exists, and for ``log_f0`` has at least two voiced frames.
    """
    hop = sample_rate / frame_rate
    if abs(hop - round(hop)) > 1e-6:
        raise ConfigError(f"Prosody targets need a whole number of samples per unit frame; "
                          f"{sample_rate} Hz / {frame_rate} Hz = {hop}.")
    hop = int(round(hop))
    b, s = unit_word_ids.shape
    f0, aperiodicity, log_energy = yin_frames(wavs, sample_rate, hop, s)
    # Frames past the audio's end are silence, never voiced.
    inside = (torch.arange(s, device=wavs.device)[None] * hop) < wav_lengths.to(wavs.device)[:, None]
    peak = torch.where(inside, log_energy, torch.full_like(log_energy, -1e9)).amax(1, keepdim=True)
    loud = log_energy > peak + silence_db / 10 * math.log(10)
    voiced = (aperiodicity < voiced_threshold) & loud & inside
    words = unit_word_ids.to(wavs.device).long()
    valid = words >= 0
    num_words = int(words.max()) + 1 if bool(valid.any()) else 0
    idx = words.clamp(min=0)

    def total(values):
        return torch.zeros(b, max(num_words, 1), device=wavs.device).scatter_add(1, idx, values * valid)

    count = total(torch.ones_like(log_energy))
    n_voiced = total(voiced.float())
    log_f0_sum = total(torch.log(f0) * voiced)
    energy = total(log_energy) / count.clamp(min=1)
    targets = torch.stack([torch.log(count.clamp(min=1)), log_f0_sum / n_voiced.clamp(min=1),
                           n_voiced / count.clamp(min=1), energy], -1)
    exists = count > 0
    mask = exists[..., None].expand(-1, -1, len(DESCRIPTORS)).clone()
    mask[..., 1] &= n_voiced >= 2
    return targets[:, :num_words], mask[:, :num_words]


def relative_to_utterance(targets, mask):
    """``targets (B, W, K)`` minus each row's mean over its words where ``mask``: how a word
    differs from the rest of its utterance (the voice's pitch and loudness, the speaking rate
    taken out). Zero where ``mask`` is False."""
    m = mask.float()
    mean = (targets * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp(min=1)
    return (targets - mean) * m


def words_from_tokens(x, word_ids, token_lengths, num_words):
    """Mean of ``x (B, N, D)`` over each word's tokens -> ``(B, W, D)``."""
    n = x.shape[1]
    valid = torch.arange(n, device=x.device)[None] < token_lengths.to(x.device)[:, None]
    ids = torch.where(valid, word_ids.to(x.device).long(), torch.full_like(word_ids, num_words).to(x.device).long())
    sums = x.new_zeros(x.shape[0], num_words + 1, x.shape[-1]).scatter_add(1, ids[..., None].expand_as(x), x)
    counts = x.new_zeros(x.shape[0], num_words + 1).scatter_add(1, ids, valid.to(x.dtype))
    return sums[:, :num_words] / counts[:, :num_words, None].clamp(min=1)


class ProsodySupervision(nn.Module):
    """A linear head from each word's quantized token to its standardized prosody descriptors.

    Arguments
    ---------
    weight : float
        Weight of the loss in the total (0 = off, the paper's loss).
    speech_dim : int
        Size of the speech tokens (the aggregator's ``output_dim``).
    sample_rate : int
        Of the training waveforms.
    frame_rate : float
        Of ``unit_word_ids`` (the units' frame rate).
    relative : bool
        Also predict each descriptor relative to its utterance's mean (8 outputs).
    speaker_dim : int
        > 0: a second linear head predicts the utterance's speaker vector (the
        speaker plugin's, e.g. a resemblyzer d-vector, of this size) from every
        word's token, loss ``1 - cosine``, added with the same weight. 0 = off.

    Example
    -------
    >>> sup = ProsodySupervision(weight=1.0, speech_dim=8, sample_rate=16000, frame_rate=50.0)
    >>> wav = torch.sin(2 * math.pi * 150 * torch.arange(16000) / 16000)[None]
    >>> words = torch.tensor([[0] * 20 + [1] * 30])
    >>> targets, mask = sup.targets(wav, torch.tensor([16000]), words)
    >>> targets.shape, round(float(targets[0, 1, 1].exp()))
    (torch.Size([1, 2, 4]), 150)
    """

    def __init__(self, weight: float, speech_dim: int, sample_rate: int = 16000, frame_rate: float = 50.0,
                 relative: bool = False, speaker_dim: int = 0):
        super().__init__()
        if weight < 0:
            raise ConfigError(f"prosody_supervision_weight must be >= 0, got {weight}.")
        self.weight = float(weight)
        self.sample_rate = int(sample_rate)
        self.frame_rate = float(frame_rate)
        self.speech_dim = int(speech_dim)
        self.relative = bool(relative)
        outputs = len(DESCRIPTORS) * (2 if self.relative else 1)
        # Text-only models have no tokens to supervise (speech_dim 0): no head.
        self.head = nn.Linear(speech_dim, outputs) if speech_dim else None
        if speaker_dim < 0:
            raise ConfigError(f"prosody supervision speaker_dim must be >= 0, got {speaker_dim}.")
        self.speaker_dim = int(speaker_dim)
        # The voice as a speaker encoder hears it: each word's token predicts its utterance's vector.
        self.speaker_head = nn.Linear(speech_dim, speaker_dim) if speech_dim and speaker_dim else None

    @property
    def active(self):
        return self.weight > 0 and self.head is not None

    @torch.no_grad()
    def targets(self, wavs, wav_lengths, unit_word_ids):
        """``(B, W, K)`` descriptors and their mask (:func:`word_prosody_targets`); with ``relative``,
        ``K = 8``: the four, then the four minus their utterance's mean (:func:`relative_to_utterance`)."""
        targets, mask = word_prosody_targets(wavs, wav_lengths, unit_word_ids, self.sample_rate, self.frame_rate)
        if self.relative:
            targets, mask = torch.cat([targets, relative_to_utterance(targets, mask)], -1), torch.cat([mask, mask], -1)
        return targets, mask

    def forward(self, speech, word_ids, token_lengths, targets, mask, speaker=None):
        """Weighted loss of the head(s) on the words' quantized vectors.

        Arguments
        ---------
        speech : SpeechTokens
            ``embeddings (B, W, D)`` at word level, or ``(B, N, D)`` per text token
            (then averaged over each word's tokens).
        word_ids, token_lengths : torch.Tensor
            ``(B, N)`` and ``(B,)``, for token-level tokens.
        targets, mask : torch.Tensor
            From :meth:`targets`, ``(B, W, K)``.
        speaker : torch.Tensor, optional
            ``(B, speaker_dim)`` speaker vectors; required when ``speaker_dim > 0``.
        """
        x = speech.embeddings
        num_words = targets.shape[1]
        if speech.level == "token":
            x = words_from_tokens(x, word_ids, token_lengths, num_words)
        elif speech.level != "word":
            raise ConfigError(f"prosody supervision reads word or token-level speech tokens, not {speech.level!r}.")
        if x.shape[1] != num_words:
            raise InputError(f"{x.shape[1]} word tokens but the unit word ids name {num_words} words: the "
                             "word times and the text tokenizer's words disagree.")
        m = mask.to(x.device)
        y = targets.to(x.device).float()
        # Standardize each descriptor over the batch's words (scale-free loss, no corpus statistics).
        n = m.float().sum((0, 1)).clamp(min=1)
        mean = (y * m).sum((0, 1)) / n
        std = (((y - mean) ** 2 * m).sum((0, 1)) / n).sqrt().clamp(min=1e-3)
        z = (y - mean) / std
        pred = self.head(x.float())
        err = (pred - z) ** 2 * m
        loss = err.sum() / m.float().sum().clamp(min=1)
        if self.speaker_head is not None:
            if speaker is None or tuple(speaker.shape) != (x.shape[0], self.speaker_dim):
                got = None if speaker is None else tuple(speaker.shape)
                raise InputError(f"Prosody supervision with speaker_dim={self.speaker_dim} needs speaker vectors "
                                 f"of shape ({x.shape[0]}, {self.speaker_dim}), got {got}.")
            words = m[..., 0].float()  # the words that exist
            cos = F.cosine_similarity(self.speaker_head(x.float()), speaker.to(x.device).float()[:, None], dim=-1)
            loss = loss + ((1 - cos) * words).sum() / words.sum().clamp(min=1)
        return self.weight * loss


__all__ = ["DESCRIPTORS", "ProsodySupervision", "relative_to_utterance", "word_prosody_targets", "words_from_tokens",
           "yin_frames"]
