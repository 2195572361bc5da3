"""``TasteTokenizer``: the trained tokenizer as a product (encode, decode, edit, save, load).

>>> tok = TasteTokenizer.from_pretrained("results/taste/1986/tokenizer")  # doctest: +SKIP
>>> tokens = tok.encode(wav, 16000, "the cat sat")                      # doctest: +SKIP
>>> tokens.codes.shape                                                   # doctest: +SKIP
torch.Size([3, 4])
>>> audio = tok.decode(tokens)                                           # doctest: +SKIP
>>> audio.waveforms[0].shape, audio.sample_rate                          # doctest: +SKIP

A standalone folder is built from plain data through the registry and loaded
with safetensors (:mod:`taste_toolkit.pretrained.standalone`); it needs neither
the training recipe nor its YAML.

Validation, padding, folder handling and vocoding are shared with the
frame-aligned LM-SPT tokenizer through :class:`~taste_toolkit.tokenizer_base.TokenizerBase`;
this module holds only what follows from the tokens being aligned to the text.
"""

import hashlib
import inspect
import logging
import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch

from taste_toolkit.errors import ConfigError, InputError, MissingResourceError
from taste_toolkit.models.tokenizer import SpeechTokens, TasteModel
from taste_toolkit.tokenizer_base import MAX_SECONDS, DecodedAudio, TokenizerBase, describe, pad_rows
from taste_toolkit.tokens import TasteTokens, check_token_fields

logger = logging.getLogger(__name__)

__all__ = ["DecodedSpeech", "MAX_SECONDS", "TasteTokenizer", "check_generate_options"]

# Older names, kept for code that imported them from here.
_pad = pad_rows
_describe = describe


@dataclass
class DecodedSpeech(DecodedAudio):
    """Output of :meth:`TasteTokenizer.decode`: one entry per utterance.

    ``word_spans`` (decoders that walk the words, e.g. ``word_pointer_transformer``;
    else ``None``): per utterance, ``(start_s, end_s)`` of every word in the decoded
    audio, from the decoder's own boundaries. A word runs from its first unit to the
    next word's first unit (pauses belong to the word before them); seconds per unit
    = waveform duration / units (the vocoders here emit a fixed number of samples
    per unit), or ``1 / units.frame_rate`` without a vocoder.
    """

    units: List[torch.Tensor]
    waveforms: Optional[List[torch.Tensor]]
    sample_rate: Optional[int]
    word_spans: Optional[List[List[Tuple[float, float]]]] = None
    #: Per utterance, True when decoding stopped at the length cap instead of at a
    #: learned end-of-speech (``None`` for decoders without a cap).
    capped: Optional[List[bool]] = None


def check_generate_options(generate, options):
    """Raise InputError for options the decoder's ``generate`` does not take, or non-finite / negative numbers."""
    params = inspect.signature(generate).parameters
    takes_any = any(p.kind == p.VAR_KEYWORD for p in params.values())
    accepted = [n for n, p in params.items() if p.default is not inspect.Parameter.empty and n != "speaker"]
    for key, value in options.items():
        if key not in params and not takes_any:
            raise InputError(f"Unknown decoding option {key!r}; this decoder accepts {', '.join(accepted)}.")
        if key == "generator" or value is None or isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            if not math.isfinite(value) or value < 0:
                raise InputError(f"Decoding option {key}={value!r} must be a finite number >= 0.")
            if key == "top_k" and value != int(value):
                raise InputError(f"top_k must be a whole number (0 = greedy), got {value!r}.")


