"""``whisper_decoder`` aggregator: the official TASTE release's 2-layer Whisper decoder.

The release (``WhisperAudioJointEncoderSegmenter`` with ``forward_type:
asr_attn_pooling``, arXiv 2504.07053) uses the decoder of distil-large-v3 as its
aggregator, unchanged except for where its cross-attention reads from:

1. queries: Whisper's transcription prompt ``[50258, 50259, 50360, 50364]``
   (``<|startoftranscript|> <|en|> <|transcribe|> <|notimestamps|>``), the
   subword ids of the transcript, then ``<|endoftext|>`` (50257) after the
   (right-padded) ids;
2. every layer: causal self-attention, then cross-attention with
   ``K = k_proj(keys)`` (the encoder's final output after its LayerNorm) and
   ``V = v_proj(values)`` (the hidden state entering encoder layer 6), explicit
   softmax (the release runs the eager path; SDPA would ignore the split there),
   no encoder mask (the release attends to the whole 30-s window: use the
   ``whisper`` encoder's ``padded_window`` mode to reproduce it), then a GELU FFN;
3. final LayerNorm; the prompt positions are dropped, and every subword gets
   the mean of its word's subword states (``word_pooling: broadcast``); the
   ``<|endoftext|>`` position is dropped.

The output has one vector per text token (tokens of a word share it), which
the RVQ quantizes per token, as the release does.

The state-dict keys are those of a transformers ``WhisperDecoder``
(``embed_tokens``, ``embed_positions``, ``layers.N.{self_attn,encoder_attn,...}``,
``layer_norm``), so the release's ``audio_segmenter.decoder.*`` tensors load as
they are (:mod:`taste_toolkit.official.audio_tower`).

Known difference from the release: the release finds each word's subwords
from runs of equal ``asr_word_ids`` over ``token_length + 1`` positions of the
*padded* batch, so an utterance whose last word id equals the id used for padding
(0: a one-word transcript) is averaged with, or left un-averaged because of, its
padding when it is batched with longer ones. Alone (batch of one) the release
and this plugin agree; this plugin never lets padding in.
"""

import torch
from torch import nn

from taste_toolkit.errors import ConfigError, InputError
from taste_toolkit.interfaces import Aggregator, AggregatorOutput
from taste_toolkit.plugins.aggregator.cross_attention import (
    ATTENTION_IMPLEMENTATIONS,
    AggregatorLayer,
    word_mean_pool,
)
from taste_toolkit.registry import register

#: Whisper's transcription prompt as the release hard-codes it (large-v3 vocabulary).
RELEASE_PROMPT_IDS = (50258, 50259, 50360, 50364)
#: ``<|endoftext|>`` of the large-v3 vocabulary.
RELEASE_EOS_ID = 50257
WORD_POOLINGS = ("broadcast", "mean", "none")


def whisper_decoder_options(whisper_config):
    """Geometry options of this plugin for a Whisper config.

    Arguments
    ---------
    whisper_config : dict
        A ``WhisperConfig`` as plain data (e.g. the ``asr_config`` of an official
        TASTE ``config.json``).

    Returns
    -------
    dict
        ``vocab_size``, ``key_dim``, ``value_dim``, ``d_model``, ``num_layers``,
        ``num_heads``, ``ffn_dim``, ``max_positions``.
    """
    try:
        d = int(whisper_config["d_model"])
        return {
            "vocab_size": int(whisper_config["vocab_size"]),
            "key_dim": d,
            "value_dim": d,
            "d_model": d,
            "num_layers": int(whisper_config["decoder_layers"]),
            "num_heads": int(whisper_config["decoder_attention_heads"]),
            "ffn_dim": int(whisper_config["decoder_ffn_dim"]),
            "max_positions": int(whisper_config["max_target_positions"]),
        }
    except KeyError as exc:
        raise ConfigError(f"The Whisper config has no {exc.args[0]!r}; pass a full WhisperConfig dict.") from exc


