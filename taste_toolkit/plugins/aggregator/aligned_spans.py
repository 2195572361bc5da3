"""``aligned_spans`` aggregator: pool each word's own frames, found by Whisper's alignment.

What the probes showed (``recipes/librispeech/RESULTS.md``, session 4): the encoder
frames inside a word's span carry its prosody (linear-probe balanced accuracy 0.80
from the shallow tap, chance 0.125), but the ``cross_attention`` aggregator's word
vectors do not (0.12-0.14). The Whisper-decoder residual stream is dominated by the
text, and the alignment heads attend to one narrow point.

This aggregator keeps the attention only for *where* a word is:

1. a frozen, Whisper-exact decoder pass (keys and values = the encoder's last
   layer, as Whisper was trained) gives the alignment heads' attention, read at
   the position that predicts each token;
2. Whisper-style DTW turns it into a monotonic token -> frames path
   (:func:`taste_toolkit.alignment.token_frame_spans`);
3. each word's vector is the mean of the *value* tap (a shallow layer: acoustic
   detail) over its frames, plus the word's log duration.

It has no trained parameters: the quantizer's projections and the decoder learn
what to read. Being frozen, its spans for given (tokens, key frames) never change,
so they are memoized: with the recipe's encoder-output cache, the aligner runs
once per utterance instead of once per epoch. Compare with ``oracle_spans`` (the
true spans) in ``hparams/ablations/aligned_spans.yaml``.
"""

import hashlib
import math
from collections import OrderedDict

import numpy as np
import torch

from taste_toolkit.alignment import token_frame_spans
from taste_toolkit.errors import ConfigError
from taste_toolkit.interfaces import Aggregator, AggregatorOutput, EncoderOutput
from taste_toolkit.plugins.aggregator.cross_attention import CrossAttentionAggregator
from taste_toolkit.registry import register