class TasteTokenizer(TokenizerBase):
    """Encoder + aggregator + quantizer + unit decoder (+ text tokenizer, units, speaker, vocoder).

    Arguments
    ---------
    model : TasteModel
        The trained stage-1 model.
    text_tokenizer : TextTokenizer
    units : UnitExtractor, optional
        Needed only for ``reconstruct`` evaluation helpers and vocoder fitting.
    speaker : Speaker, optional
        Needed when the decoder takes a speaker prefix.
    vocoder : Vocoder, optional
        Units -> waveform; without it ``decode`` returns units only.
    device : str
    """

    #: Tokens follow the transcript, one per word/text token ("frame" for LM-SPT's fixed-rate tokens).
    alignment = "text"
    tokenizer_type = "taste"
    display_name = "TASTE"
    required_components = ("aggregator", "quantizer", "decoder", "text_tokenizer")
    vocoder_hint = "e.g. griffin_lim"

    def __init__(self, model, text_tokenizer, units=None, speaker=None, vocoder=None, device="cpu"):
        self.text_tokenizer = text_tokenizer
        self.units = units
        self.speaker = speaker.to(device).eval() if speaker is not None else None
        super().__init__(model, vocoder, device)
        if self.vocoder is not None and units is not None:
            self.vocoder.check_units(units)  # a vocoder trained for other units (count or fingerprint) is refused
        vocoder_speaker = self._vocoder_speaker_dim()
        if vocoder_speaker:
            have = self.speaker.embedding_dim if self.speaker is not None else 0
            if have != vocoder_speaker:
                raise ConfigError(
                    f"The vocoder is conditioned on {vocoder_speaker}-d speaker vectors but this tokenizer's "
                    f"speaker plugin gives {have or 'none'}; pair it with the speaker plugin it was trained with."
                )

    def _vocoder_speaker_dim(self):
        """Width of the speaker vector the vocoder takes (0: units alone)."""
        return int(getattr(self.vocoder, "speaker_dim", 0) or 0) if self.vocoder is not None else 0

    def _needs_speaker(self):
        return bool(self.model.decoder.speaker_dim or self._vocoder_speaker_dim())

    # ------------------------------------------------------------ identity
    def _components(self):
        m = self.model
        return {
            "encoder": m.encoder if m.needs_audio else None,
            "aggregator": m.aggregator,
            "quantizer": m.quantizer,
            "decoder": m.decoder,
            "text_tokenizer": self.text_tokenizer,
            "units": self.units,
            "speaker": self.speaker,
            "vocoder": self.vocoder,
        }

    def _fingerprint(self):
        """Hash of what gives tokens their meaning: text tokenizer, aggregator and codebooks."""
        h = hashlib.sha1()
        for role in ("text_tokenizer", "aggregator", "quantizer"):
            obj = self._components()[role]
            spec = getattr(obj, "build_spec", None)
            h.update(repr((role, spec and spec["kind"], spec and spec["name"])).encode())
        self._hash_weights(h, [self.model.quantizer])
        h.update(str(self.text_tokenizer.vocab_size).encode())
        return h.hexdigest()[:16]

    @property
    def has_codes(self):
        q = self.model.quantizer
        return q is not None and q.num_quantizers > 0 and self.model.aggregator.output_dim > 0

    def _level(self):
        agg = self.model.aggregator
        return "none" if agg.output_dim == 0 else agg.output_level

    def _info(self):
        """Code geometry for :meth:`info` (zeros for models without codes)."""
        q = self.model.quantizer
        return {
            "speech_token_level": self._level(),
            "num_quantizers": q.num_quantizers if self.has_codes else 0,
            "codebook_size": q.codebook_size if self.has_codes else 0,
            "bits_per_speech_token": float(q.bits_per_vector) if self.has_codes else 0.0,
        }

    # ------------------------------------------------------------ save / load
    def _metadata(self):
        return {"quantizer_weight": float(self.model.quantizer_weight)}

    @classmethod
    def from_pretrained(cls, folder, device="cpu", allow_code=False, allow_external=False):
        """Load a folder written by :meth:`save_pretrained` (no code is run from it).

        Parameters
        ----------
        folder : str or Path
            The tokenizer folder.
        device : str
            Torch device of the modules.
        allow_code : bool
            Also build plugins that evaluate code-bearing files of the folder (e.g. the
            cosyvoice vocoder's hyperpyyaml); use it only for folders you trust.
        allow_external : bool
            Follow component options that name files or models outside the folder
            (absolute paths, hub ids, e.g. an s3 units ``model_path``). Refused by
            default; the folder's own ``"./..."`` files and ``builtin:`` sources are
            always allowed.
        """
        return cls._load_pretrained(folder, device, allow_code=allow_code, allow_external=allow_external)

    @classmethod
    def _from_components(cls, comps, metadata, device):
        model = TasteModel(comps.get("encoder"), comps["aggregator"], comps["quantizer"], comps["decoder"],
                           text_tokenizer=comps["text_tokenizer"], speaker=comps.get("speaker"),
                           quantizer_weight=metadata.get("quantizer_weight", 1.0))
        return cls(model, comps["text_tokenizer"], comps.get("units"), comps.get("speaker"), comps.get("vocoder"),
                   device)

    # ------------------------------------------------------------ encode
    def _tokenize_text(self, text):
        if not isinstance(text, str):
            raise InputError(f"text must be a string, got {type(text).__name__}.")
        if not text.strip():
            raise InputError("Empty transcript: TASTE tokens are aligned to text, give the words spoken.")
        return self.text_tokenizer.encode_words(text)

    @torch.no_grad()
    def encode(self, audio, sample_rate, text, return_embeddings=False, return_alignment=False, batch_size=16):
        """Tokenize speech with its transcript.

        Arguments
        ---------
        audio : array or tensor, or a list of them
            One utterance ``(S,)`` / ``(S, C)`` / ``(C, S)`` (float or int PCM), or a list.
        sample_rate : int or list of int
            Sample rate(s) of ``audio``; resampled to the encoder's rate, stereo downmixed.
        text : str or list of str
            Transcript(s).
        return_embeddings : bool
            Keep the quantized vectors ``(M, D)`` too.
        return_alignment : bool
            Keep the aggregator attention ``(N, T)``.
        batch_size : int
            Utterances per forward pass.

        Returns
        -------
        TasteTokens, or a list of them for list inputs.

        Raises
        ------
        InputError
            Bad audio (empty, NaN/inf, unsupported shape or rate, longer than 30 s)
            or text (empty, not a string), or mismatched list lengths.
        """
        return self._encode(audio, sample_rate, text, batch_size, return_embeddings=return_embeddings,
                            return_alignment=return_alignment)

    def _split_inputs(self, audio, text):
        """The transcript decides: a string = one utterance, a list of strings = a batch."""
        single = isinstance(text, str)
        if not single and not (isinstance(text, (list, tuple)) and all(isinstance(t, str) for t in text)):
            raise InputError(f"text must be a string or a list of strings, got {describe(text)}.")
        if not single and not isinstance(audio, (list, tuple)):
            raise InputError(f"With a list of transcripts, audio must be a list of waveforms, got {describe(audio)}.")
        return (True, [audio], [text]) if single else (False, list(audio), list(text))

    def _encode_batch(self, audios, rates, texts, return_embeddings=False, return_alignment=False):
        target_sr = self.input_sample_rate
        texts_tok = [self._tokenize_text(t) for t in texts]  # cheap checks first
        wavs, wav, wav_lengths = self._waveforms(audios, rates)
        tokens, token_lengths = pad_rows([torch.tensor(t.ids, dtype=torch.long) for t in texts_tok])
        word_ids, _ = pad_rows([torch.tensor(t.word_ids, dtype=torch.long) for t in texts_tok])
        tokens, word_ids, token_lengths = tokens.to(self.device), word_ids.to(self.device), token_lengths.to(self.device)
        enc = self.model.encode_audio(wav, wav_lengths)
        speech, _, agg = self.model.tokenize(tokens, token_lengths, word_ids, enc, need_weights=return_alignment)
        spk = None
        if self._needs_speaker():
            if self.speaker is None:
                raise MissingResourceError("The decoder needs a speaker vector but this tokenizer has no speaker plugin.")
            spk = self.speaker(wav, wav_lengths)
        frame_rate = float(self.model.encoder.frame_rate) if self.model.encoder is not None else 0.0
        results = []
        for i, t in enumerate(texts_tok):
            n = int(token_lengths[i])
            m = int(speech.lengths[i]) if speech.lengths is not None else 0
            codes = speech.codes[i, :m].cpu() if speech.codes is not None else None
            emb = speech.embeddings[i, :m].cpu() if speech.embeddings is not None else None
            keep_emb = return_embeddings or (codes is None and emb is not None)
            align = None
            if return_alignment and agg is not None:
                weights = agg.alignment if agg.alignment is not None else agg.attention
                if weights is not None:
                    align = weights[i, :n, : int(enc.lengths[i])].cpu()
            results.append(TasteTokens(
                text=texts[i], words=list(t.words), text_ids=tokens[i, :n].cpu(), word_ids=word_ids[i, :n].cpu(),
                level=speech.level, codes=codes, embeddings=emb if keep_emb else None,
                speaker=spk[i].cpu() if spk is not None else None, alignment=align, frame_rate=frame_rate,
                duration=wavs[i].shape[0] / target_sr, fingerprint=self.fingerprint,
            ))
        return results

    # ------------------------------------------------------------ decode
    def _check_token_fields(self, tokens):
        check_token_fields(tokens, self.text_tokenizer.vocab_size)

    def _check_token_codes(self, tokens):
        if self.has_codes and tokens.codes is None:
            raise InputError("This model decodes RVQ codes but the tokens have none (made by a model without a quantizer?).")

    def _speech_rows(self, tokens):
        if self.model.aggregator.output_dim == 0:
            return None
        if self.has_codes:
            codes = tokens.codes.to(self.device).long()
            if codes.dim() != 2 or codes.shape[1] > self.model.quantizer.num_quantizers:
                raise InputError(f"codes must be (M, R<={self.model.quantizer.num_quantizers}), got {tuple(codes.shape)}.")
            if codes.numel() and (codes.min() < 0 or codes.max() >= self.model.quantizer.codebook_size):
                raise InputError(f"codes must be in [0, {self.model.quantizer.codebook_size}).")
            return self.model.quantizer.decode(codes[None])[0]
        if tokens.embeddings is None:
            raise InputError("Tokens carry neither codes nor embeddings for this speech-conditioned model.")
        return tokens.embeddings.to(self.device)

    @torch.no_grad()
    def decode_units(self, tokens, **generate_options):
        """Generate units for one or several :class:`TasteTokens`; list of ``(S,)`` tensors."""
        return self._generate(tokens, False, generate_options)[0]

    @property
    def walks_words(self):
        """True when the decoder emits word boundaries (``decode`` then gives ``word_spans``)."""
        return "return_word_starts" in inspect.signature(self.model.decoder.generate).parameters

    @torch.no_grad()
    def _generate(self, tokens, word_starts, generate_options):
        """Units ``[(S,)]`` and, with ``word_starts`` and a word-walking decoder, ``[(W,)]`` starts (else None)."""
        if "return_word_starts" in generate_options:
            raise InputError("return_word_starts is not a decoding option: decode() returns word_spans "
                             "for decoders that walk the words.")
        batch = self._token_batch(tokens)
        check_generate_options(self.model.decoder.generate, generate_options)
        text, text_lengths = pad_rows([t.text_ids for t in batch])
        word_ids, _ = pad_rows([t.word_ids for t in batch])
        text, text_lengths, word_ids = text.to(self.device), text_lengths.to(self.device), word_ids.to(self.device)
        rows = [self._speech_rows(t) for t in batch]
        speech_in = None
        if rows[0] is not None:
            emb, lengths = pad_rows(rows, 0.0)
            level = batch[0].level
            if any(t.level != level for t in batch):
                raise InputError("All tokens of a batch must have the same level.")
            expected = [int(t.word_ids.max()) + 1 if level == "word" else t.text_ids.numel() for t in batch]
            if lengths.tolist() != expected:
                raise InputError(f"Speech tokens per utterance {lengths.tolist()} do not match the text ({expected} {level}s).")
            speech_in = SpeechTokens(emb.to(self.device), None, lengths.to(self.device), level)
        dec_speech, dec_lengths = (None, None)
        if speech_in is not None:
            dec_speech, dec_lengths = self.model.speech_for_decoder(speech_in, word_ids, text_lengths)
        spk = None
        if self.model.decoder.speaker_dim:
            if any(t.speaker is None for t in batch):
                raise InputError("This decoder needs the tokens' speaker vector; encode with this model.")
            spk = torch.stack([t.speaker for t in batch]).to(self.device)
        if self.model.decoder.needs_word_ids:
            generate_options = dict(generate_options, word_ids=word_ids)
        if word_starts and self.walks_words:
            units, lengths, starts = self.model.decoder.generate(text, text_lengths, dec_speech, dec_lengths, spk,
                                                                 return_word_starts=True, **generate_options)
            starts = [starts[i, : int(t.word_ids.max()) + 1].cpu() for i, t in enumerate(batch)]
        else:
            units, lengths = self.model.decoder.generate(text, text_lengths, dec_speech, dec_lengths, spk,
                                                         **generate_options)
            starts = None
        capped = self._capped(lengths, text_lengths, generate_options)
        return [units[i, : int(lengths[i])].cpu() for i in range(len(batch))], starts, capped

    def _speakers_for_vocoder(self, tokens):
        """``(B, D)`` speaker vectors of ``tokens`` for a speaker-conditioned vocoder, else None."""
        if not self._vocoder_speaker_dim():
            return None
        batch = [tokens] if isinstance(tokens, TasteTokens) else list(tokens)
        if any(t.speaker is None for t in batch):
            raise InputError("This vocoder needs the tokens' speaker vector; encode the audio with this tokenizer "
                             "(its speaker plugin computes it).")
        return torch.stack([t.speaker.float() for t in batch])

    def _capped(self, lengths, text_lengths, generate_options):
        """Which decodes reached the decoder's length cap (None if it has none)."""
        cap = self.model.decoder.generation_cap(text_lengths.cpu(), **generate_options)
        if cap is None:
            return None
        return [bool(int(n) >= int(c)) for n, c in zip(lengths.cpu(), cap)]

    @torch.no_grad()
    def vocode(self, units, speaker=None):
        """Waveforms ``[(L,)]`` at ``self.vocoder.sample_rate`` from unit sequences ``[(S,)]``.

        ``speaker``: ``(B, D)`` speaker vectors, for a vocoder conditioned on them
        (``vocoder.speaker_dim > 0``; the speaker plugin computes them from audio).
        """
        return self._vocode(units, speaker)

    def _vocoder_input(self, row):
        return row.long()

    def decode(self, tokens, **generate_options):
        """Tokens -> units -> waveforms. ``generate_options`` go to the decoder's ``generate``."""
        units, starts, capped = self._generate(tokens, True, generate_options)
        if capped and any(capped):
            logger.warning("%d of %d decodes reached the length cap (max_len_ratio) without end-of-speech; "
                           "DecodedSpeech.capped marks them.", sum(capped), len(capped))
        wavs, rate = self._audio(units, self._speakers_for_vocoder(tokens))
        spans = None
        if starts is not None and (wavs is not None or self.units is not None):
            spans = []
            for i, (u, s) in enumerate(zip(units, starts)):
                n = max(u.numel(), 1)
                per_unit = wavs[i].numel() / rate / n if wavs is not None else 1.0 / self.units.frame_rate
                bounds = s.tolist() + [u.numel()]
                spans.append([(bounds[w] * per_unit, bounds[w + 1] * per_unit) for w in range(len(s))])
        return DecodedSpeech(units, wavs, rate, spans, capped)

    def reconstruct(self, audio, sample_rate, text, **generate_options):
        """``decode(encode(audio, text))``."""
        return super().reconstruct(audio, sample_rate, text, **generate_options)

    # ------------------------------------------------------------ edit
    def edit(self, tokens_a, tokens_b, words):
        """Give the chosen words of ``tokens_a`` the speech tokens of ``tokens_b``.

        Arguments
        ---------
        tokens_a, tokens_b : TasteTokens
            Two utterances of the same transcript, made by this model.
        words : list of int or str
            Word indices, or words (every occurrence is swapped).

        Returns
        -------
        TasteTokens
            A copy of ``tokens_a`` whose chosen words carry ``tokens_b``'s tokens.
        """
        for t in (tokens_a, tokens_b):
            self._check_tokens(t)
        if tokens_a.words != tokens_b.words:
            raise InputError("Editing swaps tokens between two utterances of the same transcript; "
                             f"got {' '.join(tokens_a.words)!r} and {' '.join(tokens_b.words)!r}.")
        if tokens_a.level not in ("word", "token"):
            raise InputError(f"Cannot edit {tokens_a.level!r}-level tokens (text-only model?).")
        indices = set()
        for w in words:
            if isinstance(w, str):
                hits = [i for i, x in enumerate(tokens_a.words) if x == w.lower()]
                if not hits:
                    raise InputError(f"Word {w!r} is not in the transcript {tokens_a.words}.")
                indices.update(hits)
            elif isinstance(w, int) and 0 <= w < len(tokens_a.words):
                indices.add(w)
            else:
                raise InputError(f"Word index {w!r} is outside 0..{len(tokens_a.words) - 1}.")
        if tokens_a.level == "word":
            rows = sorted(indices)
        else:
            rows = [i for i, w in enumerate(tokens_a.word_ids.tolist()) if w in indices]
        out = TasteTokens(**{**tokens_a.__dict__})
        for name in ("codes", "embeddings"):
            a, b = getattr(tokens_a, name), getattr(tokens_b, name)
            if a is not None and b is not None:
                new = a.clone()
                new[rows] = b[rows]
                setattr(out, name, new)
            elif a is not None:
                setattr(out, name, None if name == "embeddings" else a)
        out.alignment = None
        out.extra = {**tokens_a.extra, "edited_words": sorted(indices)}
        return out
