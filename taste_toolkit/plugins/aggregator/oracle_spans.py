"""``oracle_spans`` aggregator: mean of the encoder frames inside each word's true time span.

A diagnostic ceiling, not a tokenizer: it reads the corpus' known word times
(the embedded corpus' ``metadata.jsonl``, the same ones the ``word_pointer``
decoder trains on), so it only runs where those exist (training and testing on
such a corpus) and cannot tokenize new audio. It answers one question: if the
aggregator pooled exactly the right frames for every word, how much would the
unit decoder gain over text-only? (``hparams/ablations/oracle_spans.yaml``;
``taste_toolkit.evaluation.probe`` measures the same pooling with linear probes.)
"""

import math

import torch

from taste_toolkit.errors import ConfigError, InputError
from taste_toolkit.interfaces import Aggregator, AggregatorOutput
from taste_toolkit.registry import register


@register("aggregator", "oracle_spans")
class OracleSpansAggregator(Aggregator):
    """One vector per word: the mean of a tap's frames whose unit falls in that word.

    Arguments
    ---------
    key_dim, value_dim : int
        Feature sizes of the encoder taps (wired from the encoder).
    tap : str
        ``"values"`` (shallow layer) or ``"keys"`` (last layer).
    unit_frame_rate : float
        Rate of the ``unit_word_ids`` grid (the units' frame rate).
    add_log_duration : bool
        Append the word's log duration in seconds (one extra dimension).
    """

    output_level = "word"

    #: The model passes ``unit_word_ids`` (the word of every unit) to ``forward``.
    needs_unit_word_ids = True

    def __init__(self, key_dim: int, value_dim: int, tap: str = "values", unit_frame_rate: float = 25.0,
                 add_log_duration: bool = True):
        super().__init__()
        if tap not in ("values", "keys"):
            raise ConfigError(f"oracle_spans tap must be 'values' or 'keys', got {tap!r}.")
        if unit_frame_rate <= 0:
            raise ConfigError(f"unit_frame_rate must be > 0, got {unit_frame_rate}.")
        self.tap, self.key_dim, self.value_dim = tap, key_dim, value_dim
        self.unit_frame_rate = float(unit_frame_rate)
        self.add_log_duration = add_log_duration

    @property
    def output_dim(self):
        return (self.value_dim if self.tap == "values" else self.key_dim) + int(self.add_log_duration)

    def forward(self, tokens, token_lengths, word_ids, encoder_out, need_weights=False, unit_word_ids=None):
        """Pool frames per word.

        Arguments
        ---------
        word_ids : torch.Tensor
            ``(B, N)`` word index of each text token (gives the number of words).
        unit_word_ids : torch.Tensor
            ``(B, S)`` word index of each unit at ``unit_frame_rate`` (padding: any value
            past the utterance's units, which are never read).

        Returns
        -------
        AggregatorOutput
            ``embeddings (B, W, D [+1])`` word-level, zeros for words without frames.
        """
        if unit_word_ids is None:
            raise InputError("The oracle_spans aggregator needs the corpus' word times (unit_word_ids); it is a "
                             "training-time ceiling and cannot tokenize audio without them.")
        frames = encoder_out.values if self.tap == "values" else encoder_out.keys
        b, t, d = frames.shape
        device = frames.device
        token_lengths = token_lengths.to(device).long()
        valid_tokens = torch.arange(word_ids.shape[1], device=device)[None] < token_lengths[:, None]
        num_words = (torch.where(valid_tokens, word_ids.to(device), -1).max(1).values + 1).clamp(min=1)
        w_max = int(num_words.max())
        # Encoder frame j lies in unit floor(j * unit_rate / frame_rate); frames past the audio or the
        # units are dropped.
        unit_index = (torch.arange(t, device=device) * self.unit_frame_rate / encoder_out.frame_rate).long()
        unit_word_ids = unit_word_ids.to(device).long()
        unit_index = unit_index.clamp(max=unit_word_ids.shape[1] - 1)
        words = unit_word_ids[:, unit_index]  # (B, T)
        keep = (torch.arange(t, device=device)[None] < encoder_out.lengths.to(device)[:, None])
        keep &= (words >= 0) & (words < num_words[:, None])
        words = torch.where(keep, words, w_max)  # a dump slot, cut below
        sums = torch.zeros(b, w_max + 1, d, device=device, dtype=frames.dtype)
        sums.scatter_add_(1, words[..., None].expand(b, t, d), frames * keep[..., None])
        counts = torch.zeros(b, w_max + 1, device=device, dtype=frames.dtype)
        counts.scatter_add_(1, words, keep.to(frames.dtype))
        pooled = sums[:, :w_max] / counts[:, :w_max, None].clamp(min=1)
        if self.add_log_duration:
            seconds = counts[:, :w_max] / encoder_out.frame_rate
            pooled = torch.cat([pooled, torch.log(seconds + math.exp(-4))[..., None]], -1)
        pooled = pooled * (torch.arange(w_max, device=device)[None] < num_words[:, None])[..., None]
        return AggregatorOutput(pooled, num_words, "word", None)
