"""``unit_transformer`` decoder: autoregressive unit prediction from text + TASTE speech.

TASTE's unit decoder (reference-taste.md section 5), written compactly: small
text and speech encoders, fusion, then a causal Transformer over::

    [speaker?, fused(text, speech) (valid part only), task/separator, units]

predicting every next unit and an end-of-speech class (id ``num_units``).
Each utterance is packed on its own and right-padded, so its layout (and its
outputs) never depend on the other utterances of the batch.
"""

import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

from taste_toolkit.errors import ConfigError, InputError
from taste_toolkit.interfaces import DecoderOutput, UnitDecoder
from taste_toolkit.nn.causal_transformer import TransformerStack, sinusoidal_positions
from taste_toolkit.registry import register

logger = logging.getLogger(__name__)

FUSIONS = ("weighted_sum", "concat")


def pack_segments(segments):
    """Concatenate the valid parts of several right-padded segments per utterance.

    Arguments
    ---------
    segments : list of (torch.Tensor, torch.Tensor)
        ``(x (B, T_i, D), lengths (B,))`` pairs, in order.

    Returns
    -------
    torch.Tensor
        ``(B, L, D)`` packed, right-padded with zeros (``L`` = longest total).
    torch.Tensor
        ``(B,)`` total lengths.
    """
    first = segments[0][0]
    batch, dim = first.shape[0], first.shape[-1]
    totals = sum(lengths for _, lengths in segments)
    packed = first.new_zeros(batch, int(totals.max()), dim)
    offset = torch.zeros_like(totals)
    rows = torch.arange(batch, device=first.device)[:, None]
    for x, lengths in segments:
        steps = torch.arange(x.shape[1], device=x.device)[None, :]
        keep = steps < lengths[:, None]
        # Out-of-place index_put keeps the graph differentiable.
        packed = packed.index_put(
            (rows.expand_as(keep)[keep], (offset[:, None] + steps)[keep]), x[keep]
        )
        offset = offset + lengths
    return packed, totals


