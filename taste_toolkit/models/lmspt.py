"""LM-SPT model (arXiv 2506.16738) wired from registry plugins.

::

    audio -> frozen Whisper (encoder plugin, 50 Hz) ─ keys ──► semantic downsampler ─► semantic VQ ─► s_z
                                                    └ values ─► acoustic downsampler ─(- s_z)─► acoustic RVQ ─► a_z
    z = s_z + a_z ─► main mel decoder ─► Whisper log-mel (100 Hz) ─► L_recon (L1 vs. the real log-mel)
    s_z ─► small aux mel decoder ─► log-mel ─► the SAME frozen Whisper ─► L_distill (MSE vs. Whisper(real))

``L = w_recon L_recon + w_distill L_distill + w_commit (commit_sem + commit_ac)``.
The distillation compares two outputs of one frozen encoder on its own 50 Hz grid,
so the token rate (25 / 12.5 / 6.25 Hz) needs no teacher/student alignment; its
gradient flows through the frozen Whisper into the aux decoder, the semantic
quantizer and the semantic downsampler (never into Whisper's weights).

Codes are ``(B, M, 1 + R_ac)``: column 0 is the semantic stream, 1.. the acoustic RVQ.
"""

from dataclasses import dataclass, field
from typing import Dict

import torch
from torch import nn

from taste_toolkit.errors import ConfigError, InputError
from taste_toolkit.plugins.decoder.mel_transformer import fit_frames
from taste_toolkit.utils import lengths_to_mask


@dataclass
class LmsptTokens:
    """Quantized frame-rate tokens of a batch.

    Attributes
    ----------
    codes : torch.Tensor
        ``(B, M, 1 + R_ac)``, ``-1`` at padding (and at dropped RVQ layers in training).
    embeddings : torch.Tensor
        ``(B, M, D)`` decoder input ``z = s_z + a_z``.
    semantic : torch.Tensor
        ``(B, M, D)`` semantic stream alone ``s_z``.
    lengths : torch.Tensor
        ``(B,)`` valid tokens.
    """

    codes: torch.Tensor
    embeddings: torch.Tensor
    semantic: torch.Tensor
    lengths: torch.Tensor


@dataclass
class LmsptForwardOutput:
    """Losses and predictions of one training step."""

    loss: torch.Tensor
    losses: Dict[str, torch.Tensor]
    mels: torch.Tensor
    aux_mels: torch.Tensor
    tokens: LmsptTokens
    metrics: Dict[str, float] = field(default_factory=dict)


def whisper_features(encoder, mels, mel_lengths):
    """Frozen Whisper output (the encoder plugin's ``keys`` tap) of log-mels, differentiable in ``mels``.

    Arguments
    ---------
    encoder : WhisperTapEncoder
        The frozen encoder plugin (its weights get no gradient: ``requires_grad`` is off).
    mels : torch.Tensor
        ``(B, F, n_mels)`` Whisper-scaled log-mels (100 Hz), zeros after each length.
    mel_lengths : torch.Tensor
        ``(B,)`` valid frames.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        ``(B, ceil(F / 2), D)`` features (zeros at padding) and their lengths.
    """
    # Same masked, unpadded path as the encoder's own forward on audio, so identical
    # log-mels give identical features (the encoder computes the log-mel itself there).
    out = encoder._run_encoder(mels.transpose(1, 2), mel_lengths.long(), use_mask=True)
    return out.keys, out.lengths


def whisper_discrepancy(encoder, mels, mel_lengths, target, target_lengths):
    """LM-SPT's resynthesis-distillation loss: MSE between Whisper features of ``mels`` and ``target``.

    Arguments
    ---------
    mels : torch.Tensor
        ``(B, F, n_mels)`` predicted log-mels.
    mel_lengths : torch.Tensor
        ``(B,)`` valid frames (those of the original audio).
    target : torch.Tensor
        ``(B, T, D)`` Whisper features of the original audio (no gradient needed).
    target_lengths : torch.Tensor
        ``(B,)`` valid feature frames.

    Returns
    -------
    torch.Tensor
        Scalar mean squared difference over valid frames and feature dimensions
        (the release averages over the 30-s padded window; we skip the padding).
    """
    feats, lengths = whisper_features(encoder, mels, mel_lengths)
    if not torch.equal(lengths.cpu(), target_lengths.cpu()):
        raise InputError(f"Whisper feature lengths {lengths.tolist()} differ from the target's "
                         f"{target_lengths.tolist()}: predict as many mel frames as the original has.")
    t = min(feats.shape[1], target.shape[1])
    mask = lengths_to_mask(lengths.to(feats.device), t)[..., None].to(feats.dtype)
    diff = (feats[:, :t] - target[:, :t].to(feats.dtype).detach()) * mask
    return diff.pow(2).sum() / (mask.sum().clamp(min=1) * feats.shape[-1])


