"""``cross_attention`` aggregator: text tokens query the speech (TASTE section 2).

Each layer (pre-LN, Whisper-decoder shaped so its weights can be copied in):
causal self-attention over the text tokens, then cross-attention whose keys come
from the encoder's deep tap and values from its shallow tap, then a GELU FFN.
One output vector per text token; with ``word_pooling: mean`` the vectors of a
word's sub-words are averaged into one vector per word (the official setting).

Attention uses PyTorch SDPA (``attention_implementation: sdpa``, the default);
when attention weights are asked for (plots, alignment) only the layers holding
the alignment heads are computed explicitly. ``attention_implementation: eager``
computes every attention explicitly (softmax of ``QK^T``), as the official code
does for its key/value split; both give the same outputs (within float rounding),
``eager`` only exists to measure the difference (``benchmarks/run.py``).

With ``init_from_whisper`` the decoder is Whisper's whatever the encoder and the
text tokenizer (:mod:`._whisper_query`): an encoder of another width gets
key/value input projections to the decoder's width; a vocabulary that is not
Whisper's (sentencepiece) gets a random-initialized query embedding and no
Whisper prompt; a multilingual Whisper's prompt carries ``language`` and ``task``.
"""

import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

from taste_toolkit.errors import ConfigError, InputError
from taste_toolkit.interfaces import Aggregator, AggregatorOutput
from taste_toolkit.plugins.aggregator._whisper_query import whisper_alignment_heads as _whisper_alignment_heads
from taste_toolkit.registry import register

logger = logging.getLogger(__name__)


ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager")
QUERY_STATES = ("token", "predicting")
READOUTS = ("state", "attended_values")
PREDICTING_NEEDS_PROMPT = (
    "query_state 'predicting' reads the state before each token, so the first token needs the Whisper prompt "
    "before it: set init_from_whisper (with use_whisper_prompt: True), or use query_state: token."
)


class SplitAttention(nn.Module):
    """Multi-head attention whose keys and values may come from different tensors.

    ``implementation`` is ``"sdpa"`` (fused kernel; explicit only when the weights
    are wanted) or ``"eager"`` (always explicit).
    """

    def __init__(self, d_model, num_heads, key_dim=None, value_dim=None, dropout=0.0, implementation="sdpa"):
        super().__init__()
        if implementation not in ATTENTION_IMPLEMENTATIONS:
            raise ConfigError(
                f"attention_implementation must be one of {ATTENTION_IMPLEMENTATIONS}, got {implementation!r}."
            )
        self.implementation = implementation
        if d_model % num_heads:
            raise ConfigError(f"d_model={d_model} is not divisible by num_heads={num_heads}.")
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(key_dim or d_model, d_model, bias=False)  # as Whisper
        self.v_proj = nn.Linear(value_dim or d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def _heads(self, x):
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x, keys, values, mask=None, is_causal=False, need_weights=False):
        """``x (B, N, D)``, ``keys (B, T, Dk)``, ``values (B, T, Dv)``, ``mask (B, 1, N|1, T)`` bool (True = attend)."""
        q, k, v = self._heads(self.q_proj(x)), self._heads(self.k_proj(keys)), self._heads(self.v_proj(values))
        weights = None
        p = self.dropout if self.training else 0.0
        if need_weights or self.implementation == "eager":  # explicit: weights wanted, or eager asked for
            scores = q @ k.transpose(-1, -2) / self.head_dim**0.5
            if is_causal:
                n, t = scores.shape[-2:]
                causal = torch.ones(n, t, dtype=torch.bool, device=x.device).tril()
                mask = causal if mask is None else mask & causal
            if mask is not None:
                scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
            weights = scores.softmax(-1)
            out = F.dropout(weights, p, self.training) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=is_causal and mask is None)
        b, h, n, d = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * d)), weights


