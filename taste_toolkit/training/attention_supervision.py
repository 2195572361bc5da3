"""Attention supervision: train the aggregator's cross-attention towards each word's span.

Why: on the embedded corpus the paper's learned ``cross_attention`` aggregator does
not align. Its heads settle on one sink frame for every word, the word vectors carry
the text but not how the word was spoken, and the codebooks collapse
(``recipes/librispeech/RESULTS.md``). The frames inside a word do know its prosody
and duration, so the aggregator is shown where they are.

The targets need no corpus metadata. A frozen, Whisper-exact decoder pass gives
the alignment heads' attention, and Whisper-style DTW turns it into one contiguous
frame span per token (the ``aligned_spans`` aggregator's span finder, memoized by
content, so the aligner runs once per utterance). A token's target is its whole
word's span. The same option therefore works on LibriSpeech or any transcribed
speech.

Loss, for each supervised head and each token: the cross-entropy between a
uniform distribution over the word's frames and the head's attention,

    L_att = mean over (heads, tokens) of  -1/|span| * sum_{t in span} log a_t

(minimal when the head spreads its attention evenly over the word, so the head's
output is the mean of the word's value frames). ``weight: 0`` is the paper exactly:
the aligner is not even built.

Utterances where the aligner finds no usable span are skipped, not crashed on,
and counted (:attr:`AttentionSupervision.counts`, logged once per epoch): no text
tokens or no frames, fewer frames than words, or a word longer than
``max_word_seconds`` (e.g. a one-word transcript over 20 s of audio).
"""

import logging

import numpy as np
import torch
from torch import nn

from taste_toolkit.errors import ConfigError

logger = logging.getLogger(__name__)


def word_span_targets(spans, word_ids, num_tokens, num_frames, frame_rate, max_word_seconds):
    """Per-token target mask: the frames of the token's whole word, or None if unusable.

    Arguments
    ---------
    spans : tuple of numpy.ndarray
        ``(first, last)`` inclusive frame of each token, ``(N,)`` each.
    word_ids : numpy.ndarray
        ``(N,)`` word index of each token.
    num_tokens, num_frames : int
        Valid tokens ``N`` and frames ``T``.
    frame_rate : float
        Encoder frames per second.
    max_word_seconds : float
        Longer word spans make the utterance unusable.

    Returns
    -------
    numpy.ndarray or None
        ``(N, T)`` bool, True on the frames of each token's word.
    """
    if spans is None or num_tokens == 0 or num_frames == 0:
        return None
    first, last = spans
    words = word_ids[:num_tokens].astype(np.int64)
    num_words = int(words.max()) + 1
    if num_frames < num_words:
        return None
    start = np.full(num_words, num_frames, dtype=np.int64)
    end = np.full(num_words, -1, dtype=np.int64)
    np.minimum.at(start, words, np.asarray(first)[:num_tokens])
    np.maximum.at(end, words, np.asarray(last)[:num_tokens])
    spoken = end >= 0
    if ((end - start + 1)[spoken] > max_word_seconds * frame_rate).any():
        return None
    frames = np.arange(num_frames)
    a, z = start[words], end[words]
    return (frames[None] >= a[:, None]) & (frames[None] <= z[:, None])


class AttentionSupervision(nn.Module):
    """Auxiliary loss pulling the aggregator's supervised heads onto each word's span.

    Arguments
    ---------
    weight : float
        Weight of the loss in the total; 0 = off (the paper), nothing is built.
    vocab_size, key_dim : int
        Text vocabulary and key-tap size (wired like the aggregator's).
    whisper_source : str
        Whisper whose frozen decoder and alignment heads give the spans (hub id,
        folder or ``builtin:tiny.en``). Must match the encoder's keys.
    aligner_options : dict
        Extra options of the span finder (``num_layers``, ``num_heads``,
        ``ffn_dim``, ``alignment_heads``, ``medfilt_width``; see the
        ``aligned_spans`` aggregator).
    max_word_seconds : float
        Utterances with a longer aligned word are skipped.
    aligner : module, optional
        A ready span finder with ``token_spans(tokens, token_lengths, word_ids,
        encoder_out)`` (e.g. an ``aligned_spans`` aggregator); replaces the one
        built from ``whisper_source``.
    """

    def __init__(self, weight: float = 0.0, vocab_size: int = 0, key_dim: int = 0, whisper_source: str = "",
                 aligner_options: dict = None, max_word_seconds: float = 4.0, aligner=None):
        super().__init__()
        if weight < 0:
            raise ConfigError(f"attention supervision weight must be >= 0, got {weight}.")
        if max_word_seconds <= 0:
            raise ConfigError(f"max_word_seconds must be > 0, got {max_word_seconds}.")
        self.weight = float(weight)
        self.max_word_seconds = float(max_word_seconds)
        self.counts = {"used": 0, "skipped": 0}
        self.spans = aligner
        if self.weight > 0 and aligner is None:
            if not whisper_source:
                raise ConfigError("attention supervision needs whisper_source (the aligner's Whisper), "
                                  "or weight: 0 to turn it off.")
            from taste_toolkit.plugins.aggregator.aligned_spans import AlignedSpansAggregator

            # Only its span finder is used; it is frozen and never saved with the tokenizer.
            self.spans = AlignedSpansAggregator(vocab_size, key_dim, key_dim, init_from_whisper=whisper_source,
                                                **dict(aligner_options or {}))

    @property
    def active(self):
        return self.weight > 0

    def reset_counts(self):
        """Return the counts since the last reset, and reset them."""
        counts, self.counts = self.counts, {"used": 0, "skipped": 0}
        return counts

    def forward(self, attention, tokens, token_lengths, word_ids, encoder_out):
        """Weighted loss for one batch (0 when no utterance is usable).

        Arguments
        ---------
        attention : torch.Tensor
            ``(B, S, N, T)`` supervised heads' attention at the token rows.
        tokens, word_ids : torch.Tensor
            ``(B, N)`` text tokens and their word indices.
        token_lengths : torch.Tensor
            ``(B,)`` valid tokens.
        encoder_out : EncoderOutput
            The encoder taps the aggregator attended over (keys drive the aligner).

        Returns
        -------
        torch.Tensor
            Scalar ``weight * L_att``.
        """
        spans, _ = self.spans.token_spans(tokens, token_lengths, word_ids, encoder_out)
        b, _, n, t = attention.shape
        mask = torch.zeros(b, n, t, dtype=torch.bool)
        usable = torch.zeros(b, n, dtype=torch.bool)
        ids = word_ids.detach().cpu().numpy()
        for i in range(b):
            nt, nf = int(token_lengths[i]), int(encoder_out.lengths[i])
            target = word_span_targets(spans[i], ids[i], nt, nf, encoder_out.frame_rate, self.max_word_seconds)
            if target is None:
                self.counts["skipped"] += 1
                continue
            self.counts["used"] += 1
            mask[i, :nt, :nf] = torch.from_numpy(target)
            usable[i, :nt] = True
        if not usable.any():
            return attention.sum() * 0.0  # keeps the graph; no usable target in this batch
        mask, usable = mask.to(attention.device), usable.to(attention.device)
        log_att = attention.float().clamp_min(1e-8).log()  # (B, S, N, T)
        per_token = -(log_att * mask[:, None]).sum(-1) / mask.sum(-1).clamp(min=1)[:, None]  # (B, S, N)
        loss = per_token.masked_select(usable[:, None].expand_as(per_token)).mean()
        return self.weight * loss
