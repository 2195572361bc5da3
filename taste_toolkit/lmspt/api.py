"""``LmsptTokenizer``: a trained LM-SPT model as a product (encode, decode, save, load).

Same method surface as :class:`taste_toolkit.api.TasteTokenizer`, but the tokens
are **frame-aligned** (``alignment = "frame"``): a fixed number per second
(25 / 12.5 / 6.25 Hz), no transcript needed. Tokens are
:class:`~taste_toolkit.tokens.TasteTokens` with ``level="frame"``,
``codes (M, 1 + R_ac)`` (column 0 = semantic stream) and ``frame_rate`` = token rate.

>>> tok = LmsptTokenizer.from_pretrained("results/lmspt/1986/tokenizer")   # doctest: +SKIP
>>> tokens = tok.encode(wav, 16000)                                          # doctest: +SKIP
>>> tokens.codes.shape, tokens.frame_rate                                    # doctest: +SKIP
(torch.Size([63, 8]), 12.5)
>>> speech = tok.decode(tokens)          # log-mel frames -> Griffin-Lim waveform  # doctest: +SKIP

The folder format is the toolkit's standalone format (``taste_config.json`` +
``model.safetensors``; nothing executable); ``metadata.tokenizer == "lmspt"`` and
``metadata.alignment == "frame"`` tell loaders which class reads it
(:func:`load_tokenizer`).

Validation, padding, folder handling and vocoding are shared with the
text-aligned TASTE tokenizer through :class:`~taste_toolkit.tokenizer_base.TokenizerBase`;
this module holds only what follows from the tokens being frame-aligned.
"""

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import List, Optional

import torch

from taste_toolkit.errors import InputError
from taste_toolkit.models.lmspt import LmsptModel
from taste_toolkit.tokenizer_base import (MAX_SECONDS, DecodedAudio, TokenizerBase, describe, pad_rows,
                                          tokenizer_type)
from taste_toolkit.tokens import TasteTokens

logger = logging.getLogger(__name__)

__all__ = ["DecodedFrames", "LmsptTokenizer", "MAX_SECONDS", "TOKENIZER_TYPE", "load_tokenizer"]

TOKENIZER_TYPE = "lmspt"
REQUIRED = ("encoder", "semantic_downsampler", "semantic_quantizer", "decoder", "aux_decoder")


@dataclass
class DecodedFrames(DecodedAudio):
    """Output of :meth:`LmsptTokenizer.decode`: one entry per utterance.

    ``features`` are the predicted Whisper log-mels ``(F, n_mels)`` (100 Hz);
    ``waveforms`` come from the vocoder (``None`` without one).
    """

    features: List[torch.Tensor]
    waveforms: Optional[List[torch.Tensor]]
    sample_rate: Optional[int]


