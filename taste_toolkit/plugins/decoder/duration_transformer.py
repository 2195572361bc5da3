"""``duration_transformer`` decoder: non-autoregressive units from per-word durations.

The autoregressive decoders (``unit_transformer``, ``word_pointer_transformer``)
sample one unit after the other. On the embedded corpus they predict the next
unit right only 35-47% of the time teacher-forced, so a sampled sequence drifts
away from the words, may never stop, and the reconstructions are unintelligible
(RESULTS.md, sessions 8-9). This decoder takes the FastSpeech route instead:

1. the text and TASTE tokens are fused as in ``unit_transformer`` and pooled per
   word (the ``word_pointer_transformer``'s word vectors), then contextualized by
   a bidirectional Transformer over the words;
2. a duration head predicts each word's unit count (``log(1 + units)``, MSE);
   TASTE's word tokens carry the duration, which is where they help most;
3. each word's state is repeated over its units (the true counts in training,
   the predicted ones at generation), plus the unit's position inside its word
   (index and fraction), and a bidirectional Transformer over all units predicts
   every unit at once (cross-entropy). With ``token_context`` the fused text +
   TASTE token states are put in front of the units in that Transformer, so a
   unit can read the sub-word tokens of its word (which phones, in which order)
   rather than only their mean.

There is no end-of-speech to learn and no loop to fall into: the length is the
sum of the predicted durations, capped at ``max_len_ratio x tokens``.
Generation is greedy by default (``top_k=0``); top-k sampling draws each unit
independently, which makes the sequence noisier, not more natural. With
``switch_penalty > 0`` the greedy path is run-smoothed instead: the best
sequence under a cost per unit change (:mod:`taste_toolkit.nn.unit_smoothing`),
so a position where the decoder hesitates between close units does not flicker.
Measured on the embedded corpus, it made the speech less intelligible at every
penalty tried (RESULTS.md, session 13): the short runs carry words. Off by default.

Training needs the word of every unit (``unit_word_ids``, from the corpus' word
times or the Whisper aligner: ``word_times`` in ``hparams/taste.yaml``).
"""

import logging

import torch
import torch.nn.functional as F
from torch import nn

from taste_toolkit.errors import ConfigError, InputError
from taste_toolkit.interfaces import DecoderOutput
from taste_toolkit.nn.causal_transformer import TransformerStack
from taste_toolkit.nn.unit_smoothing import smooth_unit_runs
from taste_toolkit.plugins.decoder.unit_transformer import UnitTransformerDecoder
from taste_toolkit.plugins.decoder.word_pointer_transformer import WordPointerDecoder, checked_unit_words
from taste_toolkit.registry import register

logger = logging.getLogger(__name__)


