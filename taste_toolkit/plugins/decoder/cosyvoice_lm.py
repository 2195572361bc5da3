"""``cosyvoice_lm`` decoder: the unit decoder of the official TASTE release.

TASTE's speech decoder (``TasteSpeechDecoder``, a CosyVoice-300M text-to-unit LM
conditioned on TASTE tokens), written for the toolkit's :class:`UnitDecoder`
contract. Defaults are the release's sizes (``MediaTek-Research/Llama-1B-TASTE-V0``)::

    text   = text_encoder_affine_layer(Conformer_rel(text_embedding(ids)))          (B, N, D)
    audio  = audio_token_encoder_affine_layer(Conformer_rel(audio_embed_affine_layer(speech)))
    fused  = softmax(w)[0] * audio + softmax(w)[1] * text                          (normalize=False)
    spk    = spk_embed_affine_layer(normalize(speaker))
    input  = [sos_eos, spk, fused[:N], task_id, speech_embedding(units[:S])]     per utterance
    logits = llm_decoder(Transformer_rel(input))                                   V units + EOS

All three stacks use causal (``static_chunk_size=1``) relative-position attention,
as the release. The position of ``task_id`` predicts the first unit and the last
unit predicts EOS (class ``num_units``). Sub-module names are the release's, so its
``speech_decoder.*`` tensors load with the prefix stripped
(:func:`taste_toolkit.official.speech_decoder.build_speech_decoder`).
"""

import inspect
import logging

import torch
import torch.nn.functional as F
from torch import nn

from taste_toolkit.errors import ConfigError, InputError
from taste_toolkit.interfaces import DecoderOutput, UnitDecoder
from taste_toolkit.nn.label_smoothing import label_smoothing_loss
from taste_toolkit.nn.packing import pack_rows
from taste_toolkit.nn.rel_pos_encoder import RelPosEncoder
from taste_toolkit.nn.top_k_sampling import pick_top_k
from taste_toolkit.nn.weighted_sum import FUSION_INITS, WeightedSumFusion
from taste_toolkit.registry import register

logger = logging.getLogger(__name__)

LENGTH_REFERENCES = ("prefix", "tokens")


