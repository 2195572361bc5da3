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
"""

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import List, Optional

import torch

from taste_toolkit import __version__
from taste_toolkit.api import _pad
from taste_toolkit.audio import prepare_waveform
from taste_toolkit.errors import InputError, MissingResourceError
from taste_toolkit.models.lmspt import LmsptModel
from taste_toolkit.pretrained.standalone import load_components, read_config, save_components
from taste_toolkit.tokens import TasteTokens

logger = logging.getLogger(__name__)

TOKENIZER_TYPE = "lmspt"
MAX_SECONDS = 30.0  # the Whisper window; longer audio is refused, never cut
REQUIRED = ("encoder", "semantic_downsampler", "semantic_quantizer", "decoder", "aux_decoder")


@dataclass
class DecodedFrames:
    """Output of :meth:`LmsptTokenizer.decode`: one entry per utterance.

    ``features`` are the predicted Whisper log-mels ``(F, n_mels)`` (100 Hz);
    ``waveforms`` come from the vocoder (``None`` without one).
    """

    features: List[torch.Tensor]
    waveforms: Optional[List[torch.Tensor]]
    sample_rate: Optional[int]


class LmsptTokenizer:
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

    def __init__(self, model, vocoder=None, device="cpu"):
        self.model = model.to(device).eval()
        self.vocoder = vocoder.to(device).eval() if vocoder is not None else None
        self.device = torch.device(device)
        self.fingerprint = self._fingerprint()

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
        for q in self.model.quantizers:
            for key, value in sorted(q.state_dict().items()):
                h.update(key.encode())
                h.update(value.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    @property
    def token_rate(self):
        return float(self.model.token_rate)

    def info(self):
        """Plain-data summary: alignment kind, token rate, bitrate, plugins, parameter counts."""
        comps = self._components()
        m = self.model
        params = {r: sum(p.numel() for p in o.parameters()) for r, o in comps.items() if isinstance(o, torch.nn.Module)}
        return {
            "tokenizer": TOKENIZER_TYPE,
            "alignment": self.alignment,
            "speech_token_level": "frame",
            "token_rate_hz": self.token_rate,
            "num_quantizers": sum(q.num_quantizers for q in m.quantizers),
            "codebook_size": m.semantic_quantizer.codebook_size,
            "codebook_sizes": [q.codebook_size for q in m.quantizers for _ in range(q.num_quantizers)],
            "bits_per_speech_token": m.bits_per_token,
            "bitrate_bps": self.token_rate * m.bits_per_token,
            "semantic_bitrate_bps": self.token_rate * m.semantic_quantizer.bits_per_vector,
            "plugins": {r: getattr(o, "build_spec", {}).get("name", type(o).__name__) for r, o in comps.items() if o is not None},
            "parameters": params,
            "fingerprint": self.fingerprint,
            "vocoder_sample_rate": self.vocoder.sample_rate if self.vocoder is not None else None,
            "toolkit_version": __version__,
        }

    # ------------------------------------------------------------ save / load
    def save_pretrained(self, folder):
        """Write a standalone folder (JSON config + safetensors)."""
        m = self.model
        save_components(folder, self._components(), metadata={
            "tokenizer": TOKENIZER_TYPE,
            "alignment": self.alignment,
            "token_rate_hz": self.token_rate,
            "semantic_subtraction": bool(m.semantic_subtraction),
            "recon_weight": float(m.recon_weight),
            "distill_weight": float(m.distill_weight),
            "commitment_weight": float(m.commitment_weight),
            "fingerprint": self.fingerprint,
            "toolkit_version": __version__,
        })
        return folder

    @classmethod
    def from_pretrained(cls, folder, device="cpu", allow_external=False):
        """Load a folder written by :meth:`save_pretrained` (no code is run from it).

        ``allow_external=True`` follows component options that name files or models
        outside the folder (absolute paths, hub ids); they are refused by default.
        """
        kind = read_config(folder)["metadata"].get("tokenizer", "taste")
        if kind != TOKENIZER_TYPE:
            raise InputError(f"{folder!r} holds a {kind!r} tokenizer, not LM-SPT; load it with "
                             "taste_toolkit.lmspt.load_tokenizer (or TasteTokenizer.from_pretrained).")
        comps, config = load_components(folder, device=device, allow_external=allow_external)
        for role in REQUIRED:
            if comps.get(role) is None:
                raise MissingResourceError(f"Checkpoint {folder!r} has no {role!r} component; re-export it.")
        meta = config["metadata"]
        model = LmsptModel(
            comps["encoder"], comps["semantic_downsampler"], comps["semantic_quantizer"], comps["decoder"],
            comps["aux_decoder"], comps.get("acoustic_downsampler"), comps.get("acoustic_quantizer"),
            semantic_subtraction=meta.get("semantic_subtraction", True), recon_weight=meta.get("recon_weight", 1.0),
            distill_weight=meta.get("distill_weight", 1.0), commitment_weight=meta.get("commitment_weight", 1.0),
        )
        tok = cls(model, comps.get("vocoder"), device)
        saved = meta.get("fingerprint")
        if saved and saved != tok.fingerprint:
            raise InputError(f"Checkpoint {folder!r} is inconsistent: fingerprint {saved} in the config, "
                             f"{tok.fingerprint} from its weights. Re-export it.")
        return tok

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
        """
        single = not isinstance(audio, (list, tuple))
        audios = [audio] if single else list(audio)
        if single != (text is None or isinstance(text, str)) and text is not None:
            raise InputError("Give one transcript string (or None) per utterance: a string for one audio, "
                             "a list for a list of audio.")
        texts = [text] if single else ([None] * len(audios) if text is None else list(text))
        if len(texts) != len(audios):
            raise InputError(f"Got {len(audios)} audio inputs but {len(texts)} transcripts.")
        rates = sample_rate if isinstance(sample_rate, (list, tuple)) else [sample_rate] * len(audios)
        if len(rates) != len(audios):
            raise InputError(f"Got {len(rates)} sample rates for {len(audios)} audio inputs.")
        if not audios:
            raise InputError("Nothing to encode: got an empty list of audio inputs.")
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}.")
        out = []
        for s in range(0, len(audios), batch_size):
            out += self._encode_batch(audios[s:s + batch_size], rates[s:s + batch_size], texts[s:s + batch_size],
                                      return_embeddings)
        return out[0] if single else out

    def _encode_batch(self, audios, rates, texts, return_embeddings):
        sr = self.model.encoder.sample_rate
        wavs = [prepare_waveform(a, r, target_sr=sr, max_seconds=MAX_SECONDS) for a, r in zip(audios, rates)]
        wav, wav_lengths = _pad(wavs, 0.0)
        enc = self.model.encode_audio(wav.to(self.device), wav_lengths.to(self.device))
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
    def _check_tokens(self, tokens):
        if not isinstance(tokens, TasteTokens):
            raise InputError(f"Expected TasteTokens, got {type(tokens).__name__}.")
        if tokens.level != "frame":
            raise InputError(f"LM-SPT decodes frame-level tokens, got level {tokens.level!r} (a TASTE tokenizer's?).")
        if tokens.fingerprint and tokens.fingerprint != self.fingerprint:
            raise InputError(f"These tokens were made by another model (fingerprint {tokens.fingerprint}, this model "
                             f"{self.fingerprint}); re-tokenize the audio with this model.")
        codes = tokens.codes
        width = 1 + (self.model.acoustic_quantizer.num_quantizers if self.model.acoustic_quantizer is not None else 0)
        if codes is None or codes.dim() != 2 or not 1 <= codes.shape[1] <= width or codes.shape[0] == 0:
            raise InputError(f"codes must be (M>=1, 1..{width}), got {None if codes is None else tuple(codes.shape)}.")
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
        batch = [tokens] if isinstance(tokens, TasteTokens) else list(tokens)
        if not batch:
            raise InputError("Nothing to decode: got an empty list of tokens.")
        for t in batch:
            self._check_tokens(t)
        if acoustic_layers is not None and (not isinstance(acoustic_layers, int) or acoustic_layers < 0):
            raise InputError(f"acoustic_layers must be an integer >= 0 (0 = semantic stream only), got {acoustic_layers!r}.")
        keep = 1 + (acoustic_layers if acoustic_layers is not None else 10**6)
        rows = [t.codes[:, :keep] for t in batch]
        if len({r.shape[1] for r in rows}) > 1:
            raise InputError("All tokens of a batch must carry the same number of streams.")
        codes, lengths = _pad(rows, -1)
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
        if self.vocoder is None:
            raise MissingResourceError("This tokenizer has no vocoder; attach one (whisper_mel_griffin_lim).")
        if not features:
            return []
        mels, lengths = _pad([f.float() for f in features], 0.0)
        wavs, wav_lengths = self.vocoder(mels.to(self.device), lengths.to(self.device))
        return [wavs[i, : int(wav_lengths[i])].cpu() for i in range(len(features))]

    def decode(self, tokens, **options):
        """Tokens -> log-mels -> waveforms; ``options`` go to :meth:`decode_features`."""
        features = self.decode_features(tokens, **options)
        wavs = self.vocode(features) if self.vocoder is not None else None
        return DecodedFrames(features, wavs, self.vocoder.sample_rate if self.vocoder is not None else None)

    def reconstruct(self, audio, sample_rate, text=None, **options):
        """``decode(encode(audio))``."""
        return self.decode(self.encode(audio, sample_rate, text), **options)


def load_tokenizer(folder, device="cpu", allow_external=False):
    """Load any exported tokenizer, dispatching on ``metadata.tokenizer`` (``"lmspt"`` or TASTE).

    ``allow_external`` is passed to ``from_pretrained`` (see
    :func:`taste_toolkit.pretrained.standalone.load_components`).
    """
    if read_config(folder)["metadata"].get("tokenizer") == TOKENIZER_TYPE:
        return LmsptTokenizer.from_pretrained(folder, device, allow_external=allow_external)
    from taste_toolkit.api import TasteTokenizer

    return TasteTokenizer.from_pretrained(folder, device, allow_external=allow_external)