@register("aggregator", "whisper_decoder")
class WhisperDecoderAggregator(Aggregator):
    """The release's Whisper-decoder aggregator (K = deep tap, V = shallow tap).

    Arguments
    ---------
    vocab_size : int
        Whisper vocabulary (51866 for large-v3 / distil-large-v3).
    key_dim, value_dim : int
        Feature sizes of the encoder's key and value taps.
    d_model : int
        Decoder width; 0 = ``key_dim``.
    num_layers, num_heads, ffn_dim : int
        Decoder geometry (``ffn_dim`` 0 = 4 * d_model).
    max_positions : int
        Learned positions (Whisper: 448), prompt and end token included.
    prompt_ids : list of int
        Query ids before the transcript; their outputs are dropped.
    eos_id : int
        Id appended after the padded transcript (its output is dropped; under
        causal attention it changes nothing before it). -1 = none.
    word_pooling : str
        ``"broadcast"`` (release): every subword gets its word's mean, one vector
        per token; ``"mean"``: one vector per word; ``"none"``: per subword.
    value_identity_init : bool
        Initialise the cross-attention value projections to identity (the
        release's ``make_v_proj_identity``; init only, loaded weights win).
    attention_implementation : str
        ``"eager"`` (release) or ``"sdpa"``.
    dropout : float
        Dropout inside the layers (Whisper's ``dropout``).

    Example
    -------
    >>> from taste_toolkit.interfaces import EncoderOutput
    >>> agg = WhisperDecoderAggregator(vocab_size=100, key_dim=16, value_dim=16, num_heads=2,
    ...                                max_positions=32, prompt_ids=[1, 2], eos_id=3)
    >>> enc = EncoderOutput(torch.randn(1, 10, 16), torch.randn(1, 10, 16), torch.tensor([10]), 50.0)
    >>> out = agg(torch.tensor([[5, 6, 7]]), torch.tensor([3]), torch.tensor([[0, 0, 1]]), enc)
    >>> out.embeddings.shape, bool(torch.equal(out.embeddings[0, 0], out.embeddings[0, 1]))
    (torch.Size([1, 3, 16]), True)
    """

    def __init__(
        self,
        vocab_size: int = 51866,
        key_dim: int = 1280,
        value_dim: int = 0,
        d_model: int = 0,
        num_layers: int = 2,
        num_heads: int = 20,
        ffn_dim: int = 0,
        max_positions: int = 448,
        prompt_ids: list = RELEASE_PROMPT_IDS,
        eos_id: int = RELEASE_EOS_ID,
        word_pooling: str = "broadcast",
        value_identity_init: bool = True,
        attention_implementation: str = "eager",
        dropout: float = 0.0,
    ):
        super().__init__()
        if word_pooling not in WORD_POOLINGS:
            raise ConfigError(f"word_pooling must be one of {WORD_POOLINGS}, got {word_pooling!r}.")
        if attention_implementation not in ATTENTION_IMPLEMENTATIONS:
            raise ConfigError(
                f"attention_implementation must be one of {ATTENTION_IMPLEMENTATIONS}, "
                f"got {attention_implementation!r}."
            )
        self.d_model = int(d_model or key_dim)
        self.key_dim, self.value_dim = int(key_dim), int(value_dim or self.d_model)
        prompt = [int(i) for i in prompt_ids]
        bad = [i for i in prompt + ([int(eos_id)] if eos_id >= 0 else []) if not 0 <= i < vocab_size]
        if bad:
            raise ConfigError(f"prompt_ids/eos_id {bad} are outside the vocabulary of {vocab_size} ids.")
        if len(prompt) + 1 >= max_positions:
            raise ConfigError(f"max_positions={max_positions} leaves no room after {len(prompt)} prompt ids.")
        self.vocab_size, self.max_positions = int(vocab_size), int(max_positions)
        self.eos_id, self.word_pooling = int(eos_id), word_pooling
        self.embed_tokens = nn.Embedding(vocab_size, self.d_model)
        self.embed_positions = nn.Embedding(max_positions, self.d_model)
        self.layers = nn.ModuleList(
            AggregatorLayer(self.d_model, num_heads, ffn_dim or 4 * self.d_model, self.key_dim, self.value_dim,
                            dropout, attention_implementation)
            for _ in range(num_layers)
        )
        self.layer_norm = nn.LayerNorm(self.d_model)
        # Not a state-dict entry: the release's decoder has no such tensor.
        self.register_buffer("prompt_ids", torch.tensor(prompt, dtype=torch.long), persistent=False)
        if value_identity_init and self.value_dim == self.d_model:
            with torch.no_grad():
                for layer in self.layers:
                    layer.encoder_attn.v_proj.weight.copy_(torch.eye(self.d_model))
                    layer.encoder_attn.v_proj.bias.zero_()

    @property
    def output_level(self):
        """``"word"`` with ``word_pooling: mean``; ``"token"`` otherwise (``broadcast`` repeats the word's vector)."""
        return "word" if self.word_pooling == "mean" else "token"

    @property
    def output_dim(self):
        return self.d_model

    def decoder_states(self, tokens, encoder_out, need_weights=False):
        """Run the decoder on ``prompt + tokens + eos`` (the release's ``whisper_text_token``).

        Arguments
        ---------
        tokens : torch.Tensor
            ``(B, N)`` right-padded subword ids (the padding is fed as is, like the
            release; causal attention keeps it out of the valid positions).
        encoder_out : EncoderOutput
            Keys ``(B, T, key_dim)``, values ``(B, T, value_dim)``; frames at or
            beyond ``lengths`` are masked (none in ``padded_window`` mode).
        need_weights : bool
            Also return every layer's cross-attention probabilities.

        Returns
        -------
        states : torch.Tensor
            ``(B, P + N + E, D)`` after the final LayerNorm (``P`` prompt ids,
            ``E`` = 1 with an end token).
        cross_attention : list of torch.Tensor
            Per layer ``(B, H, P + N + E, T)`` (empty unless ``need_weights``).
        """
        b, n = tokens.shape
        p, e = self.prompt_ids.numel(), int(self.eos_id >= 0)
        if p + n + e > self.max_positions:
            raise InputError(
                f"Transcript has {n} tokens; this aggregator handles at most {self.max_positions - p - e}. "
                "Split the utterance into shorter segments."
            )
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab_size):
            raise InputError(
                f"Token ids must be in [0, {self.vocab_size}); got [{int(tokens.min())}, {int(tokens.max())}]."
            )
        parts = [self.prompt_ids.expand(b, p), tokens.long()]
        if e:
            parts.append(tokens.new_full((b, 1), self.eos_id).long())
        ids = torch.cat(parts, 1)
        x = self.embed_tokens(ids) + self.embed_positions.weight[: ids.shape[1]]
        causal = torch.ones(ids.shape[1], ids.shape[1], dtype=torch.bool, device=x.device).tril()[None, None]
        keys, values = encoder_out.keys, encoder_out.values
        t = keys.shape[1]
        frame_lengths = encoder_out.lengths.to(x.device)
        frame_mask = None
        if bool((frame_lengths < t).any()):
            frame_mask = (torch.arange(t, device=x.device)[None] < frame_lengths[:, None])[:, None, None, :]
        weights = []
        for layer in self.layers:
            x, w = layer(x, causal, keys, values, frame_mask, need_weights)
            if need_weights:
                weights.append(w)
        return self.layer_norm(x), weights

    def forward(self, tokens, token_lengths, word_ids, encoder_out, need_weights=False):
        """Pool speech per text token, each subword carrying its word's mean.

        Arguments
        ---------
        tokens : torch.Tensor
            ``(B, N)`` subword ids, right-padded.
        token_lengths : torch.Tensor
            ``(B,)`` valid tokens.
        word_ids : torch.Tensor
            ``(B, N)`` word index of each token (0-based; padding: any value).
        encoder_out : EncoderOutput
            The ``whisper`` encoder's taps.
        need_weights : bool
            Return the last layer's cross-attention averaged over heads.

        Returns
        -------
        AggregatorOutput
            ``embeddings (B, N, D)`` (``(B, W, D)`` with ``word_pooling: mean``),
            zeros at padding; ``attention (B, N, T)`` at the tokens' positions and
            ``alignment`` one position earlier (Whisper's state before a token
            attends to that token's audio) when ``need_weights``.
        """
        b, n = tokens.shape
        token_lengths = torch.as_tensor(token_lengths, device=tokens.device).long()
        if token_lengths.shape != (b,) or (token_lengths < 0).any() or (token_lengths > n).any():
            raise InputError(f"token_lengths must be (B,)={b} counts in [0, {n}], got {token_lengths.tolist()}.")
        states, weights = self.decoder_states(tokens, encoder_out, need_weights)
        p = self.prompt_ids.numel()
        x = states[:, p : p + n]
        attention = alignment = None
        if need_weights:
            full = weights[-1].mean(1)  # (B, P + N + E, T)
            attention = full[:, p : p + n]
            alignment = full[:, p - 1 : p - 1 + n] if p > 0 else attention
        word_ids = word_ids.to(x.device)
        if self.word_pooling == "mean":
            pooled, word_lengths = word_mean_pool(x, word_ids, token_lengths)
            return AggregatorOutput(pooled, word_lengths, "word", attention, alignment)
        valid = (torch.arange(n, device=x.device)[None] < token_lengths[:, None])[..., None]
        if self.word_pooling == "broadcast" and n:
            pooled, _ = word_mean_pool(x, word_ids, token_lengths)
            ids = torch.where(valid[..., 0], word_ids, torch.zeros_like(word_ids)).long()
            x = pooled.gather(1, ids[..., None].expand(-1, -1, x.shape[-1]))
        return AggregatorOutput(x * valid, token_lengths, "token", attention, alignment)

    def export(self, folder):
        """Options for a standalone checkpoint: everything is in the weights and options."""
        return {"prompt_ids": [int(i) for i in self.prompt_ids.tolist()]}