@register("aggregator", "aligned_spans")
class AlignedSpansAggregator(Aggregator):
    """Mean of the value tap over each word's DTW-aligned frames (+ log duration).

    Arguments
    ---------
    vocab_size, key_dim, value_dim : int
        Text vocabulary and encoder tap sizes (wired by the recipe).
    init_from_whisper : str
        Whisper source (hub id, folder, ``builtin:tiny.en``) of the frozen aligner:
        its decoder layers, embeddings, prompt and alignment heads.
    num_layers, num_heads, ffn_dim, max_positions : int
        The aligner's geometry (the Whisper decoder's; tiny.en: 4, 6, 1536, 448).
    alignment_heads : list of [layer, head]
        Empty = Whisper's own (from its generation config).
    medfilt_width : int
        Median filter over time before DTW (Whisper: 7).
    add_log_duration : bool
        Append the aligned word's log duration in seconds.
    duration_scale : float
        Factor on that log duration. The quantizer's projection keeps the
        directions of largest variance, and one unit-scale dimension among
        ``value_dim`` acoustic ones carries little of it: scale it up so the
        word's duration survives quantization.
    """

    output_level = "word"

    def __init__(self, vocab_size: int, key_dim: int, value_dim: int, init_from_whisper: str = "",
                 num_layers: int = 4, num_heads: int = 6, ffn_dim: int = 1536, max_positions: int = 448,
                 alignment_heads: list = (), medfilt_width: int = 7, add_log_duration: bool = True,
                 duration_scale: float = 1.0):
        super().__init__()
        if medfilt_width < 1 or medfilt_width % 2 == 0:
            raise ConfigError(f"medfilt_width must be an odd number >= 1, got {medfilt_width}.")
        self.vocab_size, self.key_dim, self.value_dim = vocab_size, key_dim, value_dim
        self.medfilt_width = medfilt_width
        self.add_log_duration = add_log_duration
        if not duration_scale > 0:
            raise ConfigError(f"duration_scale must be > 0, got {duration_scale}.")
        self.duration_scale = float(duration_scale)
        # Whisper-exact: values = keys (last layer), Whisper's own v_proj, its prompt.
        self.aligner = CrossAttentionAggregator(
            vocab_size, key_dim, key_dim, d_model=key_dim, num_layers=num_layers, num_heads=num_heads,
            ffn_dim=ffn_dim, max_positions=max_positions, word_pooling="none", value_identity_init=False,
            init_from_whisper=init_from_whisper, alignment_heads=list(alignment_heads),
        )
        self.aligner.requires_grad_(False)
        self._spans = OrderedDict()  # content hash -> (first, last) token frame spans
        self.max_cached_spans = 200_000

    @staticmethod
    def _span_key(tokens, keys):
        """Content hash of one utterance's text tokens ``(N,)`` and key frames ``(T, D)``."""
        digest = hashlib.blake2b(digest_size=16)
        digest.update(tokens.detach().cpu().long().numpy().tobytes())
        digest.update(keys.detach().cpu().float().contiguous().numpy().tobytes())
        return digest.digest()

    def token_spans(self, tokens, token_lengths, word_ids, encoder_out, need_weights=False):
        """DTW frame spans of every token, memoized by content.

        Arguments
        ---------
        tokens, word_ids : torch.Tensor
            ``(B, N)`` text tokens and their word indices.
        token_lengths : torch.Tensor
            ``(B,)`` valid tokens.
        encoder_out : EncoderOutput
            Only the keys (the encoder's last layer) are read.
        need_weights : bool
            Run the aligner even if every span is memoized, to return its attention.

        Returns
        -------
        spans : list
            Per utterance ``(first, last)`` ``(N,)`` inclusive frame arrays, or None
            (no tokens or no frames).
        aligned : AggregatorOutput or None
            The aligner's output when it ran.
        """
        keys, b = encoder_out.keys, tokens.shape[0]
        sizes = [(int(token_lengths[i]), int(encoder_out.lengths[i])) for i in range(b)]
        ids = [self._span_key(tokens[i, :n], keys[i, :t]) if n and t else None for i, (n, t) in enumerate(sizes)]
        aligned = None
        if need_weights or any(k is not None and k not in self._spans for k in ids):
            with torch.no_grad():
                exact = EncoderOutput(keys, keys, encoder_out.lengths, encoder_out.frame_rate)
                aligned = self.aligner(tokens, token_lengths, word_ids, exact, need_weights=True)
            alignment = aligned.alignment.float().cpu().numpy()  # (B, N, T), predicting positions
            for i, ((n, t), k) in enumerate(zip(sizes, ids)):
                if k is not None and k not in self._spans:
                    self._spans[k] = token_frame_spans(alignment[i, :n, :t], self.medfilt_width)
                    if len(self._spans) > self.max_cached_spans:
                        self._spans.popitem(last=False)
        return [self._spans[k] if k is not None else None for k in ids], aligned

    def export(self, folder):
        """Standalone options: the aligner's weights and prompt are in the checkpoint."""
        return {"init_from_whisper": "", "alignment_heads": self.aligner.alignment_heads}

    def train(self, mode=True):
        super().train(mode)
        self.aligner.eval()  # frozen: no dropout, ever
        return self

    @property
    def output_dim(self):
        return self.value_dim + int(self.add_log_duration)

    def forward(self, tokens, token_lengths, word_ids, encoder_out, need_weights=False):
        """Pool per word.

        Returns
        -------
        AggregatorOutput
            ``embeddings (B, W, value_dim [+1])`` word-level; ``attention`` and
            ``alignment`` ``(B, N, T)`` from the aligner when ``need_weights``.
        """
        spans, aligned = self.token_spans(tokens, token_lengths, word_ids, encoder_out, need_weights)
        values = encoder_out.values
        b, _, d = values.shape
        token_lengths = token_lengths.long().cpu()
        frame_lengths = encoder_out.lengths.long().cpu()
        ids = word_ids.long().cpu()
        num_words = [int(ids[i, : int(token_lengths[i])].max()) + 1 if int(token_lengths[i]) else 0 for i in range(b)]
        w_max = max(max(num_words), 1)
        out = values.new_zeros(b, w_max, self.output_dim)
        for i in range(b):
            if spans[i] is None:
                continue
            n, t, w = int(token_lengths[i]), int(frame_lengths[i]), num_words[i]
            first, last = spans[i]
            # Word span = from its first token's first frame to its last token's last frame.
            word = ids[i, :n].numpy()
            a = np.full(w, t, dtype=np.int64)
            z = np.full(w, -1, dtype=np.int64)
            np.minimum.at(a, word, first)
            np.maximum.at(z, word, last)
            spoken = z >= 0  # words with at least one token
            a = np.minimum(a, t - 1)
            z = np.maximum(np.minimum(z + 1, t), a + 1)  # exclusive end, at least one frame
            # Span means from a cumulative sum (float64: no drift over long utterances).
            cum = torch.cat([values.new_zeros(1, d, dtype=torch.float64), values[i, :t].double().cumsum(0)])
            a_t, z_t = torch.from_numpy(a).to(values.device), torch.from_numpy(z).to(values.device)
            means = (cum[z_t] - cum[a_t]) / (z_t - a_t).unsqueeze(-1)
            rows = torch.from_numpy(np.flatnonzero(spoken)).to(values.device)
            out[i, rows, :d] = means[rows].to(values.dtype)
            if self.add_log_duration:
                seconds = torch.from_numpy((z - a) / encoder_out.frame_rate)
                log_duration = self.duration_scale * torch.log(seconds + math.exp(-4))
                out[i, rows, d] = log_duration.to(values.device, values.dtype)[rows]
        lengths = torch.tensor(num_words, device=values.device)
        if need_weights:
            return AggregatorOutput(out, lengths, "word", aligned.attention, aligned.alignment)
        return AggregatorOutput(out, lengths, "word", None, None)
