"""``word_pointer_transformer`` decoder: unit decoding that walks the words explicitly.

The plain ``unit_transformer`` must discover by itself, through self-attention
over its prefix, which word each unit belongs to. At the scale of the embedded
corpus it never does: it predicts from the previous units and ignores its
conditioning (RESULTS.md: the encoder-only ceiling ends level with text-only).
This decoder gives it the alignment as an inductive bias, as duration-aware TTS
decoders do. Its output stream interleaves units with word boundaries::

    u u u <b> u u <b> u u u u <b> u ... <eos>     (one <b> per word change)

and at every step the embedding of the *current* word (text fused with that
word's TASTE token) is added to the input. So the unit distribution is
conditioned on the word being spoken, and the boundaries (word durations) are
predicted from the text and the word's speech token: where TASTE's prosody
information should matter most.

Training needs the word of every unit (``unit_word_ids``, e.g. from a corpus'
word times, see :mod:`taste_toolkit.data.word_alignment`); generation does not:
the model emits the boundaries itself, and can stop only after the last word.
"""

import inspect
import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

from taste_toolkit.errors import ConfigError, InputError
from taste_toolkit.interfaces import DecoderOutput
from taste_toolkit.plugins.decoder.unit_transformer import UnitTransformerDecoder, pack_segments
from taste_toolkit.registry import register

logger = logging.getLogger(__name__)


def checked_unit_words(unit_word_ids, units, unit_valid, num_words, decoder_name):
    """The word of every unit ``(B, S)``: checked, clamped into the transcript, non-decreasing.

    A unit cannot go back to an earlier word; padding positions get word 0 (then the
    running maximum), so callers mask them with ``unit_valid``.
    """
    if unit_word_ids is None:
        raise InputError(f"{decoder_name} trains on the word of every unit (unit_word_ids); the corpus needs "
                         "word times (word_times: metadata or aligner, see taste_toolkit.data.word_alignment).")
    words = unit_word_ids.to(units.device).long()[:, : units.shape[1]]
    if words.shape != units.shape:
        raise InputError(f"unit_word_ids {tuple(unit_word_ids.shape)} must match units {tuple(units.shape)}.")
    words = torch.minimum(words.clamp(min=0), (num_words - 1)[:, None])
    return torch.where(unit_valid, words, torch.zeros_like(words)).cummax(dim=1).values


