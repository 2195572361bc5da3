"""TASTE tokenizer model: encoder -> aggregator -> quantizer -> unit decoder.

The model only composes plugins; each of them is chosen in YAML. Adjacent
dimensions are checked here, at construction, so a bad combination fails before
any data is read.
"""

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from taste_toolkit.errors import ConfigError
from taste_toolkit.interfaces import AggregatorOutput, DecoderOutput, EncoderOutput, QuantizerOutput


@dataclass
class SpeechTokens:
    """TASTE tokens of a batch.

    Attributes
    ----------
    embeddings : torch.Tensor or None
        ``(B, M, D)`` quantized (z_hat) vectors; ``None`` for text-only models.
    codes : torch.Tensor or None
        ``(B, M, R)`` code indices (``-1`` at padding), ``None`` without codes.
    lengths : torch.Tensor or None
        ``(B,)`` valid positions.
    level : str
        ``"token"``, ``"word"``, ``"frame"`` or ``"none"``.
    """

    embeddings: Optional[torch.Tensor]
    codes: Optional[torch.Tensor]
    lengths: Optional[torch.Tensor]
    level: str


@dataclass
class TasteForwardOutput:
    """Everything a training step needs."""

    decoder: DecoderOutput
    quantizer: Optional[QuantizerOutput]
    aggregator: Optional[AggregatorOutput]
    loss: torch.Tensor
    attention_loss: Optional[torch.Tensor] = None
    prosody_loss: Optional[torch.Tensor] = None


def broadcast_words_to_tokens(x, word_ids, token_lengths):
    """``x (B, W, D)`` per word -> ``(B, N, D)`` per token, by ``word_ids (B, N)``."""
    n = word_ids.shape[1]
    valid = torch.arange(n, device=x.device)[None] < token_lengths[:, None]
    ids = torch.where(valid, word_ids, torch.zeros_like(word_ids)).long()
    out = torch.gather(x, 1, ids[..., None].expand(-1, -1, x.shape[-1]))
    return out * valid[..., None]