class AggregatorLayer(nn.Module):
    """Whisper-decoder-shaped layer: causal self-attn, split K/V cross-attn, FFN."""

    def __init__(self, d_model, num_heads, ffn_dim, key_dim, value_dim, dropout, implementation="sdpa"):
        super().__init__()
        self.self_attn = SplitAttention(d_model, num_heads, dropout=dropout, implementation=implementation)
        self.self_attn_layer_norm = nn.LayerNorm(d_model)
        self.encoder_attn = SplitAttention(d_model, num_heads, key_dim, value_dim, dropout, implementation)
        self.encoder_attn_layer_norm = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, d_model)
        self.final_layer_norm = nn.LayerNorm(d_model)
        self.dropout = dropout

    def forward(self, x, self_mask, keys, values, frame_mask, need_weights=False):
        h = self.self_attn_layer_norm(x)
        h, _ = self.self_attn(h, h, h, mask=self_mask)
        x = x + F.dropout(h, self.dropout, self.training)
        h, weights = self.encoder_attn(self.encoder_attn_layer_norm(x), keys, values, frame_mask, need_weights=need_weights)
        x = x + F.dropout(h, self.dropout, self.training)
        h = self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))
        return x + F.dropout(h, self.dropout, self.training), weights


def word_mean_pool(x, word_ids, token_lengths):
    """Average token vectors per word.

    Arguments
    ---------
    x : torch.Tensor
        ``(B, N, D)`` token vectors.
    word_ids : torch.Tensor
        ``(B, N)`` word index of each token.
    token_lengths : torch.Tensor
        ``(B,)`` valid tokens.

    Returns
    -------
    pooled : torch.Tensor
        ``(B, W, D)`` one vector per word.
    word_lengths : torch.Tensor
        ``(B,)`` words per utterance.
    """
    b, n, d = x.shape
    valid = torch.arange(n, device=x.device)[None] < token_lengths[:, None]
    ids = torch.where(valid, word_ids, torch.zeros_like(word_ids)).long()
    word_lengths = torch.where(valid, ids + 1, torch.zeros_like(ids)).amax(1)
    w = max(int(word_lengths.max()), 1)
    sums = x.new_zeros(b, w, d).scatter_add_(1, ids[..., None].expand(-1, -1, d), x * valid[..., None])
    counts = x.new_zeros(b, w).scatter_add_(1, ids, valid.to(x.dtype))
    return sums / counts.clamp(min=1)[..., None], word_lengths