@register("decoder", "word_pointer_transformer")
class WordPointerDecoder(UnitTransformerDecoder):
    """Autoregressive unit decoder over units and word boundaries, fed the current word.

    Takes the options of ``unit_transformer`` (``fusion`` must be ``weighted_sum``:
    the current word is read from the fused per-token prefix). Output classes:
    units ``0..V-1``, end of speech ``V``, word boundary ``V + 1``.

    Example
    -------
    >>> dec = WordPointerDecoder(vocab_size=10, num_units=6, speech_dim=4, d_model=16,
    ...                          num_layers=1, num_heads=2, ffn_dim=32)
    >>> out = dec(torch.tensor([[1, 2, 3]]), torch.tensor([3]), torch.randn(1, 3, 4), torch.tensor([3]),
    ...           torch.tensor([[0, 5, 2, 1]]), torch.tensor([4]), word_ids=torch.tensor([[0, 0, 1]]),
    ...           unit_word_ids=torch.tensor([[0, 0, 1, 1]]))
    >>> out.targets.tolist()  # 4 units, 1 boundary (class 7), end of speech (class 6)
    [[0, 5, 7, 2, 1, 6]]
    """

    needs_word_ids = True
    needs_unit_word_ids = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.fusion != "weighted_sum":
            raise ConfigError("word_pointer_transformer reads words from the fused prefix: use fusion='weighted_sum'.")
        d_model = self.head.in_features
        self.head = nn.Linear(d_model, self.num_units + 2)
        self.boundary_embedding = nn.Parameter(torch.randn(d_model) * 0.02)
        self.word_proj = nn.Linear(d_model, d_model)

    # Same options as unit_transformer: expose its signature so the registry checks
    # and documents them (``taste plugins``) as for any other plugin.
    __init__.__signature__ = inspect.signature(UnitTransformerDecoder.__init__)

    @property
    def boundary(self):
        """Class id of a word boundary (``num_units + 1``)."""
        return self.num_units + 1

    # ------------------------------------------------------------------ words

    def _word_vectors(self, prefix, token_lengths, word_ids, speaker):
        """Mean fused prefix vector of each word: ``(B, W, D)`` and words per utterance ``(B,)``."""
        device = prefix.device
        if word_ids is None:
            raise InputError("word_pointer_transformer needs word_ids (B, N): the word of every text token.")
        word_ids = word_ids.to(device).long()
        token_lengths = torch.as_tensor(token_lengths, device=device).long()
        n = word_ids.shape[1]
        valid = torch.arange(n, device=device)[None] < token_lengths[:, None]
        ids = torch.where(valid, word_ids, torch.zeros_like(word_ids))
        steps = ids[:, 1:] - ids[:, :-1]
        if (ids[:, 0] != 0).any() or ((steps < 0) | (steps > 1))[valid[:, 1:]].any():
            raise InputError("word_ids must start at 0 and grow by 0 or 1 from token to token.")
        offset = 1 if self.speaker_dim else 0  # the speaker vector comes first in the prefix
        fused = prefix[:, offset : offset + n] * valid[..., None]
        num_words = ids.max(dim=1).values + 1
        sums = fused.new_zeros(fused.shape[0], int(num_words.max()), fused.shape[-1])
        sums = sums.scatter_add(1, ids[..., None].expand_as(fused), fused)
        counts = torch.zeros(sums.shape[:2], device=device).scatter_add(1, ids, valid.float())
        return self.word_proj(sums / counts.clamp(min=1)[..., None]), num_words

    def _interleave(self, units, unit_lengths, unit_word_ids, num_words):
        """Units + their words -> the output stream with boundaries, ``(B, L)`` and ``(B,)``."""
        device = units.device
        steps = torch.arange(units.shape[1], device=device)[None]
        unit_valid = steps < unit_lengths[:, None]
        words = checked_unit_words(unit_word_ids, units, unit_valid, num_words, "word_pointer_transformer")
        lengths = unit_lengths + num_words - 1  # exactly one boundary per word change
        stream = torch.full((units.shape[0], int(lengths.max())), self.boundary, dtype=torch.long, device=device)
        rows = torch.arange(units.shape[0], device=device)[:, None].expand_as(units)
        place = steps + words  # unit t comes after the w(t) boundaries before it
        stream[rows[unit_valid], place[unit_valid]] = units[unit_valid]
        return stream, lengths

    def _embed_stream(self, stream, word_vectors):
        """Input embedding of each stream token + the word it leaves the pointer on."""
        is_boundary = stream == self.boundary
        pointer = is_boundary.long().cumsum(dim=1).clamp(max=word_vectors.shape[1] - 1)
        embedded = torch.where(
            is_boundary[..., None],
            self.boundary_embedding.to(word_vectors.dtype),
            self.unit_embedding(stream.clamp(0, self.num_units - 1)),
        )
        if self.training and self.unit_dropout > 0:
            drop = (torch.rand(stream.shape, device=stream.device) < self.unit_dropout) & ~is_boundary
            embedded = torch.where(drop[..., None], self.unit_mask_embedding.to(embedded.dtype), embedded)
        current = word_vectors.gather(1, pointer[..., None].expand(-1, -1, word_vectors.shape[-1]))
        return embedded + current

    # ---------------------------------------------------------------- training

    def forward(self, tokens, token_lengths, speech, speech_lengths, units, unit_lengths, speaker=None,
                word_ids=None, unit_word_ids=None):
        """Teacher-forced pass over the interleaved stream.

        Arguments are those of ``unit_transformer`` plus ``word_ids (B, N)`` (word
        of each text token) and ``unit_word_ids (B, S)`` (word of each unit).

        Returns
        -------
        DecoderOutput
            ``logits (B, L + 1, V + 2)``, ``targets (B, L + 1)`` over the stream of
            ``L = S + W - 1`` units and boundaries, then end of speech.
        """
        prefix, prefix_lengths = self._encode_prefix(tokens, token_lengths, speech, speech_lengths, speaker)
        device = prefix.device
        units = units.to(device)
        unit_lengths = self._lengths(unit_lengths, units.shape[1], device, "unit")
        valid_units = torch.arange(units.shape[1], device=device)[None] < unit_lengths[:, None]
        if ((units < 0) | (units >= self.num_units))[valid_units].any():
            raise InputError(f"Unit ids must lie in [0, {self.num_units}).")
        word_vectors, num_words = self._word_vectors(prefix, token_lengths, word_ids, speaker)
        stream, lengths = self._interleave(units, unit_lengths, unit_word_ids, num_words)
        embedded = self._embed_stream(stream, word_vectors)
        sequence, total = pack_segments([(prefix, prefix_lengths), (embedded, lengths)])
        self._check_length(sequence.shape[1], "The packed decoder sequence")
        columns = torch.arange(sequence.shape[1], device=device)[None]
        position = columns - torch.where(columns >= prefix_lengths[:, None], prefix_lengths[:, None], 0)
        hidden, _ = self.core(sequence + self.positions[position], columns < total[:, None])

        steps = torch.arange(stream.shape[1] + 1, device=device)[None]
        index = (prefix_lengths[:, None] - 1 + steps).clamp(max=sequence.shape[1] - 1)
        logits = self.head(hidden.gather(1, index[..., None].expand(-1, -1, hidden.shape[-1])))
        targets = torch.full_like(index, -100)
        targets[:, :-1] = torch.where(steps[:, :-1] < lengths[:, None], stream, targets[:, :-1])
        targets = torch.where(steps == lengths[:, None], self.eos, targets)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
        return DecoderOutput(logits=logits, targets=targets, loss=loss)

    @torch.no_grad()
    def accuracy(self, output, topk=(1, 5)):
        """Top-k counts over unit and end-of-speech targets, plus boundary counts.

        ``total`` / ``topK_correct`` exclude boundary targets, so they compare with
        ``unit_transformer``'s; ``boundary_total`` / ``boundary_top1_correct`` score
        where the words change (the word durations).
        """
        valid = output.targets != -100
        is_boundary = output.targets == self.boundary
        counts = super().accuracy(
            DecoderOutput(output.logits, output.targets.masked_fill(is_boundary, -100), output.loss), topk
        )
        predicted = output.logits.argmax(-1)
        counts["boundary_total"] = int(is_boundary.sum())
        counts["boundary_top1_correct"] = int((is_boundary & (predicted == self.boundary)).sum())
        counts["stream_top1_correct"] = int((valid & (predicted == output.targets)).sum())
        counts["stream_total"] = int(valid.sum())
        return counts

    # --------------------------------------------------------------- inference

    @torch.no_grad()
    def generate(self, tokens, token_lengths, speech, speech_lengths, speaker=None, word_ids=None,
                 max_len_ratio: float = 20.0, min_len_ratio: float = 2.0, top_k: int = 0,
                 temperature: float = 1.0, use_cache: bool = True, generator=None,
                 return_word_starts: bool = False):
        """Generate units, walking the words; options as ``unit_transformer.generate``.

        A boundary is allowed only before the last word and end of speech only on
        it (and after ``min_len_ratio x tokens`` units), so every word is spoken.

        Returns
        -------
        units : torch.Tensor
            ``(B, S)`` long, ``-1`` after each utterance's end (boundaries removed).
        lengths : torch.Tensor
            ``(B,)`` generated units.
        word_starts : torch.Tensor
            Only with ``return_word_starts``: ``(B, W)`` long, index of each word's
            first unit (where its boundary was emitted; word 0 starts at 0, padding
            words and words never reached start at ``lengths``). Word ``w`` spans
            units ``word_starts[w] .. word_starts[w + 1] - 1``: the decoder's own
            durations, exact, with no aligner.
        """
        if not 0 <= min_len_ratio <= max_len_ratio:
            raise InputError(f"Need 0 <= min_len_ratio ({min_len_ratio}) <= max_len_ratio ({max_len_ratio}).")
        if temperature <= 0:
            raise InputError(f"temperature must be > 0, got {temperature}.")
        was_training = self.training
        self.eval()
        try:
            prefix, prefix_lengths = self._encode_prefix(tokens, token_lengths, speech, speech_lengths, speaker)
            word_vectors, num_words = self._word_vectors(prefix, token_lengths, word_ids, speaker)
            n_tokens = torch.as_tensor(token_lengths, device=prefix.device).reshape(-1).float()
            max_len = torch.floor(max_len_ratio * n_tokens).long()
            min_len = torch.ceil(min_len_ratio * n_tokens).long()
            self._check_length(int((prefix_lengths + max_len + num_words).max()), "Prefix + max_len_ratio x tokens")
            units, lengths, word_starts = self._walk(prefix, prefix_lengths, word_vectors, num_words, min_len,
                                                     max_len, top_k, temperature, use_cache, generator)
            return (units, lengths, word_starts) if return_word_starts else (units, lengths)
        finally:
            self.train(was_training)

    def _walk(self, prefix, prefix_lengths, word_vectors, num_words, min_len, max_len, top_k, temperature,
              use_cache, generator):
        batch, width, _ = prefix.shape
        device = prefix.device
        # Left-align prefixes so all utterances append at the same column (as unit_transformer).
        source = torch.arange(width, device=device)[None] - (width - prefix_lengths)[:, None]
        valid = source >= 0
        gathered = prefix.gather(1, source.clamp(min=0)[..., None].expand_as(prefix))
        sequence = gathered * valid[..., None] + self.positions[source.clamp(min=0)]
        hidden, cache = self.core(sequence, valid, use_cache=use_cache)
        last = hidden[:, -1]

        steps = int((max_len + num_words).max())
        units = torch.full((batch, steps), -1, dtype=torch.long, device=device)
        lengths = torch.zeros(batch, dtype=torch.long, device=device)
        pointer = torch.zeros(batch, dtype=torch.long, device=device)
        # -1 = not reached yet; filled with the unit count when a word's boundary is emitted.
        word_starts = torch.full((batch, word_vectors.shape[1]), -1, dtype=torch.long, device=device)
        word_starts[:, 0] = 0
        finished = torch.zeros(batch, dtype=torch.bool, device=device)
        step_valid = torch.ones(batch, 1, dtype=torch.bool, device=device)
        rows = torch.arange(batch, device=device)
        for step in range(steps):
            logits = self.head(last)
            on_last_word = pointer >= num_words - 1
            logits[:, self.boundary] = logits[:, self.boundary].masked_fill(on_last_word, -math.inf)
            logits[:, self.eos] = logits[:, self.eos].masked_fill(~on_last_word | (lengths < min_len), -math.inf)
            choice = self._pick(logits, top_k, temperature, generator)
            stop = (choice == self.eos) | (lengths >= max_len)
            is_boundary = choice == self.boundary
            emit = ~finished & ~stop & ~is_boundary
            units[rows[emit], lengths[emit]] = choice[emit]
            lengths += emit.long()
            crossing = ~finished & is_boundary
            pointer += crossing.long()
            word_starts[rows[crossing], pointer[crossing]] = lengths[crossing]
            finished |= stop
            if bool(finished.all()):
                break
            token = torch.where(
                is_boundary[:, None],
                self.boundary_embedding.expand(batch, -1),
                self.unit_embedding(choice.clamp(max=self.num_units - 1)),
            )
            new = token + word_vectors[rows, pointer.clamp(max=word_vectors.shape[1] - 1)] + self.positions[step]
            if use_cache:
                hidden, cache = self.core(new[:, None], step_valid, cache=cache)
            else:
                sequence = torch.cat([sequence, new[:, None]], dim=1)
                valid = torch.cat([valid, step_valid], dim=1)
                hidden, _ = self.core(sequence, valid)
            last = hidden[:, -1]
        short = pointer < num_words - 1
        if bool(short.any()):
            logger.warning("%d utterance(s) hit the maximum length before their last word.", int(short.sum()))
        word_starts = torch.where(word_starts < 0, lengths[:, None], word_starts)
        return units[:, : int(lengths.max()) if batch else 0], lengths, word_starts