class TasteModel(nn.Module):
    """Stage-1 TASTE model built from plugins.

    Arguments
    ---------
    encoder, aggregator, quantizer, decoder : plugin instances
        ``encoder`` may be ``None`` only if the aggregator does not need audio.
    text_tokenizer : TextTokenizer, optional
        Checked against the vocabulary sizes of the aggregator and decoder.
    speaker : Speaker, optional
        Checked against the decoder's speaker prefix size.
    quantizer_weight : float
        Weight of the quantizer (commitment) loss in ``L = L_ce + w * L_rvq``.
    attention_supervision : AttentionSupervision, optional
        Adds its weighted loss on the aggregator's supervised heads in training
        (``L += w_att * L_att``); None or weight 0 = the paper's loss.
    prosody_supervision : ProsodySupervision, optional
        Adds its weighted loss of a head reading each word's prosody descriptors
        from the quantized tokens (``L += w_pro * L_pro``), when :meth:`forward`
        gets ``prosody_targets``; None or weight 0 = the paper's loss.
    """

    def __init__(self, encoder, aggregator, quantizer, decoder, text_tokenizer=None, speaker=None, quantizer_weight=1.0,
                 attention_supervision=None, prosody_supervision=None):
        super().__init__()
        self.encoder, self.aggregator, self.quantizer, self.decoder = encoder, aggregator, quantizer, decoder
        self.quantizer_weight = quantizer_weight
        if attention_supervision is not None and not attention_supervision.active:
            attention_supervision = None
        if attention_supervision is not None and not getattr(aggregator, "supervised_heads", None):
            # Text-only and span-pooling ablations have no attention to supervise.
            attention_supervision = None
        self.attention_supervision = attention_supervision
        if prosody_supervision is not None and not prosody_supervision.active:
            prosody_supervision = None  # weight 0, or a text-only model (no tokens to supervise)
        self.prosody_supervision = prosody_supervision
        self._check_dims(text_tokenizer, speaker)

    def _check_dims(self, text_tokenizer, speaker):
        agg, dec = self.aggregator, self.decoder

        def fail(msg):
            raise ConfigError(f"Incompatible plugins: {msg}")

        if agg.needs_audio:
            if self.encoder is None:
                fail(f"aggregator {type(agg).__name__} needs audio but no encoder is configured.")
            for tap in ("key_dim", "value_dim"):
                want, have = getattr(agg, tap, None), getattr(self.encoder, tap)
                if want is not None and want != have:
                    fail(f"aggregator expects {tap}={want} but the encoder gives {have}; set the aggregator's {tap} to <encoder.{tap}>.")
        speech_dim = agg.output_dim
        if self.quantizer is not None and speech_dim and self.quantizer.input_dim != speech_dim:
            fail(f"quantizer input_dim={self.quantizer.input_dim} but the aggregator outputs {speech_dim}.")
        if dec.speech_dim != speech_dim:
            fail(f"decoder speech_dim={dec.speech_dim} but the aggregator outputs {speech_dim} (0 = text only).")
        # A decoder without a speaker prefix (speaker_dim 0) may sit beside a speaker plugin
        # that serves the vocoder alone (decoder_speaker_dim: 0).
        if speaker is not None and dec.speaker_dim and dec.speaker_dim != speaker.embedding_dim:
            fail(f"decoder speaker_dim={dec.speaker_dim} but the speaker plugin gives {speaker.embedding_dim}.")
        if text_tokenizer is not None:
            vocab = text_tokenizer.vocab_size
            for name, module in (("aggregator", agg), ("decoder", dec)):
                v = getattr(module, "vocab_size", None)
                if v is not None and v < vocab:
                    fail(f"{name} vocab_size={v} is smaller than the text tokenizer's {vocab}.")

    @property
    def needs_audio(self):
        return self.aggregator.needs_audio

    def encode_audio(self, wavs, wav_lengths) -> Optional[EncoderOutput]:
        """Run the (frozen) encoder; ``None`` for text-only models."""
        if not self.needs_audio:
            return None
        return self.encoder(wavs, wav_lengths)

    def tokenize(self, tokens, token_lengths, word_ids, encoder_out, need_weights=False, unit_word_ids=None):
        """Aggregate and quantize: returns ``(SpeechTokens, QuantizerOutput, AggregatorOutput)``.

        ``unit_word_ids`` reaches only aggregators with ``needs_unit_word_ids`` (the
        ``oracle_spans`` ceiling, which reads the corpus' word times).
        """
        extra = {"unit_word_ids": unit_word_ids} if self.aggregator.needs_unit_word_ids else {}
        agg = self.aggregator(tokens, token_lengths, word_ids, encoder_out, need_weights=need_weights, **extra)
        if agg is None:
            return SpeechTokens(None, None, None, "none"), None, None
        if self.quantizer is None:
            return SpeechTokens(agg.embeddings, None, agg.lengths, agg.level), None, agg
        q = self.quantizer(agg.embeddings, agg.lengths)
        return SpeechTokens(q.quantized, q.codes, agg.lengths, agg.level), q, agg

    def speech_for_decoder(self, speech, word_ids, token_lengths):
        """Decoder-side view of the tokens: word-level vectors broadcast to tokens."""
        if speech.embeddings is None:
            return None, None
        if speech.level == "word":
            return broadcast_words_to_tokens(speech.embeddings, word_ids, token_lengths), token_lengths
        return speech.embeddings, speech.lengths

    def forward(self, tokens, token_lengths, word_ids, units, unit_lengths, encoder_out=None, speaker=None,
                unit_word_ids=None, prosody_targets=None):
        """Teacher-forced training pass.

        Arguments
        ---------
        tokens, word_ids : torch.Tensor
            ``(B, N)`` text token ids and their word indices.
        token_lengths, unit_lengths : torch.Tensor
            ``(B,)`` absolute lengths.
        units : torch.Tensor
            ``(B, S)`` target units.
        encoder_out : EncoderOutput, optional
            Encoder taps (from :meth:`encode_audio` or a feature cache).
        speaker : torch.Tensor, optional
            ``(B, D_s)`` speaker vectors.
        unit_word_ids : torch.Tensor, optional
            ``(B, S)`` word of each unit, for decoders and aggregators with ``needs_unit_word_ids``.
        prosody_targets : tuple of torch.Tensor, optional
            ``(targets (B, W, K), mask (B, W, K)[, speaker (B, D_s)])``: the descriptors from
            ``prosody_supervision.targets`` and, with its speaker head, the speaker vectors;
            the prosody loss is added only when they are given.
        """
        speech, q, agg = self.tokenize(tokens, token_lengths, word_ids, encoder_out, unit_word_ids=unit_word_ids)
        dec_speech, dec_lengths = self.speech_for_decoder(speech, word_ids, token_lengths)
        extra = {}
        if self.decoder.needs_word_ids:
            extra = dict(word_ids=word_ids, unit_word_ids=unit_word_ids)
        dec = self.decoder(tokens, token_lengths, dec_speech, dec_lengths, units, unit_lengths, speaker, **extra)
        loss = dec.loss
        if q is not None:
            loss = loss + self.quantizer_weight * q.loss
        attention_loss = None
        if self.attention_supervision is not None and agg is not None and agg.supervised_attention is not None:
            attention_loss = self.attention_supervision(agg.supervised_attention, tokens, token_lengths, word_ids,
                                                        encoder_out)
            loss = loss + attention_loss
        prosody_loss = None
        if self.prosody_supervision is not None and prosody_targets is not None and speech.embeddings is not None:
            prosody_loss = self.prosody_supervision(speech, word_ids, token_lengths, *prosody_targets)
            loss = loss + prosody_loss
        return TasteForwardOutput(dec, q, agg, loss, attention_loss, prosody_loss)