@register("decoder", "cosyvoice_lm")
class CosyVoiceLMDecoder(UnitDecoder):
    """CosyVoice-style unit LM of the TASTE release (text + TASTE tokens + speaker -> S3 units).

    Arguments
    ---------
    vocab_size : int
        Text vocabulary (Whisper ids: 51866).
    num_units : int
        Unit vocabulary V (S3: 4096); class V is end of speech.
    speech_dim : int
        Size of the TASTE token vectors (1280); 0 = text only.
    speaker_dim : int
        Speaker vector size (CAM++: 192); 0 = no speaker position.
    text_embed_dim : int
        ``text_embedding`` width, input of both encoders (512).
    d_model : int
        Encoders' width and LM input width (``llm_input_size``, 1024).
    lm_dim : int
        LM width (``llm_output_size``, 1024).
    text_layers, text_heads, text_ffn_dim : int
        Text Conformer (3 blocks, 8 heads, 2048).
    text_input_layer : str
        ``"linear"`` or ``"linear_legacy"``.
    text_normalize_before : bool
        Pre-LN text encoder.
    text_static_chunk_size : int
        Text encoder attention: 1 = causal (release), 0 = full, c = chunks.
    text_dropout, text_positional_dropout, text_attention_dropout : float
        Text encoder dropouts.
    speech_layers, speech_heads, speech_ffn_dim : int
        Audio-token Conformer (hard-coded in the release: 2 blocks, 8 heads, 2048).
    speech_dropout, speech_positional_dropout, speech_attention_dropout : float
        Audio-token encoder dropouts (release: 0.1, 0.1, 0).
    speech_affine : bool
        ``audio_embed_affine_layer`` (speech_dim -> text_embed_dim) before the
        encoder; without it ``speech_dim`` must equal ``text_embed_dim``.
    lm_layers, lm_heads, lm_ffn_dim : int
        Transformer LM (7 blocks, 8 heads, 2048), causal.
    lm_input_layer : str
        ``"linear_legacy"`` (release) or ``"linear"``.
    lm_dropout, lm_positional_dropout, lm_attention_dropout : float
        LM dropouts.
    fusion_normalize : bool
        LayerNorm both streams before the weighted sum (release: False).
    fusion_init : str
        ``"balance"`` (weights [1, 1]) or ``"zero_audio"`` ([-2, 2]); for new training.
    fusion_trainable : bool
        Learn the fusion weights.
    lsm_weight : float
        Label smoothing of the loss (release: 0).
    length_normalized_loss : bool
        Divide the summed loss by the number of targets (True) or the batch size.
    """

    def __init__(
        self, vocab_size: int = 51866, num_units: int = 4096, speech_dim: int = 1280, speaker_dim: int = 192,
        text_embed_dim: int = 512, d_model: int = 1024, lm_dim: int = 1024,
        text_layers: int = 3, text_heads: int = 8, text_ffn_dim: int = 2048, text_input_layer: str = "linear",
        text_normalize_before: bool = True, text_static_chunk_size: int = 1, text_dropout: float = 0.1,
        text_positional_dropout: float = 0.1, text_attention_dropout: float = 0.0,
        speech_layers: int = 2, speech_heads: int = 8, speech_ffn_dim: int = 2048, speech_dropout: float = 0.1,
        speech_positional_dropout: float = 0.1, speech_attention_dropout: float = 0.0, speech_affine: bool = True,
        lm_layers: int = 7, lm_heads: int = 8, lm_ffn_dim: int = 2048, lm_input_layer: str = "linear_legacy",
        lm_dropout: float = 0.1, lm_positional_dropout: float = 0.1, lm_attention_dropout: float = 0.0,
        fusion_normalize: bool = False, fusion_init: str = "balance", fusion_trainable: bool = True,
        lsm_weight: float = 0.0, length_normalized_loss: bool = True,
    ):
        super().__init__()
        for name, value in [("vocab_size", vocab_size), ("num_units", num_units), ("text_embed_dim", text_embed_dim),
                            ("d_model", d_model), ("lm_dim", lm_dim)]:
            if value < 1:
                raise ConfigError(f"cosyvoice_lm option {name} must be >= 1, got {value}.")
        if speech_dim < 0 or speaker_dim < 0:
            raise ConfigError("cosyvoice_lm speech_dim and speaker_dim must be >= 0 (0 = not used).")
        if fusion_init not in FUSION_INITS:
            raise ConfigError(f"cosyvoice_lm fusion_init must be one of {sorted(FUSION_INITS)}, got {fusion_init!r}.")
        if not 0.0 <= lsm_weight < 1.0:
            raise ConfigError(f"cosyvoice_lm lsm_weight must be in [0, 1), got {lsm_weight}.")
        if speech_dim and not speech_affine and speech_dim != text_embed_dim:
            raise ConfigError(f"Without speech_affine, speech_dim ({speech_dim}) must equal text_embed_dim "
                              f"({text_embed_dim}); set speech_affine: true.")
        self.vocab_size, self._num_units = vocab_size, num_units
        self._speech_dim, self._speaker_dim = speech_dim, speaker_dim
        self.lsm_weight, self.length_normalized_loss = lsm_weight, length_normalized_loss

        self.text_embedding = nn.Embedding(vocab_size, text_embed_dim)
        self.text_encoder = RelPosEncoder(
            text_embed_dim, d_model, text_layers, text_heads, text_ffn_dim, text_dropout, text_positional_dropout,
            text_attention_dropout, text_input_layer, text_normalize_before, text_static_chunk_size, "conformer")
        self.text_encoder_affine_layer = nn.Linear(d_model, d_model)
        self.llm_embedding = nn.Embedding(2, d_model)  # 0 = sos/eos, 1 = task id
        self.llm = RelPosEncoder(
            d_model, lm_dim, lm_layers, lm_heads, lm_ffn_dim, lm_dropout, lm_positional_dropout,
            lm_attention_dropout, lm_input_layer, True, 1, "transformer")
        self.llm_decoder = nn.Linear(lm_dim, num_units + 1)
        self.speech_embedding = nn.Embedding(num_units, d_model)
        if speaker_dim:
            self.spk_embed_affine_layer = nn.Linear(speaker_dim, d_model)
        if speech_dim:
            if speech_affine:
                self.audio_embed_affine_layer = nn.Linear(speech_dim, text_embed_dim)
            self.audio_token_encoder = RelPosEncoder(
                text_embed_dim, d_model, speech_layers, speech_heads, speech_ffn_dim, speech_dropout,
                speech_positional_dropout, speech_attention_dropout, "linear", True, 1, "conformer")
            self.audio_token_encoder_affine_layer = nn.Linear(d_model, d_model)
            self.fuse_encoded_audio_text_module = WeightedSumFusion(fusion_normalize, fusion_init, fusion_trainable)

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

    @staticmethod
    def _lengths(lengths, width, device, what):
        lengths = torch.as_tensor(lengths, device=device).long().reshape(-1)
        if (lengths < 0).any() or (lengths > width).any():
            raise InputError(f"{what} lengths {lengths.tolist()} must lie in [0, {width}].")
        return lengths

    def condition(self, tokens, token_lengths, speech, speech_lengths, speaker=None):
        """Encode text, speech and speaker into the LM prefix ``[sos, spk, fused, task]``.

        Arguments
        ---------
        tokens : torch.Tensor
            ``(B, N)`` text ids; ``token_lengths (B,)`` absolute, >= 1.
        speech : torch.Tensor or None
            ``(B, M >= N, speech_dim)`` one TASTE vector per text token; ``speech_lengths (B,)``
            must equal ``token_lengths``.
        speaker : torch.Tensor, optional
            ``(B, speaker_dim)`` (L2-normalised here).

        Returns
        -------
        dict
            ``text (B, N, D)`` after ``text_encoder_affine_layer``; ``audio (B, N, D)``
            after ``audio_token_encoder_affine_layer`` (or None); ``fused (B, N, D)``;
            ``prefix (B, P, D)`` right-padded with zeros; ``prefix_lengths (B,)``
            (= N + 2 + speaker); ``token_lengths (B,)``.
        """
        device = self.llm_decoder.weight.device
        if tokens.dim() != 2:
            raise InputError(f"tokens must be (B, N), got {tuple(tokens.shape)}.")
        tokens = tokens.to(device)
        token_lengths = self._lengths(token_lengths, tokens.shape[1], device, "Token")
        if (token_lengths < 1).any():
            raise InputError("Every utterance needs at least one text token (got a length 0).")
        n_max = int(token_lengths.max())
        tokens = tokens[:, :n_max]
        valid = torch.arange(n_max, device=device)[None] < token_lengths[:, None]
        if ((tokens < 0) | (tokens >= self.vocab_size))[valid].any():
            raise InputError(f"Text token ids must lie in [0, {self.vocab_size}).")
        text, _ = self.text_encoder(self.text_embedding(tokens.clamp(0, self.vocab_size - 1)), valid)
        text = self.text_encoder_affine_layer(text)
        audio, fused = None, text
        if self.speech_dim == 0 and speech is not None:
            raise InputError("This decoder is text-only (speech_dim=0) but speech was given.")
        if self.speech_dim:
            if speech is None or speech.dim() != 3 or speech.shape[-1] != self.speech_dim:
                got = None if speech is None else tuple(speech.shape)
                raise InputError(f"Expected speech of shape (B, N, {self.speech_dim}), got {got}.")
            speech_lengths = self._lengths(speech_lengths, speech.shape[1], device, "Speech")
            if not torch.equal(speech_lengths, token_lengths):
                raise InputError(f"cosyvoice_lm needs one speech vector per text token; got speech lengths "
                                 f"{speech_lengths.tolist()} vs token lengths {token_lengths.tolist()}.")
            speech = speech[:, :n_max].to(device=device, dtype=text.dtype)
            if hasattr(self, "audio_embed_affine_layer"):
                speech = self.audio_embed_affine_layer(speech)
            audio, _ = self.audio_token_encoder(speech, valid)
            audio = self.audio_token_encoder_affine_layer(audio)
            fused = self.fuse_encoded_audio_text_module(audio, text)

        batch = tokens.shape[0]
        ones = torch.ones(batch, dtype=torch.long, device=device)
        parts = [(self.llm_embedding.weight[0].expand(batch, 1, -1), ones)]
        if self.speaker_dim:
            if speaker is None or tuple(speaker.shape) != (batch, self.speaker_dim):
                got = None if speaker is None else tuple(speaker.shape)
                raise InputError(f"Expected a speaker vector of shape ({batch}, {self.speaker_dim}), got {got}.")
            spk = self.spk_embed_affine_layer(F.normalize(speaker.to(device=device, dtype=text.dtype), dim=1))
            parts.append((spk[:, None], ones))
        elif speaker is not None:
            raise InputError("This decoder has no speaker position (speaker_dim=0) but got a speaker.")
        parts += [(fused, token_lengths), (self.llm_embedding.weight[1].expand(batch, 1, -1), ones)]
        prefix_lengths = sum(lengths for _, lengths in parts)
        return dict(text=text, audio=audio, fused=fused, prefix=pack_rows(parts, prefix_lengths),
                    prefix_lengths=prefix_lengths, token_lengths=token_lengths)

    # ---------------------------------------------------------------- training

    def teacher_forced(self, tokens, token_lengths, speech, speech_lengths, units, unit_lengths, speaker=None):
        """The release's teacher-forced pass over the whole LM sequence.

        Arguments are those of :meth:`forward`.

        Returns
        -------
        dict
            :meth:`condition`'s entries plus ``lm_input (B, L, D)`` (right-padded with
            zeros), ``lm_lengths (B,)`` = prefix + S, ``lm_output (B, L, lm_dim)``,
            ``logits (B, L, V + 1)`` (position t predicts ``labels[t]``) and ``labels
            (B, L)``: -100 on the prefix but its last position, then the units and EOS.
        """
        cond = self.condition(tokens, token_lengths, speech, speech_lengths, speaker)
        prefix, prefix_lengths = cond["prefix"], cond["prefix_lengths"]
        device = prefix.device
        units = units.to(device)
        unit_lengths = self._lengths(unit_lengths, units.shape[1], device, "Unit")
        s_max = int(unit_lengths.max()) if units.shape[0] else 0
        units = units[:, :s_max]
        unit_valid = torch.arange(s_max, device=device)[None] < unit_lengths[:, None]
        if ((units < 0) | (units >= self.num_units))[unit_valid].any():
            raise InputError(f"Unit ids must lie in [0, {self.num_units}).")
        embedded = self.speech_embedding(units.clamp(0, self.num_units - 1))
        lm_lengths = prefix_lengths + unit_lengths
        lm_input = pack_rows([(prefix, prefix_lengths), (embedded, unit_lengths)], lm_lengths)
        columns = torch.arange(lm_input.shape[1], device=device)[None]
        lm_output, _ = self.llm(lm_input, columns < lm_lengths[:, None])
        logits = self.llm_decoder(lm_output)
        # Target of position t is element t + 1; the last valid position predicts EOS.
        first = prefix_lengths[:, None] - 1
        unit_index = (columns - first).clamp(0, max(s_max - 1, 0))
        labels = units.gather(1, unit_index) if s_max else torch.zeros_like(columns.expand(units.shape[0], -1))
        labels = torch.where(columns == lm_lengths[:, None] - 1, self.eos, labels)
        labels = torch.where((columns >= first) & (columns < lm_lengths[:, None]), labels, -100)
        return dict(cond, lm_input=lm_input, lm_lengths=lm_lengths, lm_output=lm_output, logits=logits,
                    labels=labels)

    def criterion(self, logits, labels):
        """The release's ``LabelSmoothingLoss`` (KL to the smoothed one-hot), ignoring label -100.

        ``logits (B, L, C)``, ``labels (B, L)``. Summed over targets, divided by their
        number (``length_normalized_loss``) or by ``B``. With ``lsm_weight = 0`` this is
        the mean cross-entropy over valid targets.
        """
        return label_smoothing_loss(logits, labels, self.lsm_weight, self.length_normalized_loss)

    def forward(self, tokens, token_lengths, speech, speech_lengths, units, unit_lengths, speaker=None):
        """Teacher-forced pass in the toolkit's layout.

        Arguments
        ---------
        tokens : torch.Tensor
            ``(B, N)`` text ids; ``token_lengths (B,)``.
        speech : torch.Tensor or None
            ``(B, N, speech_dim)`` one vector per token; ``speech_lengths (B,)``.
        units : torch.Tensor
            ``(B, S)`` target units; ``unit_lengths (B,)``.
        speaker : torch.Tensor, optional
            ``(B, speaker_dim)``.

        Returns
        -------
        DecoderOutput
            ``logits (B, S + 1, V + 1)`` at the task position and each unit,
            ``targets (B, S + 1)`` (units then EOS, -100 at padding) and the release's loss.
        """
        out = self.teacher_forced(tokens, token_lengths, speech, speech_lengths, units, unit_lengths, speaker)
        logits, labels = out["logits"], out["labels"]
        steps = torch.arange(int((out["lm_lengths"] - out["prefix_lengths"]).max()) + 1, device=logits.device)
        index = (out["prefix_lengths"][:, None] - 1 + steps[None]).clamp(max=logits.shape[1] - 1)
        logits = logits.gather(1, index[..., None].expand(-1, -1, logits.shape[-1]))
        valid = index < out["lm_lengths"][:, None]
        targets = torch.where(valid, labels.gather(1, index), -100)
        return DecoderOutput(logits=logits, targets=targets, loss=self.criterion(logits, targets))

    @torch.no_grad()
    def accuracy(self, output, topk=(1, 5)):
        """Teacher-forced top-k correct counts over valid targets (EOS included), and ``total``."""
        valid = output.targets != -100
        logits, targets = output.logits[valid], output.targets[valid]
        top = logits.topk(min(max(topk), logits.shape[-1]), dim=-1).indices
        counts = {f"top{k}_correct": int((top[:, :k] == targets[:, None]).any(-1).sum()) for k in topk}
        counts["total"] = int(valid.sum())
        return counts

    # --------------------------------------------------------------- inference

    def generation_cap(self, token_lengths, **generate_options):
        """``floor(max_len_ratio x R)`` units, ``R`` as :meth:`generate` counts it."""
        params = inspect.signature(self.generate).parameters
        ratio = float(generate_options.get("max_len_ratio", params["max_len_ratio"].default))
        reference = generate_options.get("length_reference", params["length_reference"].default)
        token_lengths = torch.as_tensor(token_lengths).long()
        if reference == "prefix":  # sos, [speaker], the fused tokens, task id (see condition())
            token_lengths = token_lengths + 2 + int(bool(self.speaker_dim))
        return torch.floor(ratio * token_lengths.double()).long()

    @torch.no_grad()
    def generate(self, tokens, token_lengths, speech, speech_lengths, speaker=None, top_k: int = 25,
                 temperature: float = 1.0, min_len_ratio: float = 2.0, max_len_ratio: float = 20.0,
                 length_reference: str = "prefix", use_cache: bool = True, generator=None):
        """Sample units until EOS, as the release's ``_voice_decoder_generate`` (batched).

        Arguments
        ---------
        tokens, token_lengths, speech, speech_lengths, speaker
            As in :meth:`forward`.
        top_k : int
            Sample among the ``top_k`` best classes (release: 25); ``<= 1`` is greedy.
            Before the minimum length EOS is excluded from them.
        temperature : float
            Softmax temperature (> 0; the release uses 1).
        min_len_ratio, max_len_ratio : float
            EOS is forbidden for the first ``int(min_len_ratio * R)`` units and at most
            ``int(max_len_ratio * R)`` are generated, ``R`` the reference length.
        length_reference : str
            ``"prefix"`` (release): ``R`` = LM prefix length (tokens + sos, speaker,
            task); ``"tokens"``: ``R`` = text tokens.
        use_cache : bool
            KV cache (same result as recomputing the sequence at each step).
        generator : torch.Generator, optional
            Random source of the sampling.

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
        if length_reference not in LENGTH_REFERENCES:
            raise InputError(f"length_reference must be one of {LENGTH_REFERENCES}, got {length_reference!r}.")
        was_training = self.training
        self.eval()
        try:
            cond = self.condition(tokens, token_lengths, speech, speech_lengths, speaker)
            reference = cond["prefix_lengths" if length_reference == "prefix" else "token_lengths"].double()
            min_len = torch.floor(min_len_ratio * reference).long()
            max_len = torch.floor(max_len_ratio * reference).long()
            return self._generate(cond["prefix"], cond["prefix_lengths"], min_len, max_len, top_k, temperature,
                                  use_cache, generator)
        finally:
            self.train(was_training)

    def _generate(self, prefix, prefix_lengths, min_len, max_len, top_k, temperature, use_cache, generator):
        batch, width, _ = prefix.shape
        device = prefix.device
        # Left-align the prefixes so every utterance appends at the same column; relative
        # positions only see column differences, so the padding changes nothing.
        source = torch.arange(width, device=device)[None] - (width - prefix_lengths)[:, None]
        valid = source >= 0
        sequence = prefix.gather(1, source.clamp(min=0)[..., None].expand_as(prefix)) * valid[..., None]
        hidden, cache = self.llm(sequence, valid, use_cache=use_cache)
        last = hidden[:, -1]
        steps = int(max_len.max()) if batch else 0
        units = torch.full((batch, steps), -1, dtype=torch.long, device=device)
        lengths = torch.zeros(batch, dtype=torch.long, device=device)
        finished = torch.zeros(batch, dtype=torch.bool, device=device)
        step_valid = torch.ones(batch, 1, dtype=torch.bool, device=device)
        for step in range(steps):
            choice = pick_top_k(self.llm_decoder(last), top_k, self.eos, step < min_len, temperature, generator)
            stop = (choice == self.eos) | (step >= max_len)
            emit = ~finished & ~stop
            units[emit, step] = choice[emit]
            lengths += emit.long()
            finished |= stop
            if bool(finished.all()):
                break
            new = self.speech_embedding(choice.clamp(max=self.num_units - 1))[:, None]
            if use_cache:
                hidden, cache = self.llm(new, step_valid, cache=cache)
            else:
                sequence = torch.cat([sequence, new], dim=1)
                valid = torch.cat([valid, step_valid], dim=1)
                hidden, _ = self.llm(sequence, valid)
            last = hidden[:, -1]
        hit_max = (lengths >= max_len) & (max_len > 0)
        if bool(hit_max.any()):
            logger.warning("%d utterance(s) stopped at the maximum length (max_len_ratio).", int(hit_max.sum()))
        return units[:, : int(lengths.max()) if batch else 0], lengths