class LmsptModel(nn.Module):
    """LM-SPT tokenizer + training losses, composed of plugins.

    Arguments
    ---------
    encoder : Encoder
        Frozen Whisper (``whisper`` plugin): input taps and distillation teacher.
    semantic_downsampler, acoustic_downsampler : Aggregator
        ``downsample`` plugins (same stride); the acoustic one may be ``None``
        (semantic stream only).
    semantic_quantizer, acoustic_quantizer : Quantizer
        E.g. ``rvq`` with 1 layer and ``rvq`` with ``R_ac`` layers (+ dropout).
    decoder : UnitDecoder
        Main ``mel_transformer`` decoder on ``z = s_z + a_z``.
    aux_decoder : UnitDecoder
        Small ``mel_transformer`` on ``s_z`` only (training-time distillation path).
    semantic_subtraction : bool
        Quantize ``acoustic - s_z`` (the acoustic RVQ codes what the semantic code misses).
    recon_weight, distill_weight, commitment_weight : float
        Loss weights.
    """

    needs_audio = True

    def __init__(self, encoder, semantic_downsampler, semantic_quantizer, decoder, aux_decoder,
                 acoustic_downsampler=None, acoustic_quantizer=None, semantic_subtraction=True,
                 recon_weight=1.0, distill_weight=1.0, commitment_weight=1.0):
        super().__init__()
        self.encoder = encoder
        self.semantic_downsampler, self.semantic_quantizer = semantic_downsampler, semantic_quantizer
        self.acoustic_downsampler, self.acoustic_quantizer = acoustic_downsampler, acoustic_quantizer
        self.decoder, self.aux_decoder = decoder, aux_decoder
        self.semantic_subtraction = semantic_subtraction
        self.recon_weight, self.distill_weight, self.commitment_weight = recon_weight, distill_weight, commitment_weight
        self._check()

    def _check(self):
        def fail(msg):
            raise ConfigError(f"Incompatible LM-SPT plugins: {msg}")

        if (self.acoustic_downsampler is None) != (self.acoustic_quantizer is None):
            fail("give both acoustic_downsampler and acoustic_quantizer, or neither.")
        dim = self.semantic_downsampler.output_dim
        parts = [("semantic_quantizer.input_dim", self.semantic_quantizer.input_dim),
                 ("decoder.speech_dim", self.decoder.speech_dim), ("aux_decoder.speech_dim", self.aux_decoder.speech_dim)]
        if self.acoustic_downsampler is not None:
            parts += [("acoustic_downsampler.output_dim", self.acoustic_downsampler.output_dim),
                      ("acoustic_quantizer.input_dim", self.acoustic_quantizer.input_dim)]
            if self.acoustic_downsampler.stride != self.semantic_downsampler.stride:
                fail("the semantic and acoustic downsamplers need the same stride (one token grid).")
        for name, value in parts:
            if value != dim:
                fail(f"{name}={value} but the semantic downsampler outputs {dim}; use one width everywhere.")
        mel_rate = 2 * self.encoder.frame_rate  # Whisper: 100 Hz log-mel, 50 Hz encoder frames
        for name, dec in (("decoder", self.decoder), ("aux_decoder", self.aux_decoder)):
            if dec.n_mels != self.encoder.n_mels:
                fail(f"{name}.n_mels={dec.n_mels} but the Whisper encoder reads {self.encoder.n_mels} mel bins.")
            if abs(dec.frames_per_token * self.token_rate - mel_rate) > 1e-6:
                fail(f"{name}.frames_per_token={dec.frames_per_token} at {self.token_rate} Hz tokens gives "
                     f"{dec.frames_per_token * self.token_rate} Hz, not the {mel_rate} Hz log-mel; set it to "
                     f"{mel_rate / self.token_rate:g}.")

    # ------------------------------------------------------------ geometry
    @property
    def token_rate(self):
        """Tokens per second (encoder rate / downsampling stride)."""
        return self.encoder.frame_rate / self.semantic_downsampler.stride

    @property
    def quantizers(self):
        return [q for q in (self.semantic_quantizer, self.acoustic_quantizer) if q is not None]

    @property
    def bits_per_token(self):
        """Bits of one frame's codes, all streams."""
        return float(sum(q.bits_per_vector for q in self.quantizers))

    # ------------------------------------------------------------ audio side
    def encode_audio(self, wavs, wav_lengths):
        """Frozen encoder taps (``EncoderOutput``) of ``wavs (B, S)`` at 16 kHz."""
        return self.encoder(wavs, wav_lengths)

    @torch.no_grad()
    def log_mels(self, wavs, wav_lengths):
        """Whisper log-mels ``(B, F, n_mels)`` of each utterance (its own STFT and floor) + ``(B,)`` lengths."""
        rows = [self.encoder.log_mel(w[:n]).T for w, n in zip(wavs, wav_lengths.tolist())]
        lengths = torch.tensor([r.shape[0] for r in rows], device=wavs.device)
        out = wavs.new_zeros(len(rows), int(lengths.max()), self.encoder.n_mels)
        for i, r in enumerate(rows):
            out[i, : r.shape[0]] = r
        return out, lengths

    # ------------------------------------------------------------ tokens
    def _acoustic_input(self, encoder_out, s_z):
        a = self.acoustic_downsampler(None, None, None, encoder_out).embeddings
        return a - s_z if self.semantic_subtraction else a

    def quantize(self, encoder_out):
        """Training path: ``(LmsptTokens, semantic QuantizerOutput, acoustic QuantizerOutput or None)``."""
        s = self.semantic_downsampler(None, None, None, encoder_out)
        sq = self.semantic_quantizer(s.embeddings, s.lengths)
        s_z, z, codes, aq = sq.quantized, sq.quantized, sq.codes, None
        if self.acoustic_quantizer is not None:
            aq = self.acoustic_quantizer(self._acoustic_input(encoder_out, s_z), s.lengths)
            z, codes = s_z + aq.quantized, torch.cat([sq.codes, aq.codes], -1)
        return LmsptTokens(codes, z, s_z, s.lengths), sq, aq

    @torch.no_grad()
    def encode(self, encoder_out):
        """Deterministic codes ``(B, M, 1 + R_ac)`` (``-1`` at padding) and lengths ``(B,)``."""
        s = self.semantic_downsampler(None, None, None, encoder_out)
        codes = self.semantic_quantizer.encode(s.embeddings, s.lengths)
        if self.acoustic_quantizer is not None:
            s_z = self.semantic_quantizer.decode(codes)
            ac = self.acoustic_quantizer.encode(self._acoustic_input(encoder_out, s_z), s.lengths)
            codes = torch.cat([codes, ac], -1)
        return codes, s.lengths

    def embed(self, codes):
        """``(z, s_z)``, each ``(B, M, D)``, from codes ``(B, M, 1 + R')``; ``R' = 0`` = semantic only."""
        if codes.dim() != 3 or codes.shape[-1] < 1:
            raise InputError(f"LM-SPT codes must be (B, M, 1 + R), got {tuple(codes.shape)}.")
        s_z = self.semantic_quantizer.decode(codes[..., :1])
        if codes.shape[-1] == 1 or self.acoustic_quantizer is None:
            return s_z, s_z
        return s_z + self.acoustic_quantizer.decode(codes[..., 1:]), s_z

    # ------------------------------------------------------------ training
    def forward(self, encoder_out, mels, mel_lengths):
        """All LM-SPT losses for a batch.

        Arguments
        ---------
        encoder_out : EncoderOutput
            Frozen taps of the original audio; ``keys`` are also the distillation target.
        mels : torch.Tensor
            ``(B, F, n_mels)`` Whisper log-mels of the original audio (reconstruction target).
        mel_lengths : torch.Tensor
            ``(B,)`` valid frames.
        """
        tokens, sq, aq = self.quantize(encoder_out)
        main = self.decoder(None, None, tokens.embeddings, tokens.lengths, mels, mel_lengths)
        aux, _ = self.aux_decoder.predict(tokens.semantic, tokens.lengths)
        aux = fit_frames(aux, mels.shape[1]) * lengths_to_mask(mel_lengths, mels.shape[1])[..., None]
        distill = whisper_discrepancy(self.encoder, aux, mel_lengths, encoder_out.keys, encoder_out.lengths)
        losses = {"recon": main.loss, "distill": distill, "commit_semantic": sq.loss}
        commit = sq.loss
        if aq is not None:
            losses["commit_acoustic"] = aq.loss
            commit = commit + aq.loss
        loss = self.recon_weight * main.loss + self.distill_weight * distill + self.commitment_weight * commit
        metrics = {f"sem_{k}": v for k, v in sq.metrics.items() if k != "bits_per_vector"}
        if aq is not None:
            metrics.update({f"ac_{k}": v for k, v in aq.metrics.items() if k != "bits_per_vector"})
        return LmsptForwardOutput(loss, losses, main.logits, aux, tokens, metrics)