@register("decoder", "duration_transformer")
class DurationTransformerDecoder(UnitTransformerDecoder):
    """Per-word durations + a bidirectional Transformer over the units.

    Takes the options of ``unit_transformer`` (``fusion`` must be
    ``weighted_sum``; ``num_layers`` is the depth of the unit-rate stack) plus:

    Arguments
    ---------
    word_layers : int
        Bidirectional layers over the word vectors (before the duration head).
    duration_weight : float
        Weight of the duration MSE (on ``log(1 + units per word)``) in the loss.
    max_word_units : int
        Longest word, in units, at generation (a safety cap on the prediction).
    token_context : bool
        Put the fused token states ``(B, N, D)`` (text + TASTE, one per text token)
        before the units in the unit-rate Transformer, which attends over both.
        False: the units see their word's mean vector only (sessions 9-11).

    Example
    -------
    >>> dec = DurationTransformerDecoder(vocab_size=10, num_units=6, speech_dim=4, d_model=16,
    ...                                  num_layers=1, num_heads=2, ffn_dim=32)
    >>> out = dec(torch.tensor([[1, 2, 3]]), torch.tensor([3]), torch.randn(1, 3, 4), torch.tensor([3]),
    ...           torch.tensor([[0, 5, 2, 1]]), torch.tensor([4]), word_ids=torch.tensor([[0, 0, 1]]),
    ...           unit_word_ids=torch.tensor([[0, 0, 1, 1]]))
    >>> out.logits.shape, out.targets.tolist()
    (torch.Size([1, 4, 7]), [[0, 5, 2, 1]])
    """

    needs_word_ids = True
    needs_unit_word_ids = True

    def __init__(self, vocab_size: int, num_units: int, speech_dim: int = 0, speaker_dim: int = 0,
                 d_model: int = 256, num_layers: int = 4, num_heads: int = 4, ffn_dim: int = 1024,
                 dropout: float = 0.1, text_layers: int = 1, speech_layers: int = 1, fusion: str = "weighted_sum",
                 max_positions: int = 4096, causal_branches: bool = False, normalize_streams: bool = True,
                 word_layers: int = 2, duration_weight: float = 1.0, max_word_units: int = 100,
                 token_context: bool = False):
        super().__init__(vocab_size, num_units, speech_dim, speaker_dim, d_model, num_layers, num_heads, ffn_dim,
                         dropout, text_layers, speech_layers, fusion, max_positions, causal_branches,
                         normalize_streams)
        if self.fusion != "weighted_sum":
            raise ConfigError("duration_transformer reads words from the fused prefix: use fusion='weighted_sum'.")
        if word_layers < 0 or duration_weight < 0 or max_word_units < 1:
            raise ConfigError("duration_transformer needs word_layers >= 0, duration_weight >= 0 and "
                              f"max_word_units >= 1; got {word_layers}, {duration_weight}, {max_word_units}.")
        self.duration_weight = float(duration_weight)
        self.max_word_units = int(max_word_units)
        stack = dict(num_heads=num_heads, ffn_dim=ffn_dim, dropout=dropout)
        self.word_proj = nn.Linear(d_model, d_model)
        self.word_encoder = TransformerStack(d_model, word_layers, causal=False, **stack)
        self.duration_head = nn.Linear(d_model, 1)
        self.fraction_proj = nn.Linear(1, d_model)
        # Bidirectional: every unit sees the whole utterance (there is no previous unit to lean on).
        self.core = TransformerStack(d_model, num_layers, causal=False, **stack)
        self.head = nn.Linear(d_model, num_units + 1)  # + the end-of-speech class, never a target here
        self.token_context = bool(token_context)
        if self.token_context:
            # Tells the unit-rate stack a token state from a unit input.
            self.token_type = nn.Parameter(torch.zeros(d_model))

    _word_vectors = WordPointerDecoder._word_vectors

    # ------------------------------------------------------------------ words

    def _words(self, tokens, token_lengths, speech, speech_lengths, speaker, word_ids):
        """Contextual word states ``(B, W, D)``, words per utterance ``(B,)``, log-duration predictions
        ``(B, W)`` and, with ``token_context``, the fused token states ``(B, N, D)`` with their mask
        ``(B, N)`` for ``_core`` (else None)."""
        prefix, _ = self._encode_prefix(tokens, token_lengths, speech, speech_lengths, speaker)
        if self.token_context:
            offset = 1 if self.speaker_dim else 0  # the speaker vector comes first in the prefix
            lengths = torch.as_tensor(token_lengths, device=prefix.device).long().reshape(-1)
            n_max = int(lengths.max())
            token_valid = torch.arange(n_max, device=prefix.device)[None] < lengths[:, None]
            context = (prefix[:, offset : offset + n_max] + self.token_type, token_valid)
        else:
            context = None
        words, num_words = self._word_vectors(prefix, token_lengths, word_ids, speaker)
        if self.speaker_dim:
            words = words + prefix[:, :1]  # the speaker prefix vector, on every word
        valid = torch.arange(words.shape[1], device=words.device)[None] < num_words[:, None]
        words, _ = self.word_encoder(words + self.positions[: words.shape[1]], valid)
        return words, num_words, self.duration_head(words)[..., 0], context

    def _expand(self, words, unit_word):
        """Unit-rate inputs from each unit's word ``unit_word (B, S)`` (-1 = padding)."""
        b, s = unit_word.shape
        valid = unit_word >= 0
        w = unit_word.clamp(min=0)
        # Index of each unit inside its word, and the word's length in units.
        starts = torch.ones_like(w, dtype=torch.bool)
        starts[:, 1:] = w[:, 1:] != w[:, :-1]
        column = torch.arange(s, device=w.device)[None].expand(b, s)
        first = torch.where(starts, column, torch.zeros_like(column)).cummax(dim=1).values
        within = column - first
        counts = torch.zeros(b, words.shape[1], device=w.device).scatter_add(1, w, valid.float())
        fraction = (within.float() + 0.5) / counts.gather(1, w).clamp(min=1)
        x = words.gather(1, w[..., None].expand(-1, -1, words.shape[-1]))
        x = x + self.positions[within.clamp(max=self.max_positions - 1)] + self.positions[:s]
        x = x + self.fraction_proj(fraction[..., None])
        return x * valid[..., None], valid

    def _core(self, x, valid, context):
        """Unit-rate states ``(B, S, D)`` of the expanded inputs, after the token states ``context``."""
        if context is None:
            return self.core(x, valid)[0]
        states, token_valid = context
        hidden, _ = self.core(torch.cat([states, x], 1), torch.cat([token_valid, valid], 1))
        return hidden[:, states.shape[1]:]

    # ---------------------------------------------------------------- training

    def forward(self, tokens, token_lengths, speech, speech_lengths, units, unit_lengths, speaker=None,
                word_ids=None, unit_word_ids=None):
        """All units at once from the true word durations.

        Arguments are those of ``unit_transformer`` plus ``word_ids (B, N)`` (word
        of each text token) and ``unit_word_ids (B, S)`` (word of each unit).

        Returns
        -------
        DecoderOutput
            ``logits (B, S, V + 1)``, ``targets (B, S)`` (-100 at padding); ``loss`` =
            unit cross-entropy + ``duration_weight`` x duration MSE.
        """
        words, num_words, log_dur, context = self._words(tokens, token_lengths, speech, speech_lengths, speaker,
                                                         word_ids)
        device = words.device
        units = units.to(device)
        unit_lengths = self._lengths(unit_lengths, units.shape[1], device, "unit")
        self._check_length(units.shape[1], "The unit sequence")
        valid = torch.arange(units.shape[1], device=device)[None] < unit_lengths[:, None]
        if ((units < 0) | (units >= self.num_units))[valid].any():
            raise InputError(f"Unit ids must lie in [0, {self.num_units}).")
        unit_word = checked_unit_words(unit_word_ids, units, valid, num_words, "duration_transformer")
        unit_word = torch.where(valid, unit_word, torch.full_like(unit_word, -1))

        x, _ = self._expand(words, unit_word)
        hidden = self._core(x, valid, context)
        logits = self.head(hidden)
        targets = torch.where(valid, units, torch.full_like(units, -100))
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)

        counts = torch.zeros(words.shape[:2], device=device).scatter_add(1, unit_word.clamp(min=0), valid.float())
        word_valid = torch.arange(words.shape[1], device=device)[None] < num_words[:, None]
        duration_loss = F.mse_loss(log_dur[word_valid], torch.log1p(counts[word_valid]))
        return DecoderOutput(logits=logits, targets=targets, loss=loss + self.duration_weight * duration_loss)

    # --------------------------------------------------------------- inference

    @torch.no_grad()
    def generate(self, tokens, token_lengths, speech, speech_lengths, speaker=None, word_ids=None,
                 max_len_ratio: float = 40.0, top_k: int = 0, temperature: float = 1.0,
                 duration_scale: float = 1.0, generator=None, return_word_starts: bool = False,
                 switch_penalty: float = 0.0):
        """Units from the predicted durations; greedy unless ``top_k > 0``.

        Arguments
        ---------
        max_len_ratio : float
            At most ``max_len_ratio x tokens`` units per utterance; longer predictions
            are scaled down to it (and the decode counts as capped). The default 40
            is 0.8 s per text token with 50 Hz units: a safety net, not the usual length.
        top_k, temperature, generator
            ``top_k > 0`` samples each unit independently (see the module docstring).
        duration_scale : float
            Speaking-rate control: every predicted duration is multiplied by it.
        switch_penalty : float
            Greedy decoding only: cost, in nats, of each unit change in the
            best-path search (0 = per-position argmax).

        Returns
        -------
        units, lengths[, word_starts]
            As ``word_pointer_transformer.generate``: ``(B, S)`` (-1 after the end),
            ``(B,)`` and, with ``return_word_starts``, ``(B, W)`` first unit of each word.
        """
        if max_len_ratio <= 0 or duration_scale <= 0 or temperature <= 0:
            raise InputError(f"max_len_ratio ({max_len_ratio}), duration_scale ({duration_scale}) and temperature "
                             f"({temperature}) must be > 0.")
        if not switch_penalty >= 0 or (switch_penalty > 0 and top_k > 0):
            raise InputError(f"switch_penalty ({switch_penalty}) must be >= 0, and applies to greedy decoding only "
                             f"(top_k=0, got top_k={top_k}).")
        was_training = self.training
        self.eval()
        try:
            words, num_words, log_dur, context = self._words(tokens, token_lengths, speech, speech_lengths, speaker,
                                                             word_ids)
            device = words.device
            word_valid = torch.arange(words.shape[1], device=device)[None] < num_words[:, None]
            durations = (torch.expm1(log_dur.float()).clamp(min=0) * duration_scale).round().long()
            durations = durations.clamp(1, self.max_word_units) * word_valid
            n_tokens = torch.as_tensor(token_lengths, device=device).reshape(-1).double()
            cap = torch.floor(max_len_ratio * n_tokens).long().clamp(min=1)
            total = durations.sum(1)
            over = total > cap
            if bool(over.any()):
                logger.warning("%d utterance(s) had predicted durations over max_len_ratio x tokens; scaled down.",
                               int(over.sum()))
                shrunk = (durations.double() * (cap.double() / total.double().clamp(min=1))[:, None]).floor().long()
                durations = torch.where(over[:, None], shrunk.clamp(min=1) * word_valid, durations)
            lengths = durations.sum(1)  # <= cap, unless there are more words than cap (one unit per word)
            self._check_length(int(lengths.max()), "The generated unit sequence")
            s = int(lengths.max())
            word_starts = torch.cumsum(durations, 1) - durations  # first unit of each word
            column = torch.arange(s, device=device)[None]
            unit_word = torch.searchsorted(torch.cumsum(durations, 1), column.expand(durations.shape[0], -1).contiguous(),
                                           right=True)
            valid = column < lengths[:, None]
            unit_word = torch.where(valid, unit_word.clamp(max=words.shape[1] - 1), torch.full_like(unit_word, -1))
            x, _ = self._expand(words, unit_word)
            hidden = self._core(x, valid, context)
            logits = self.head(hidden)[..., : self.num_units]
            if switch_penalty > 0:
                picked = smooth_unit_runs(torch.log_softmax(logits.float(), -1), lengths, switch_penalty)
            else:
                picked = self._pick(logits.flatten(0, 1), top_k, temperature, generator).view(logits.shape[:2])
            units = torch.where(valid, picked, torch.full_like(picked, -1))
            word_starts = torch.where(word_valid, word_starts.clamp(max=lengths[:, None]), lengths[:, None])
            return (units, lengths, word_starts) if return_word_starts else (units, lengths)
        finally:
            self.train(was_training)

    def generation_cap(self, token_lengths, **generate_options):
        """``floor(max_len_ratio x tokens)``: predicted lengths beyond it are scaled down to it."""
        ratio = float(generate_options.get("max_len_ratio", 40.0))
        return torch.floor(ratio * torch.as_tensor(token_lengths).double()).long().clamp(min=1)


__all__ = ["DurationTransformerDecoder"]