class LmsptTokenizer(TokenizerBase):
    """Frozen Whisper + downsamplers + split RVQ + mel decoders (+ mel vocoder).

    Arguments
    ---------
    model : LmsptModel
    vocoder : Vocoder, optional
        Log-mel -> waveform (``whisper_mel_griffin_lim``); without it ``decode``
        returns log-mel frames only.
    device : str
    """

    alignment = "frame"
    tokenizer_type = TOKENIZER_TYPE
    display_name = "LM-SPT"
    required_components = REQUIRED
    vocoder_hint = "whisper_mel_griffin_lim"

    # ------------------------------------------------------------ identity
    def _components(self):
        m = self.model
        return {
            "encoder": m.encoder,
            "semantic_downsampler": m.semantic_downsampler,
            "acoustic_downsampler": m.acoustic_downsampler,
            "semantic_quantizer": m.semantic_quantizer,
            "acoustic_quantizer": m.acoustic_quantizer,
            "decoder": m.decoder,
            "aux_decoder": m.aux_decoder,
            "vocoder": self.vocoder,
        }

    def _fingerprint(self):
        """Hash of what gives codes their meaning: the token-side plugins and the codebooks."""
        h = hashlib.sha1(TOKENIZER_TYPE.encode())
        comps = self._components()
        for role in ("semantic_downsampler", "acoustic_downsampler", "semantic_quantizer", "acoustic_quantizer"):
            spec = getattr(comps[role], "build_spec", None) or {}
            h.update(json.dumps([role, spec.get("kind"), spec.get("name"), spec.get("options")], sort_keys=True).encode())
        self._hash_weights(h, self.model.quantizers)
        return h.hexdigest()[:16]

    @property
    def token_rate(self):
        return float(self.model.token_rate)

    def _info(self):
        """Token rate, code geometry and bitrates for :meth:`info`."""
        m = self.model
        return {
            "speech_token_level": "frame",
            "token_rate_hz": self.token_rate,
            "num_quantizers": sum(q.num_quantizers for q in m.quantizers),
            "codebook_size": m.semantic_quantizer.codebook_size,
            "codebook_sizes": [q.codebook_size for q in m.quantizers for _ in range(q.num_quantizers)],
            "bits_per_speech_token": m.bits_per_token,
            "bitrate_bps": self.token_rate * m.bits_per_token,
            "semantic_bitrate_bps": self.token_rate * m.semantic_quantizer.bits_per_vector,
        }

    # ------------------------------------------------------------ save / load
    def _metadata(self):
        m = self.model
        return {
            "token_rate_hz": self.token_rate,
            "semantic_subtraction": bool(m.semantic_subtraction),
            "recon_weight": float(m.recon_weight),
            "distill_weight": float(m.distill_weight),
            "commitment_weight": float(m.commitment_weight),
        }

    @classmethod
    def _from_components(cls, comps, meta, device):
        model = LmsptModel(
            comps["encoder"], comps["semantic_downsampler"], comps["semantic_quantizer"], comps["decoder"],
            comps["aux_decoder"], comps.get("acoustic_downsampler"), comps.get("acoustic_quantizer"),
            semantic_subtraction=meta.get("semantic_subtraction", True), recon_weight=meta.get("recon_weight", 1.0),
            distill_weight=meta.get("distill_weight", 1.0), commitment_weight=meta.get("commitment_weight", 1.0),
        )
        return cls(model, comps.get("vocoder"), device)

    # ------------------------------------------------------------ encode
    @torch.no_grad()
    def encode(self, audio, sample_rate, text=None, return_embeddings=False, batch_size=16):
        """Tokenize speech into frame-rate codes.

        Arguments
        ---------
        audio : array or tensor, or a list of them
            One utterance ``(S,)`` / ``(S, C)`` / ``(C, S)`` (float or int PCM), or a list.
        sample_rate : int or list of int
            Sample rate(s); resampled to 16 kHz, stereo downmixed.
        text : str or list of str, optional
            Transcript(s), only recorded in the tokens (frame tokens do not use text).
        return_embeddings : bool
            Keep the decoder-input vectors ``z`` ``(M, D)`` too.
        batch_size : int
            Utterances per forward pass.

        Returns
        -------
        TasteTokens (``level="frame"``), or a list of them for list inputs.

        Raises
        ------
        InputError
            Bad audio (empty, NaN/inf, unsupported shape or rate, longer than 30 s),
            transcripts that do not match the audio one to one, or mismatched list lengths.
        """
        return self._encode(audio, sample_rate, text, batch_size, return_embeddings=return_embeddings)

    def _split_inputs(self, audio, text):
        """The audio decides: a list = a batch; the optional transcripts must follow it."""
        single = not isinstance(audio, (list, tuple))
        audios = [audio] if single else list(audio)
        if text is not None and single != isinstance(text, str):
            raise InputError("Give one transcript string (or None) per utterance: a string for one audio, "
                             "a list for a list of audio.")
        texts = [text] if single else ([None] * len(audios) if text is None else list(text))
        return single, audios, texts

    def _encode_batch(self, audios, rates, texts, return_embeddings=False):
        sr = self.input_sample_rate
        wavs, wav, wav_lengths = self._waveforms(audios, rates)
        enc = self.model.encode_audio(wav, wav_lengths)
        codes, lengths = self.model.encode(enc)
        emb = self.model.embed(codes)[0] if return_embeddings else None
        empty = torch.zeros(0, dtype=torch.long)
        results = []
        for i, text in enumerate(texts):
            m = int(lengths[i])
            results.append(TasteTokens(
                text=text or "", words=(text or "").split(), text_ids=empty, word_ids=empty, level="frame",
                codes=codes[i, :m].cpu(), embeddings=emb[i, :m].cpu() if emb is not None else None,
                frame_rate=self.token_rate, duration=wavs[i].shape[0] / sr, fingerprint=self.fingerprint,
                extra={"alignment": self.alignment},
            ))
        return results

    # ------------------------------------------------------------ decode
    def _check_token_fields(self, tokens):
        if tokens.level != "frame":
            raise InputError(f"LM-SPT decodes frame-level tokens, got level {tokens.level!r} (a TASTE tokenizer's?).")

    def _check_token_codes(self, tokens):
        codes = tokens.codes
        width = 1 + (self.model.acoustic_quantizer.num_quantizers if self.model.acoustic_quantizer is not None else 0)
        if not isinstance(codes, torch.Tensor):
            raise InputError(f"codes must be an (M>=1, 1..{width}) integer tensor, got {describe(codes)}; "
                             "use tokens made by this tokenizer's encode.")
        if codes.dim() != 2 or not 1 <= codes.shape[1] <= width or codes.shape[0] == 0:
            raise InputError(f"codes must be (M>=1, 1..{width}), got {tuple(codes.shape)}.")
        for q, col in ((self.model.semantic_quantizer, codes[:, :1]), (self.model.acoustic_quantizer, codes[:, 1:])):
            if col.numel() and (col.min() < 0 or col.max() >= q.codebook_size):
                raise InputError(f"codes must be in [0, {q.codebook_size}) for their stream.")

    @torch.no_grad()
    def decode_features(self, tokens, acoustic_layers=None, use_aux_decoder=False):
        """Predicted log-mels ``[(F, n_mels)]`` for one or several tokens.

        Arguments
        ---------
        acoustic_layers : int, optional
            Use only the first ``k`` acoustic RVQ layers (0 = semantic stream only);
            ``None`` = all the tokens carry.
        use_aux_decoder : bool
            Decode the semantic stream with the small auxiliary decoder (the
            distillation path) instead of the main decoder.
        """
        batch = self._token_batch(tokens)
        if acoustic_layers is not None and (not isinstance(acoustic_layers, int) or acoustic_layers < 0):
            raise InputError(f"acoustic_layers must be an integer >= 0 (0 = semantic stream only), got {acoustic_layers!r}.")
        keep = 1 + (acoustic_layers if acoustic_layers is not None else 10**6)
        rows = [t.codes[:, :keep] for t in batch]
        if len({r.shape[1] for r in rows}) > 1:
            raise InputError("All tokens of a batch must carry the same number of streams.")
        codes, lengths = pad_rows(rows, -1)
        z, s_z = self.model.embed(codes.to(self.device))
        lengths = lengths.to(self.device)
        u = self.model.decoder.frames_per_token
        # Whisper's log-mel has S // 160 frames: trim the last token's overhang to the source length.
        frames = torch.tensor([int(round(t.duration * 16000)) // 160 if t.duration > 0 else int(r.shape[0]) * u
                               for t, r in zip(batch, rows)], device=self.device)
        dec, inp = (self.model.aux_decoder, s_z) if use_aux_decoder else (self.model.decoder, z)
        mels, mel_lengths = dec.generate(None, None, inp, lengths, num_frames=frames)
        return [mels[i, : int(mel_lengths[i])].cpu() for i in range(len(batch))]

    @torch.no_grad()
    def vocode(self, features):
        """Waveforms ``[(L,)]`` at ``self.vocoder.sample_rate`` from log-mels ``[(F, n_mels)]``."""
        return self._vocode(features)

    def _vocoder_input(self, row):
        return row.float()

    def decode(self, tokens, **options):
        """Tokens -> log-mels -> waveforms; ``options`` go to :meth:`decode_features`."""
        features = self.decode_features(tokens, **options)
        wavs, rate = self._audio(features)
        return DecodedFrames(features, wavs, rate)


def load_tokenizer(folder, device="cpu", allow_external=False):
    """Load any exported tokenizer, dispatching on ``metadata.tokenizer`` (``"lmspt"`` or TASTE).

    ``allow_external`` is passed to ``from_pretrained`` (see
    :func:`taste_toolkit.pretrained.standalone.load_components`).
    """
    if tokenizer_type(folder) == TOKENIZER_TYPE:
        return LmsptTokenizer.from_pretrained(folder, device, allow_external=allow_external)
    from taste_toolkit.api import TasteTokenizer

    return TasteTokenizer.from_pretrained(folder, device, allow_external=allow_external)