@register("decoder", "unit_transformer")
class UnitTransformerDecoder(UnitDecoder):
    """Autoregressive unit decoder with text/speech fusion, speaker prefix and KV cache.

    Arguments
    ---------
    vocab_size : int
        Text vocabulary size.
    num_units : int
        Unit vocabulary size V (class V is end of speech).
    speech_dim : int
        Size of the speech vectors; 0 = text only (no speech stream).
    speaker_dim : int
        Size of the speaker vector; 0 = no speaker prefix.
    d_model, num_layers, num_heads, ffn_dim : int
        Size of the autoregressive core (also used by the stream encoders).
    dropout : float
        Dropout probability.
    text_layers, speech_layers : int
        Blocks of the per-stream encoders run before fusion (0 = embeddings only).
    fusion : str
        ``"weighted_sum"``: softmax-weighted sum of the two streams (2 trainable
        scalars, equal at init), needs one speech vector per text token.
        ``"concat"``: speech sequence then text sequence (any speech length).
    max_positions : int
        Longest sequence accepted (sinusoidal positions); longer -> InputError.
    causal_branches : bool
        Causal instead of bidirectional stream encoders (the official CosyVoice
        encoders use chunk size 1, i.e. causal).
    normalize_streams : bool
        Parameter-free LayerNorm of the text and speech streams before fusion.
    unit_dropout : float
        Training only: share of teacher-forced input units replaced by a learned
        mask vector, so the decoder cannot lean on the previous unit alone.

    Example
    -------
    >>> dec = UnitTransformerDecoder(vocab_size=10, num_units=6, speech_dim=4, d_model=16,
    ...                              num_layers=1, num_heads=2, ffn_dim=32)
    >>> out = dec(torch.tensor([[1, 2, 3]]), torch.tensor([3]), torch.randn(1, 3, 4),
    ...           torch.tensor([3]), torch.tensor([[0, 5, 2, 1]]), torch.tensor([4]))
    >>> out.logits.shape, out.targets.tolist()
    (torch.Size([1, 5, 7]), [[0, 5, 2, 1, 6]])
    """

    def __init__(
        self,
        vocab_size: int,
        num_units: int,
        speech_dim: int = 0,
        speaker_dim: int = 0,
        d_model: int = 256,
        num_layers: int = 4,
        num_heads: int = 4,
        ffn_dim: int = 1024,
        dropout: float = 0.1,
        text_layers: int = 1,
        speech_layers: int = 1,
        fusion: str = "weighted_sum",
        max_positions: int = 4096,
        causal_branches: bool = False,
        normalize_streams: bool = True,
        unit_dropout: float = 0.0,
    ):
        super().__init__()
        if fusion not in FUSIONS:
            raise ConfigError(f"fusion must be one of {FUSIONS}, got {fusion!r}.")
        for name, value in [("vocab_size", vocab_size), ("num_units", num_units),
                            ("d_model", d_model), ("max_positions", max_positions)]:
            if value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}.")
        if min(speech_dim, speaker_dim, num_layers, text_layers, speech_layers) < 0:
            raise ConfigError("Dimensions and layer counts of unit_transformer must be >= 0.")
        self._num_units = num_units
        self._speech_dim = speech_dim
        self._speaker_dim = speaker_dim
        self.vocab_size = vocab_size
        self.fusion = fusion
        self.normalize_streams = normalize_streams
        if not 0.0 <= unit_dropout < 1.0:
            raise ConfigError(f"unit_dropout must be in [0, 1), got {unit_dropout}.")
        self.unit_dropout = unit_dropout
        self.max_positions = max_positions
        stack = dict(num_heads=num_heads, ffn_dim=ffn_dim, dropout=dropout)

        self.text_embedding = nn.Embedding(vocab_size, d_model)
        self.text_encoder = TransformerStack(d_model, text_layers, causal=causal_branches, **stack)
        if speech_dim:
            self.speech_proj = nn.Linear(speech_dim, d_model)
            self.speech_encoder = TransformerStack(
                d_model, speech_layers, causal=causal_branches, **stack
            )
            # Softmax over equal scalars = 0.5/0.5 at init ("balance" in the reference).
            self.fusion_logits = nn.Parameter(torch.zeros(2))
        if speaker_dim:
            self.speaker_proj = nn.Linear(speaker_dim, d_model)
        self.task_embedding = nn.Parameter(torch.randn(d_model))
        self.unit_embedding = nn.Embedding(num_units, d_model)
        if unit_dropout > 0:
            # Stands in for teacher-forced input units dropped in training.
            self.unit_mask_embedding = nn.Parameter(torch.zeros(d_model))
        self.core = TransformerStack(d_model, num_layers, causal=True, **stack)
        self.head = nn.Linear(d_model, num_units + 1)
        self.register_buffer(
            "positions", sinusoidal_positions(max_positions, d_model), persistent=False
        )

    @property
    def num_units(self):
        return self._num_units

    @property
    def speech_dim(self):
        return self._speech_dim

    @property
    def speaker_dim(self):
        return self._speaker_dim

    # ------------------------------------------------------------------ inputs

    def _check_length(self, length, what):
        if length > self.max_positions:
            raise InputError(
                f"{what} has {length} positions but max_positions={self.max_positions}. "
                "Split the utterance or build the decoder with a larger max_positions."
            )

    @staticmethod
    def _lengths(lengths, width, device, what):
        lengths = torch.as_tensor(lengths, dtype=torch.long, device=device).reshape(-1)
        if (lengths < 0).any() or (lengths > width).any():
            raise InputError(f"{what} lengths {lengths.tolist()} must lie in [0, {width}].")
        return lengths

    def _encode_prefix(self, tokens, token_lengths, speech, speech_lengths, speaker):
        """Embed ``[speaker?, fused, task]`` per utterance: ``(B, P, D)``, ``(B,)``."""
        device = self.head.weight.device
        tokens = tokens.to(device)
        token_lengths = self._lengths(token_lengths, tokens.shape[1], device, "token")
        if (token_lengths < 1).any():
            raise InputError("Every utterance needs at least one text token (got a length 0).")
        text_valid = torch.arange(tokens.shape[1], device=device)[None] < token_lengths[:, None]
        if ((tokens < 0) | (tokens >= self.vocab_size))[text_valid].any():
            raise InputError(f"Text token ids must lie in [0, {self.vocab_size}).")
        n_max = int(token_lengths.max())  # beyond is padding only
        self._check_length(n_max, "The text")
        tokens, text_valid = tokens[:, :n_max], text_valid[:, :n_max]
        text = self.text_embedding(tokens.clamp(0, self.vocab_size - 1)) + self.positions[:n_max]
        text, _ = self.text_encoder(text, text_valid)
        fused, fused_lengths = text, token_lengths

        if self.speech_dim == 0 and speech is not None:
            raise InputError("This decoder is text-only (speech_dim=0) but speech was given.")
        if self.speech_dim:
            if speech is None or speech.shape[-1] != self.speech_dim:
                got = None if speech is None else tuple(speech.shape)
                raise InputError(f"Expected speech of shape (B, M, {self.speech_dim}), got {got}.")
            speech = speech.to(device)
            speech_lengths = self._lengths(speech_lengths, speech.shape[1], device, "speech")
            if self.fusion == "weighted_sum" and not torch.equal(speech_lengths, token_lengths):
                raise InputError(
                    f"weighted_sum fusion needs one speech vector per text token; got speech "
                    f"lengths {speech_lengths.tolist()} vs token lengths {token_lengths.tolist()}. "
                    "Use fusion='concat' for speech at another rate."
                )
            m_max = int(speech_lengths.max())
            self._check_length(m_max, "The speech stream")
            speech = speech[:, :m_max]
            speech_valid = torch.arange(m_max, device=device)[None] < speech_lengths[:, None]
            speech = self.speech_proj(speech) + self.positions[:m_max]
            speech, _ = self.speech_encoder(speech, speech_valid)
            if self.normalize_streams:
                # Parameter-free LayerNorm of both streams (the reference's `normalize`):
                # the fusion weights then compare like with like, whatever the scale of
                # the speech vectors.
                text = F.layer_norm(text, text.shape[-1:])
                speech = F.layer_norm(speech, speech.shape[-1:])
            if self.fusion == "weighted_sum":
                weights = torch.softmax(self.fusion_logits, dim=0)
                fused = weights[0] * text + weights[1] * speech
            else:
                fused, fused_lengths = pack_segments(
                    [(speech, speech_lengths), (text, token_lengths)]
                )

        batch = tokens.shape[0]
        ones = torch.ones(batch, dtype=torch.long, device=device)
        segments = []
        if self.speaker_dim == 0 and speaker is not None:
            raise InputError("This decoder has no speaker prefix (speaker_dim=0) but got a speaker.")
        if self.speaker_dim:
            if speaker is None or tuple(speaker.shape) != (batch, self.speaker_dim):
                got = None if speaker is None else tuple(speaker.shape)
                raise InputError(f"Expected a speaker of shape ({batch}, {self.speaker_dim}), got {got}.")
            # The reference L2-normalizes x-vectors, so their scale carries no signal.
            spk = self.speaker_proj(F.normalize(speaker.to(device), dim=-1))
            segments.append((spk[:, None], ones))
        segments.append((fused, fused_lengths))
        segments.append((self.task_embedding.expand(batch, 1, -1), ones))
        return pack_segments(segments)

    # ---------------------------------------------------------------- training

    def forward(self, tokens, token_lengths, speech, speech_lengths, units, unit_lengths, speaker=None):
        """Teacher-forced pass.

        Arguments
        ---------
        tokens : torch.Tensor
            ``(B, N)`` text ids; ``token_lengths (B,)``.
        speech : torch.Tensor or None
            ``(B, M, speech_dim)``; ``speech_lengths (B,)``.
        units : torch.Tensor
            ``(B, S)`` target units (any value at padding); ``unit_lengths (B,)``.
        speaker : torch.Tensor, optional
            ``(B, speaker_dim)``.

        Returns
        -------
        DecoderOutput
            ``logits (B, S + 1, V + 1)`` predicting units ``0..S-1`` and EOS,
            ``targets (B, S + 1)`` (-100 at padding), masked mean CE ``loss``.
        """
        prefix, prefix_lengths = self._encode_prefix(tokens, token_lengths, speech, speech_lengths, speaker)
        device = prefix.device
        units = units.to(device)
        unit_lengths = self._lengths(unit_lengths, units.shape[1], device, "unit")
        steps = torch.arange(units.shape[1] + 1, device=device)[None]
        unit_valid = steps[:, :-1] < unit_lengths[:, None]
        if ((units < 0) | (units >= self.num_units))[unit_valid].any():
            raise InputError(f"Unit ids must lie in [0, {self.num_units}).")
        embedded = self.unit_embedding(units.clamp(0, self.num_units - 1))
        if self.training and self.unit_dropout > 0:
            # Teacher forcing lets an AR decoder predict mostly from the previous unit
            # and ignore its conditioning (the reason for Tacotron's prenet dropout);
            # hiding a share of the input units forces it to read text and speech.
            drop = torch.rand(units.shape, device=device) < self.unit_dropout
            embedded = torch.where(drop[..., None], self.unit_mask_embedding.to(embedded.dtype), embedded)
        sequence, total = pack_segments([(prefix, prefix_lengths), (embedded, unit_lengths)])
        self._check_length(sequence.shape[1], "The packed decoder sequence")
        columns = torch.arange(sequence.shape[1], device=device)[None]
        valid = columns < total[:, None]
        # Positions restart at the first unit (as in VALL-E): a unit's position is its
        # time index whatever the transcript length, which makes the time -> word
        # alignment a fixed, learnable relation instead of one shifted per utterance.
        position = columns - torch.where(columns >= prefix_lengths[:, None], prefix_lengths[:, None], 0)
        hidden, _ = self.core(sequence + self.positions[position], valid)

        # The task token predicts unit 0; the last unit predicts EOS.
        index = (prefix_lengths[:, None] - 1 + steps).clamp(max=sequence.shape[1] - 1)
        hidden = hidden.gather(1, index[..., None].expand(-1, -1, hidden.shape[-1]))
        logits = self.head(hidden)
        targets = torch.full_like(index, -100)
        targets[:, :-1] = torch.where(unit_valid, units, targets[:, :-1])
        targets = torch.where(steps == unit_lengths[:, None], self.eos, targets)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
        return DecoderOutput(logits=logits, targets=targets, loss=loss)

    @torch.no_grad()
    def accuracy(self, output, topk=(1, 5)):
        """Teacher-forced top-k accuracy counts over valid targets (EOS included).

        Returns
        -------
        dict
            ``{"top1_correct": int, "top5_correct": int, ..., "total": int}``;
            sum them over batches and divide by ``total``.
        """
        valid = output.targets != -100
        logits, targets = output.logits[valid], output.targets[valid]
        top = logits.topk(min(max(topk), logits.shape[-1]), dim=-1).indices
        counts = {f"top{k}_correct": int((top[:, :k] == targets[:, None]).any(-1).sum()) for k in topk}
        counts["total"] = int(valid.sum())
        return counts

    # --------------------------------------------------------------- inference

    def _pick(self, logits, top_k, temperature, generator):
        """Greedy (``top_k <= 0``) or top-k sampling at ``temperature > 0``.

        The top-k logits are shifted so the best is 0, then scaled in float64, so any
        finite positive temperature gives finite probabilities: a tiny one tends to
        greedy and a huge one (inf once cast to float32) to uniform over the k, and
        banned units (``-inf``) stay banned.
        """
        if top_k <= 0:
            return logits.argmax(-1)
        values, indices = logits.topk(min(top_k, logits.shape[-1]), dim=-1)  # temperature > 0 keeps the order
        shifted = (values - values[..., :1]).double()  # <= 0; 0 for the best unit
        scaled = torch.where(torch.isfinite(shifted), shifted / temperature, shifted)
        choice = torch.multinomial(torch.softmax(scaled, -1).to(values.dtype), 1, generator=generator)
        return indices.gather(-1, choice)[:, 0]

    @torch.no_grad()
    def generate(self, tokens, token_lengths, speech, speech_lengths, speaker=None,
                 max_len_ratio: float = 20.0, min_len_ratio: float = 2.0, top_k: int = 0,
                 temperature: float = 1.0, use_cache: bool = True, generator=None):
        """Generate units until EOS (forbidden before ``min_len_ratio * N``) or ``max_len_ratio * N``.

        ``N`` is the number of text tokens of each utterance. ``top_k=0`` is
        greedy; otherwise top-k sampling at ``temperature`` with ``generator``.
        ``use_cache=False`` recomputes the whole sequence at every step (same
        result, slower; for benchmarks). Runs in eval mode (no dropout).

        Returns
        -------
        units : torch.Tensor
            ``(B, S)`` long, ``-1`` after each utterance's end.
        lengths : torch.Tensor
            ``(B,)`` generated units (EOS excluded).
        """
        if not 0 <= min_len_ratio <= max_len_ratio:
            raise InputError(f"Need 0 <= min_len_ratio ({min_len_ratio}) <= max_len_ratio ({max_len_ratio}).")
        if temperature <= 0:
            raise InputError(f"temperature must be > 0, got {temperature}.")
        was_training = self.training
        self.eval()
        try:
            prefix, prefix_lengths = self._encode_prefix(
                tokens, token_lengths, speech, speech_lengths, speaker
            )
            n_tokens = torch.as_tensor(token_lengths, device=prefix.device).reshape(-1).float()
            max_len = torch.floor(max_len_ratio * n_tokens).long()
            min_len = torch.ceil(min_len_ratio * n_tokens).long()
            self._check_length(int((prefix_lengths + max_len).max()), "Prefix + max_len_ratio x tokens")
            return self._generate(prefix, prefix_lengths, min_len, max_len, top_k, temperature,
                                  use_cache, generator)
        finally:
            self.train(was_training)

    def _generate(self, prefix, prefix_lengths, min_len, max_len, top_k, temperature, use_cache, generator):
        batch, width, _ = prefix.shape
        device = prefix.device
        # Left-align prefixes so all utterances append at the same column; the
        # padding is masked out of attention and positions restart at each start.
        source = torch.arange(width, device=device)[None] - (width - prefix_lengths)[:, None]
        valid = source >= 0
        gathered = prefix.gather(1, source.clamp(min=0)[..., None].expand_as(prefix))
        sequence = gathered * valid[..., None] + self.positions[source.clamp(min=0)]
        hidden, cache = self.core(sequence, valid, use_cache=use_cache)
        last = hidden[:, -1]

        steps = int(max_len.max())
        if use_cache:
            cache = cache.reserve(width + steps)  # steps write in place instead of copying the cache
        units = torch.full((batch, steps), -1, dtype=torch.long, device=device)
        lengths = torch.zeros(batch, dtype=torch.long, device=device)
        # Rows still generating (indices into the batch): a row leaves the batch when it
        # stops, so the remaining steps run only the rows that need them. Each row's
        # computation never depends on the others, so the outputs stay the same.
        active = torch.arange(batch, device=device)
        for step in range(steps):
            logits = self.head(last)
            logits[:, self.eos] = logits[:, self.eos].masked_fill(step < min_len[active], -math.inf)
            choice = self._pick(logits, top_k, temperature, generator)
            stop = (choice == self.eos) | (step >= max_len[active])
            emit = ~stop
            units[active[emit], step] = choice[emit]
            lengths[active[emit]] += 1
            if bool(stop.all()):
                break
            if bool(stop.any()):
                active, choice, keep = active[emit], choice[emit], emit
                if use_cache:
                    cache = cache.select(keep)
                else:
                    sequence, valid = sequence[keep], valid[keep]
            new = self.unit_embedding(choice.clamp(max=self.num_units - 1)) + self.positions[step]
            step_valid = torch.ones(active.shape[0], 1, dtype=torch.bool, device=device)
            if use_cache:
                hidden, cache = self.core(new[:, None], step_valid, cache=cache)
            else:
                sequence = torch.cat([sequence, new[:, None]], dim=1)
                valid = torch.cat([valid, step_valid], dim=1)
                hidden, _ = self.core(sequence, valid)
            last = hidden[:, -1]
        hit_max = (lengths >= max_len) & (max_len > 0)
        if bool(hit_max.any()):
            logger.warning(
                "%d utterance(s) stopped at the maximum length (max_len_ratio x tokens).",
                int(hit_max.sum()),
            )
        return units[:, : int(lengths.max()) if batch else 0], lengths