@register("aggregator", "cross_attention")
class CrossAttentionAggregator(Aggregator):
    """Text-queried cross-attention over encoder frames (K = deep tap, V = shallow tap).

    Arguments
    ---------
    vocab_size : int
        Text vocabulary size (query embeddings).
    key_dim, value_dim : int
        Feature sizes of the encoder taps.
    d_model : int
        Width; 0 = the Whisper decoder's with ``init_from_whisper``, else ``key_dim``.
    num_layers, num_heads, ffn_dim : int
        Layer geometry (``ffn_dim`` 0 = the Whisper decoder's with ``init_from_whisper``, else 4 * d_model).
    dropout : float
        Dropout inside the layers.
    max_positions : int
        Learned query positions; longer transcripts raise InputError.
    word_pooling : str
        ``"mean"`` (one vector per word, official) or ``"none"`` (per token).
    value_identity_init : bool
        Start cross-attention value projections at identity (values come from a
        non-final layer, official ``make_v_proj_identity``).
    init_from_whisper : str
        Whisper source (hub id, folder or ``builtin:tiny.en``) whose decoder token
        embeddings, positions and first ``num_layers`` layers initialize this module,
        and whose decoder prompt (start-of-transcript ...) is prepended to the
        queries (their outputs are discarded), as the official model does. Empty =
        random init, no prompt. The decoder keeps Whisper's width: encoder taps of
        another width (``key_dim``/``value_dim``) go through key/value input
        projections (``key_in``/``value_in``, trained). A text vocabulary that is
        not Whisper's (``vocab_size`` differs, e.g. sentencepiece) gets a
        random-initialized, trained query embedding (Whisper's scale) and no
        prompt; positions and layers still come from Whisper (logged).
    freeze_embeddings : bool
        Keep token and position embeddings frozen.
    use_whisper_prompt : bool
        With ``init_from_whisper``, prepend Whisper's transcription prompt (needs the
        tokenizer files next to the model). False = weights only, no prompt.
    alignment_heads : list of [layer, head]
        Cross-attention heads whose average is returned as the alignment when
        weights are asked for. Empty = Whisper's own ``alignment_heads`` (from its
        ``generation_config.json``) with ``init_from_whisper``, else every head of
        the last layer.
    attention_implementation : str
        ``"sdpa"`` (default: PyTorch's fused attention; the layers holding the
        alignment heads are computed explicitly only when weights are asked for)
        or ``"eager"`` (every attention computed explicitly, as the official code;
        same outputs, slower; kept for benchmarks).
    query_state : str
        Which decoder state becomes token i's vector. ``"token"`` (official): the
        state at token i's own position. A Whisper-initialized decoder was trained
        to predict token i + 1 there, so its cross-attention looks at the *next*
        token's audio. ``"predicting"``: the state one position earlier (the
        prompt's last token for the first word), the one that predicts token i
        and attends to token i's own audio, as Whisper's word timestamps read it.
        Needs the Whisper prompt (``init_from_whisper`` with ``use_whisper_prompt``).
    supervised_heads : str or list of [layer, head]
        Cross-attention heads trained towards each word's time span by the
        attention-supervision loss (:mod:`taste_toolkit.training.attention_supervision`):
        ``"all"`` (every head of every layer, so every layer's cross-attention
        pools the word's own frames), a list, or empty (the paper: no
        supervision). When set, these heads, read at the positions whose states
        become the tokens' vectors, are also the ``attention``/``alignment``
        returned for plots and word timestamps.
    log_width_scale : float
        > 0 appends one feature per token: this factor times the log of the
        supervised heads' effective attention width in seconds (the exponential
        of their entropy; the word's duration when they attend uniformly over
        its span). A mean over frames forgets how many frames it pooled; this
        keeps the word's duration in the vector. 0 = off (the paper).
    readout : str
        What becomes a token's vector. ``"state"`` (the paper): the decoder's
        final state at the token's position, a mix of the text stream and what
        the cross-attention brought in. ``"attended_values"``: the value tap
        averaged with the supervised heads' attention (no text stream, no
        projection), i.e. the word's own frames as the trained attention
        delimits them; needs ``supervised_heads``. On the embedded corpus the
        final state is dominated by the text and its codebooks collapse
        (RESULTS.md, session 6).
    language : str
        Language of the Whisper prompt (toolkit code ``es``/``cmn`` or Whisper's
        ``zh``; ``""`` = English): ``<|lang|>`` after start-of-transcript for a
        multilingual Whisper (the paper's ``[50258, 50259, 50360, 50364]``).
        English-only Whispers (``tiny.en``) have no language token: they serve
        as an acoustic front end for any language.
    task : str
        ``transcribe`` or ``translate``: the prompt's task token (multilingual only).
    """

    def __init__(
        self,
        vocab_size: int,
        key_dim: int,
        value_dim: int,
        d_model: int = 0,
        num_layers: int = 2,
        num_heads: int = 4,
        ffn_dim: int = 0,
        dropout: float = 0.0,
        max_positions: int = 448,
        word_pooling: str = "mean",
        value_identity_init: bool = True,
        init_from_whisper: str = "",
        freeze_embeddings: bool = False,
        use_whisper_prompt: bool = True,
        alignment_heads: list = (),
        attention_implementation: str = "sdpa",
        query_state: str = "token",
        supervised_heads="",
        log_width_scale: float = 0.0,
        readout: str = "state",
        language: str = "",
        task: str = "transcribe",
    ):
        super().__init__()
        if query_state not in QUERY_STATES:
            raise ConfigError(f"query_state must be one of {QUERY_STATES}, got {query_state!r}.")
        self.query_state = query_state
        if word_pooling not in ("mean", "none"):
            raise ConfigError(f"word_pooling must be 'mean' or 'none', got {word_pooling!r}.")
        self.vocab_size, self.key_dim, self.value_dim = vocab_size, key_dim, value_dim
        whisper = None
        if init_from_whisper:
            from taste_toolkit.plugins.aggregator._whisper_query import whisper_decoder_config, whisper_geometry

            whisper = whisper_decoder_config(init_from_whisper)
            d_model, ffn_dim = whisper_geometry(init_from_whisper, whisper, d_model, num_layers, num_heads, ffn_dim,
                                                max_positions)
        self.d_model = d_model or key_dim
        self.word_pooling = word_pooling
        self.max_positions = max_positions
        self.embed_tokens = nn.Embedding(vocab_size, self.d_model)
        self.embed_positions = nn.Embedding(max_positions, self.d_model)
        # With Whisper's decoder, taps of another width are projected to it first (key_in/value_in).
        layer_kdim, layer_vdim = (self.d_model, self.d_model) if whisper is not None else (key_dim, value_dim)
        self.layers = nn.ModuleList(
            AggregatorLayer(self.d_model, num_heads, ffn_dim or 4 * self.d_model, layer_kdim, layer_vdim, dropout,
                            attention_implementation)
            for _ in range(num_layers)
        )
        self.layer_norm = nn.LayerNorm(self.d_model)
        self.register_buffer("prefix_ids", torch.zeros(0, dtype=torch.long))
        self.key_in = nn.Linear(key_dim, self.d_model) if layer_kdim != key_dim else None
        self.value_in = nn.Linear(value_dim, self.d_model) if layer_vdim != value_dim else None
        if self.key_in is not None or self.value_in is not None:
            logger.info("cross_attention: encoder taps of width %d/%d are projected to the Whisper decoder's %d "
                        "(key/value input projections, trained).", key_dim, value_dim, self.d_model)
        self.alignment_heads = [[int(l), int(h)] for l, h in alignment_heads]
        self.whisper_vocabulary = True
        if init_from_whisper:
            from taste_toolkit.plugins.aggregator._whisper_query import same_vocabulary

            self.whisper_vocabulary = same_vocabulary(vocab_size, whisper)
            if not self.whisper_vocabulary:
                logger.warning(
                    "cross_attention: the text vocabulary has %d ids, not the %d of Whisper %r (e.g. a sentencepiece "
                    "tokenizer): the query embedding is random-initialized and trained, and no Whisper prompt is "
                    "used; positions and decoder layers still come from Whisper.", vocab_size, whisper.vocab_size,
                    init_from_whisper)
            self._init_from_whisper(init_from_whisper, num_layers, use_whisper_prompt and self.whisper_vocabulary,
                                    language, task)
            if not self.alignment_heads:
                self.alignment_heads = _whisper_alignment_heads(init_from_whisper, num_layers)
        if query_state == "predicting" and init_from_whisper and not self.prefix_ids.numel():
            raise ConfigError(PREDICTING_NEEDS_PROMPT if self.whisper_vocabulary else
                              "query_state 'predicting' needs the Whisper prompt, which a text vocabulary that is "
                              "not Whisper's cannot give: use query_state: token.")
        bad = [[l, h] for l, h in self.alignment_heads if not (0 <= l < num_layers and 0 <= h < num_heads)]
        if bad:
            raise ConfigError(f"alignment_heads {bad} are outside {num_layers} layers x {num_heads} heads.")
        self.supervised_heads = self._parse_supervised_heads(supervised_heads, num_layers, num_heads)
        if log_width_scale < 0:
            raise ConfigError(f"log_width_scale must be >= 0, got {log_width_scale}.")
        if log_width_scale > 0 and not self.supervised_heads:
            raise ConfigError("log_width_scale reads the supervised heads' attention: set supervised_heads "
                              "(e.g. 'all') as well, or log_width_scale: 0.")
        self.log_width_scale = float(log_width_scale)
        if readout not in READOUTS:
            raise ConfigError(f"readout must be one of {READOUTS}, got {readout!r}.")
        if readout == "attended_values" and not self.supervised_heads:
            raise ConfigError("readout 'attended_values' averages the values with the supervised heads' attention: "
                              "set supervised_heads (e.g. 'all'), or use readout: state.")
        self.readout = readout
        if value_identity_init:
            self._identity_values()
        if freeze_embeddings:
            # A random query embedding (vocabulary not Whisper's) trains; frozen, it would stay noise.
            self.embed_tokens.requires_grad_(not self.whisper_vocabulary)
            self.embed_positions.requires_grad_(False)

    @staticmethod
    def _parse_supervised_heads(heads, num_layers, num_heads):
        if heads in ("", None, (), []):
            return []
        if heads == "all":
            return [[l, h] for l in range(num_layers) for h in range(num_heads)]
        if isinstance(heads, str):
            raise ConfigError(f"supervised_heads must be 'all', a list of [layer, head] or empty, got {heads!r}.")
        out = [[int(l), int(h)] for l, h in heads]
        bad = [[l, h] for l, h in out if not (0 <= l < num_layers and 0 <= h < num_heads)]
        if bad:
            raise ConfigError(f"supervised_heads {bad} are outside {num_layers} layers x {num_heads} heads.")
        return out

    def _identity_values(self):
        for layer in self.layers:
            v = layer.encoder_attn.v_proj
            if v.in_features != v.out_features:
                logger.warning("value_identity_init skipped: value_dim %d != d_model %d", v.in_features, v.out_features)
                return
            with torch.no_grad():
                v.weight.copy_(torch.eye(v.out_features))
                v.bias.zero_()

    def _init_from_whisper(self, source, num_layers, use_prompt=True, language="", task="transcribe"):
        from taste_toolkit.plugins.aggregator._whisper_query import whisper_prompt_ids
        from taste_toolkit.plugins.encoder.whisper import load_whisper_model

        decoder = load_whisper_model(source).decoder
        state = {k: v for k, v in decoder.state_dict().items() if not k.startswith("layers.") or int(k.split(".")[1]) < num_layers}
        if not self.whisper_vocabulary:  # other ids: a random query embedding at Whisper's scale
            table = state.pop("embed_tokens.weight")
            with torch.no_grad():
                nn.init.normal_(self.embed_tokens.weight, float(table.mean()), float(table.std()))
        own = self.state_dict()
        wrong = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
        if wrong:
            raise ConfigError(
                f"init_from_whisper: {source!r} has other shapes for {wrong[:4]} (e.g. {tuple(state[wrong[0]].shape)} "
                f"vs {tuple(own[wrong[0]].shape)}); set d_model/num_heads/ffn_dim/max_positions to the Whisper decoder's."
            )
        missing, unexpected = self.load_state_dict(state, strict=False)
        own_only = {"prefix_ids", "embed_tokens.weight"} if not self.whisper_vocabulary else {"prefix_ids"}
        missing = [m for m in missing if m not in own_only and not m.startswith(("key_in.", "value_in."))]
        if missing or unexpected:
            raise ConfigError(
                f"init_from_whisper: shapes/names do not match {source!r} (missing {missing[:4]}, "
                f"unexpected {unexpected[:4]}); set d_model/num_heads/ffn_dim to the Whisper decoder's."
            )
        if not use_prompt:
            return
        # Whisper's own transcription prompt (sot [, lang, task], notimestamps),
        # taken from the tokenizer rather than hard-coded ids.
        self.prefix_ids = torch.tensor(whisper_prompt_ids(source, language, task), dtype=torch.long)

    def export(self, folder):
        """Options for a standalone checkpoint: the weights (and the Whisper prompt
        ids, a buffer) are in the checkpoint, so nothing is re-read from Whisper."""
        return {"init_from_whisper": "", "alignment_heads": self.alignment_heads}

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The prompt length depends on the Whisper it came from: take the saved one.
        key = prefix + "prefix_ids"
        if key in state_dict:
            self.prefix_ids = torch.zeros_like(state_dict[key])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def output_level(self):
        """``"word"`` with ``word_pooling: mean``, else ``"token"``."""
        return "word" if self.word_pooling == "mean" else "token"

    @property
    def output_dim(self):
        width = self.value_dim if self.readout == "attended_values" else self.d_model
        return width + int(self.log_width_scale > 0)

    def forward(self, tokens, token_lengths, word_ids, encoder_out, need_weights=False):
        """Pool speech per text token (or word).

        Returns
        -------
        AggregatorOutput
            ``embeddings (B, N or W, D)``; ``attention (B, N, T)`` when ``need_weights``.
        """
        b, n = tokens.shape
        p = self.prefix_ids.numel()
        if self.query_state == "predicting" and p == 0:
            raise ConfigError(PREDICTING_NEEDS_PROMPT)
        if p + n > self.max_positions:
            raise InputError(
                f"Transcript has {n} tokens; this aggregator handles at most {self.max_positions - p}. "
                "Split the utterance into shorter segments."
            )
        token_lengths = token_lengths.to(tokens.device).long()
        ids = torch.cat([self.prefix_ids.expand(b, p), tokens], 1)
        x = self.embed_tokens(ids) + self.embed_positions.weight[: p + n]
        # Right padding + causal attention: valid tokens never see padding.
        causal = torch.ones(p + n, p + n, dtype=torch.bool, device=x.device).tril()[None, None]
        keys = encoder_out.keys if self.key_in is None else self.key_in(encoder_out.keys)
        values = encoder_out.values if self.value_in is None else self.value_in(encoder_out.values)
        t = encoder_out.keys.shape[1]
        frame_mask = (torch.arange(t, device=x.device)[None] < encoder_out.lengths[:, None].to(x.device))[:, None, None, :]
        heads = self.alignment_heads or [[len(self.layers) - 1, h] for h in range(self.layers[-1].encoder_attn.num_heads)]
        supervised = self.supervised_heads
        if supervised:  # the trained alignment: plots and timestamps read the supervised heads
            heads = supervised
        explicit = bool(supervised) and (self.training or self.log_width_scale > 0 or self.readout != "state")
        picked = []
        for i, layer in enumerate(self.layers):
            want = (need_weights or explicit) and any(l == i for l, _ in heads)
            x, weights = layer(x, causal, keys, values, frame_mask, want)
            if want:
                picked += [weights[:, h] for l, h in heads if l == i]
        x = self.layer_norm(x)
        # "predicting": token i's vector is the state that predicts it (position p + i - 1).
        rows = slice(p - 1, p - 1 + n) if self.query_state == "predicting" else slice(p, p + n)
        x = x[:, rows]
        attention = alignment = supervised_attention = None
        if picked:
            stacked = torch.stack(picked, 1)  # (B, heads, p + n, T)
            full = stacked.mean(1)
            attention = full[:, p:]
            if supervised:
                # Supervised rows are the ones that become the tokens' vectors.
                alignment = attention = full[:, rows]
                supervised_attention = stacked[:, :, rows] if self.training else None
            else:
                # Whisper's query at position i predicts token i + 1, so the audio of
                # token i is attended from the previous position (the prompt's last
                # token for the first word), as in Whisper's word timestamps.
                alignment = full[:, p - 1 : p - 1 + n] if p > 0 else attention
            if self.readout == "attended_values":
                # The word's own frames, as the trained attention delimits them.
                x = full[:, rows] @ encoder_out.values.to(full.dtype)
            if self.log_width_scale > 0:
                x = torch.cat([x, self._log_width(stacked[:, :, rows], encoder_out.frame_rate)], -1)
        elif self.log_width_scale > 0 or self.readout != "state":
            raise ConfigError("log_width_scale and readout 'attended_values' need the supervised heads' attention, "
                              "which was not computed.")
        if not need_weights:
            attention = alignment = None
        if self.word_pooling == "mean":
            pooled, lengths = word_mean_pool(x, word_ids, token_lengths)
            return AggregatorOutput(pooled, lengths, "word", attention, alignment, supervised_attention)
        x = x * (torch.arange(n, device=x.device)[None] < token_lengths[:, None])[..., None]
        return AggregatorOutput(x, token_lengths, "token", attention, alignment, supervised_attention)

    def _log_width(self, attention, frame_rate):
        """``(B, N, 1)`` scaled log of the effective attention width in seconds.

        ``attention (B, S, N, T)``: the width of one head is ``exp(entropy)`` frames
        (T for a uniform attention over T frames); the heads' log widths are averaged.
        """
        p = attention.float().clamp_min(1e-12)
        entropy = -(p * p.log()).sum(-1).mean(1)  # (B, N) mean log width in frames
        return (self.log_width_scale * (entropy - math.log(frame_rate)))[..., None].to(attention.dtype)
