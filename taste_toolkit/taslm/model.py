"""TASLM model: frozen causal LM + LoRA, speech/text input fusion, text and TASTE heads.

At every position the LM input is ``fusion(text embedding, speech vector)``; the
speech vector is the code sum of the TASTE token laid there by the bridge (or a
learned pad). The LM's last hidden state feeds its own text head (next LLM token)
and the ``lm_head`` plugin (next TASTE token at word starts).

Loss = ``text_weight * CE_text (+ text_kl_weight * KL(base || adapted))
+ taste_weight * head loss``. The optional KL regularizer compares, at the
positions that have a text label, the adapted model with the frozen base model
(adapters disabled, text-only input), as in the original TASLM, without its
inverted mask.

Options matching the official release (:mod:`taste_toolkit.official`):
``speech_input="project_out"`` feeds the RVQ's output vectors (``project_out`` of
the code sum, official ``get_output_from_indices``) instead of the normalized code
sum, and fuses in float32; ``bos_input="text"`` feeds the plain LM embedding of
the first (BOS/sos) position, unfused; the bridge's ``end="pad"`` layout has no EOS
input (an EOS chosen at generation enters as the learned text pad).
"""

import json
import os
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from speechbrain.utils.checkpoints import mark_as_loader, mark_as_saver, register_checkpoint_hooks
from torch import nn

from taste_toolkit.errors import ConfigError, MissingResourceError
from taste_toolkit.taslm.backbone import add_lora, load_causal_lm, parameter_counts
from taste_toolkit.taslm.bridge import IGNORE, WordBridge
from taste_toolkit.taslm.codebook import SpeechCodebook
from taste_toolkit.utils import lengths_to_mask

CONFIG_FILE = "taslm_config.json"
WEIGHTS_FILE = "taslm_trainable.safetensors"


@dataclass
class TaslmOutput:
    """Loss of a batch and the counts behind its metrics."""

    loss: torch.Tensor
    text_loss: torch.Tensor
    taste_loss: torch.Tensor
    kl: torch.Tensor
    stats: dict = field(default_factory=dict)


class TaslmModel(nn.Module):
    """Spoken LM over text tokens and word-level TASTE tokens.

    Arguments
    ---------
    backbone : transformers causal LM (optionally a peft ``PeftModel``)
    bridge : WordBridge
    codebook : SpeechCodebook
        Frozen RVQ codebooks of the TASTE tokenizer.
    fusion : Fusion plugin
        Built with ``text_dim`` = LM hidden size and ``speech_dim`` = ``codebook.dim``.
    head : LMHead plugin (``taste_token`` or ``taste_embedding``)
    text_weight, taste_weight, text_kl_weight : float
        Loss weights.
    config : dict
        Plain-data recipe of this model (written by :meth:`save_pretrained`).
    speech_input : str
        ``"code_sum"`` (the code sum in codebook-scale units, ``(d,)``) or
        ``"project_out"`` (the RVQ output ``(D,)``, official release).
    bos_input : str
        ``"fused"`` (BOS fused with the speech pad like every position) or ``"text"``
        (the plain LM embedding of BOS, official release).
    """

    SPEECH_INPUTS = ("code_sum", "project_out")
    BOS_INPUTS = ("fused", "text")

    def __init__(self, backbone, bridge, codebook, fusion, head, text_weight=1.0, taste_weight=1.0,
                 text_kl_weight=0.0, config=None, speech_input="code_sum", bos_input="fused"):
        super().__init__()
        if speech_input not in self.SPEECH_INPUTS or bos_input not in self.BOS_INPUTS:
            raise ConfigError(f"speech_input must be one of {self.SPEECH_INPUTS} and bos_input one of "
                              f"{self.BOS_INPUTS}; got {speech_input!r}, {bos_input!r}.")
        if speech_input == "project_out" and not codebook.has_project_out:
            raise ConfigError("speech_input 'project_out' needs codebooks with project_out weights (a tokenizer "
                              "whose RVQ projects its code space, e.g. one imported by taste import-official).")
        self.speech_input, self.bos_input = speech_input, bos_input
        self.backbone, self.bridge, self.codebook, self.fusion, self.head = backbone, bridge, codebook, fusion, head
        self.text_weight, self.taste_weight, self.text_kl_weight = text_weight, taste_weight, text_kl_weight
        self.config = dict(config or {})
        hidden = backbone.get_input_embeddings().embedding_dim
        self._check(hidden)
        self.text_pad = nn.Parameter(torch.zeros(hidden))
        self.speech_pad = nn.Parameter(torch.zeros(self.speech_dim))

    @property
    def speech_dim(self):
        """Size of the speech vector entering the fusion (``d``, or ``D`` with ``project_out``)."""
        return self.codebook.output_dim if self.speech_input == "project_out" else self.codebook.dim

    def _check(self, hidden):
        cb, head = self.codebook, self.head
        geometry = (getattr(head, "num_quantizers", None), getattr(head, "codebook_size", None))
        if geometry != (cb.num_quantizers, cb.codebook_size):
            raise ConfigError(
                f"The tokenizer's RVQ has {cb.num_quantizers} layers x {cb.codebook_size} codes but lm_head "
                f"{type(head).__name__} expects {geometry[0]} x {geometry[1]}: set num_quantizers / codebook_size "
                "to the tokenizer's (taste info --model DIR shows them)."
            )
        emb = getattr(head, "embedding_dim", None)
        if emb is not None and emb != cb.dim:
            raise ConfigError(f"lm_head embedding_dim={emb} but the tokenizer's RVQ code space has {cb.dim} dimensions.")
        if head.input_dim != hidden:
            raise ConfigError(f"lm_head input_dim={head.input_dim} but the LM hidden size is {hidden}.")
        speech = self.speech_dim
        if (getattr(self.fusion, "text_dim", hidden), getattr(self.fusion, "speech_dim", speech)) != (hidden, speech):
            raise ConfigError(f"fusion dims ({self.fusion.text_dim}, {self.fusion.speech_dim}) do not match the LM "
                              f"hidden size {hidden} and the speech dim {speech}.")
        if self.bridge.num_quantizers != cb.num_quantizers:
            raise ConfigError("bridge and codebook disagree on the number of RVQ layers.")

    # ------------------------------------------------------------------ pieces
    @property
    def has_adapters(self):
        return hasattr(self.backbone, "disable_adapter")

    def parameter_counts(self):
        """Trainable / total parameters (LoRA + heads + fusion + pads vs everything)."""
        return parameter_counts(self)

    def embed(self, input_ids, is_tail, audio_codes):
        """Fused LM inputs ``(B, N, H)`` from ids ``(B, N)``, tail flags and codes ``(B, N, R)``."""
        raw = self.backbone.get_input_embeddings()(input_ids)
        if self.bridge.end == "pad":  # no EOS input in this layout: an EOS enters as the text pad
            is_tail = is_tail | (input_ids == self.bridge.eos_id)
        text = torch.where(is_tail[..., None], self.text_pad.to(raw.dtype), raw)
        if self.speech_input == "project_out":
            speech = self.codebook.output(audio_codes)
            text = text.float()  # the release fuses in float32, then casts to the LM's dtype
        else:
            speech = self.codebook.embed(audio_codes, normalized=True)
        speech = torch.where(audio_codes[..., :1] < 0, self.speech_pad, speech)
        fused = self.fusion(text, speech.to(text.dtype)).to(raw.dtype)
        if self.bos_input == "text":
            fused = torch.where((input_ids == self.bridge.bos_id)[..., None], raw, fused)
        return fused

    def run(self, embeds, attention_mask=None, past_key_values=None, use_cache=False):
        """Run the LM on input embeddings: ``(last hidden (B, N, H), text logits (B, N, V), cache)``."""
        out = self.backbone(inputs_embeds=embeds, attention_mask=attention_mask, past_key_values=past_key_values,
                            use_cache=use_cache, output_hidden_states=True)
        return out.hidden_states[-1], out.logits, out.past_key_values if use_cache else None

    # ------------------------------------------------------------------ training
    def forward(self, batch):
        """Losses of a :class:`~taste_toolkit.taslm.bridge.BridgeBatch` (see the module doc)."""
        mask = lengths_to_mask(batch.lengths, batch.input_ids.shape[1])
        embeds = self.embed(batch.input_ids, batch.is_tail, batch.audio_codes)
        hidden, logits, _ = self.run(embeds, attention_mask=mask.long())
        labels = batch.text_labels
        n_text = int((labels != IGNORE).sum())
        nll = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE, reduction="sum")
        text_loss = nll / max(n_text, 1)
        kl = text_loss.new_zeros(())
        if self.text_kl_weight > 0 and self.has_adapters and n_text:
            kl = self._kl_to_base(batch, mask, logits)
        head_out = self.head(hidden)
        taste_loss, stats = self.head.loss(head_out, batch.taste_labels, self.codebook)
        loss = self.text_weight * (text_loss + self.text_kl_weight * kl) + self.taste_weight * taste_loss
        stats = {**{f"taste_{k}": v for k, v in stats.items()}, "text_nll_sum": float(nll.detach()), "text_count": n_text}
        return TaslmOutput(loss, text_loss, taste_loss, kl, stats)

    def _kl_to_base(self, batch, mask, logits):
        """Mean ``KL(p_base || p_adapted)`` over positions with a text label."""
        with torch.no_grad(), self.backbone.disable_adapter():
            text = self.backbone.get_input_embeddings()(batch.input_ids)
            ref = self.backbone(inputs_embeds=text, attention_mask=mask.long()).logits.float()
        keep = batch.text_labels != IGNORE
        ref_logp = torch.log_softmax(ref[keep], -1)
        logp = torch.log_softmax(logits.float()[keep], -1)
        return (ref_logp.exp() * (ref_logp - logp)).sum(-1).mean()

    @torch.no_grad()
    def text_nll(self, batch, mode="speech"):
        """``(sum of text NLL, labelled tokens)`` of a batch.

        ``mode``: ``"speech"`` (TASLM with the TASTE stream), ``"no_speech"`` (adapted
        model, speech pads everywhere) or ``"base"`` (the frozen base LM, adapters
        disabled, plain text embeddings).
        """
        mask = lengths_to_mask(batch.lengths, batch.input_ids.shape[1]).long()
        if mode == "base":
            import contextlib

            ctx = self.backbone.disable_adapter() if self.has_adapters else contextlib.nullcontext()
            with ctx:
                logits = self.backbone(inputs_embeds=self.backbone.get_input_embeddings()(batch.input_ids),
                                       attention_mask=mask).logits
        else:
            codes = batch.audio_codes if mode == "speech" else torch.full_like(batch.audio_codes, -1)
            logits = self.run(self.embed(batch.input_ids, batch.is_tail, codes), attention_mask=mask)[1]
        nll = F.cross_entropy(logits.float().flatten(0, 1), batch.text_labels.flatten(), ignore_index=IGNORE,
                              reduction="sum")
        return float(nll), int((batch.text_labels != IGNORE).sum())

    # ------------------------------------------------------------------ persistence
    def trainable_state_dict(self):
        """Only what trains (LoRA, fusion, head, pads): the frozen LM is never saved."""
        return {n: p.detach().cpu().clone() for n, p in self.named_parameters() if p.requires_grad}

    def load_trainable_state_dict(self, state):
        own = {n for n, p in self.named_parameters() if p.requires_grad}
        missing, unexpected = own - set(state), set(state) - own
        if missing or unexpected:
            raise ConfigError(f"TASLM checkpoint does not fit this model: missing {sorted(missing)[:5]}, "
                              f"unexpected {sorted(unexpected)[:5]} (was it trained with another config?).")
        params = dict(self.named_parameters())
        with torch.no_grad():
            for n, v in state.items():
                params[n].copy_(v.to(params[n].dtype))

    def save_pretrained(self, folder):
        """Write ``taslm_config.json`` + trainable weights and the codebooks (safetensors)."""
        from safetensors.torch import save_file

        os.makedirs(folder, exist_ok=True)
        tensors = {f"trainable.{k}": v.contiguous() for k, v in self.trainable_state_dict().items()}
        tensors["codebook"] = self.codebook.codebooks.detach().cpu().contiguous()
        tensors.update(self.codebook.extra_tensors())
        save_file(tensors, os.path.join(folder, WEIGHTS_FILE))
        with open(os.path.join(folder, CONFIG_FILE), "w") as f:
            json.dump(self.config, f, indent=2)
        return folder

    @classmethod
    def from_pretrained(cls, folder, device="cpu"):
        """Rebuild from :meth:`save_pretrained` output (the backbone is loaded from its recorded source)."""
        from safetensors.torch import load_file

        path = os.path.join(folder, CONFIG_FILE)
        if not os.path.isfile(path):
            raise MissingResourceError(f"{folder!r} has no {CONFIG_FILE}: not a TASLM folder (train one with "
                                       "python recipes/librispeech/train.py hparams/taslm_token.yaml).")
        with open(path) as f:
            config = json.load(f)
        for key in ("backbone_source", "tokenizer_folder"):  # "./x", "../x": relative to this folder
            value = config.get(key)
            if isinstance(value, str) and value.startswith(("./", "../")):
                config[key] = os.path.normpath(os.path.join(os.path.abspath(folder), value))
        tensors = load_file(os.path.join(folder, WEIGHTS_FILE))
        codebook = SpeechCodebook(tensors.pop("codebook"), tensors.pop("codebook_project_out.weight", None),
                                  tensors.pop("codebook_project_out.bias", None))
        model = build_taslm(codebook=codebook, **config)
        model.load_trainable_state_dict({k[len("trainable."):]: v for k, v in tensors.items()})
        return model.to(device).eval()


def build_taslm(backbone_source, codebook, head_name, head_options=None, fusion_name="weighted_sum",
                fusion_options=None, lora=None, delay=1, dtype="float32", text_weight=1.0, taste_weight=1.0,
                text_kl_weight=0.0, gradient_checkpointing=False, speech_input="code_sum", bos_input="fused",
                bridge_options=None, **extra):
    """Build a :class:`TaslmModel` from plain data (YAML values or a saved config).

    Arguments
    ---------
    backbone_source : str
        Hub id or local folder of the causal LM.
    codebook : SpeechCodebook
    head_name, fusion_name : str
        ``lm_head`` and ``fusion`` plugins; their options are plain dicts.
    lora : dict or None
        ``{r, alpha, dropout, target_modules}``; ``None`` = no adapters (the LM stays frozen).
    delay : int
        Word delay of the speech stream.
    speech_input, bos_input : str
        See :class:`TaslmModel` (defaults: toolkit; ``"project_out"``, ``"text"``: official).
    bridge_options : dict
        ``{end, first_word_space, bos_id}`` of :class:`WordBridge`.
    extra : dict
        Stored in the config only (e.g. the tokenizer folder and fingerprint).

    A ``backbone_source`` that is a saved TASLM folder (e.g. ``<OUT>/taslm`` of ``taste
    import-official``) fine-tunes that model: see :func:`build_from_taslm_folder`.
    """
    from taste_toolkit.registry import build

    if os.path.isfile(os.path.join(str(backbone_source), CONFIG_FILE)):
        return build_from_taslm_folder(backbone_source, codebook, head_name=head_name, fusion_name=fusion_name,
                                       lora=lora, delay=delay, text_weight=text_weight, taste_weight=taste_weight,
                                       text_kl_weight=text_kl_weight, gradient_checkpointing=gradient_checkpointing,
                                       **extra)
    llm, tokenizer = load_causal_lm(backbone_source, dtype)
    if lora:
        llm = add_lora(llm, **lora)
    if gradient_checkpointing:
        llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    hidden = llm.get_input_embeddings().embedding_dim
    speech_dim = codebook.output_dim if speech_input == "project_out" else codebook.dim
    fusion = build("fusion", fusion_name, dict(fusion_options or {}), text_dim=hidden, speech_dim=speech_dim)
    head = build("lm_head", head_name, dict(head_options or {}), input_dim=hidden, embedding_dim=codebook.dim)
    bridge = WordBridge(tokenizer, codebook.num_quantizers, delay, **dict(bridge_options or {}))
    config = dict(backbone_source=os.path.abspath(backbone_source) if os.path.isdir(backbone_source) else backbone_source,
                  head_name=head_name, head_options=dict(head_options or {}), fusion_name=fusion_name,
                  fusion_options=dict(fusion_options or {}), lora=dict(lora) if lora else None, delay=delay,
                  dtype=dtype, text_weight=text_weight, taste_weight=taste_weight, text_kl_weight=text_kl_weight,
                  speech_input=speech_input, bos_input=bos_input, bridge_options=dict(bridge_options or {}), **extra)
    return TaslmModel(llm, bridge, codebook, fusion, head, text_weight, taste_weight, text_kl_weight, config,
                      speech_input=speech_input, bos_input=bos_input)


def build_from_taslm_folder(folder, codebook, head_name=None, fusion_name=None, lora=None, delay=None,
                            text_weight=1.0, taste_weight=1.0, text_kl_weight=0.0, gradient_checkpointing=False,
                            **extra):
    """Continue training a saved TASLM (e.g. the official release imported by ``taste import-official``).

    The architecture (backbone, LoRA, fusion, head, bridge layout, speech input) and
    every trained weight come from ``folder``; the call gives the loss weights and
    the extra config entries. ``head_name``, ``fusion_name``, ``delay`` and the LoRA
    ``r`` / ``alpha``, when given, must agree with the folder's.

    Raises
    ------
    ConfigError
        A given option disagrees with the folder, or ``codebook`` is not the one the
        folder was trained or imported with (another tokenizer).
    """
    with open(os.path.join(folder, CONFIG_FILE)) as f:
        saved = json.load(f)
    given = {"head_name": head_name, "fusion_name": fusion_name, "delay": delay}
    for key, value in given.items():
        if value is not None and value != saved.get(key):
            raise ConfigError(f"{key}={value!r} but the TASLM in {folder!r} has {key}={saved.get(key)!r}; set "
                              f"{key}: {saved.get(key)!r} to fine-tune it.")
    for key in ("r", "alpha"):
        have = (saved.get("lora") or {}).get(key)
        if lora and have is not None and lora.get(key) is not None and lora.get(key) != have:
            raise ConfigError(f"lora.{key}={lora.get(key)!r} but the TASLM in {folder!r} has {have!r}; its adapters "
                              f"are reused as they are, set lora.{key}: {have}.")
    model = TaslmModel.from_pretrained(folder)
    if not torch.equal(model.codebook.codebooks.cpu(), codebook.codebooks.detach().float().cpu()):
        raise ConfigError(f"The tokenizer's RVQ codebooks differ from those of the TASLM in {folder!r}: use the "
                          "tokenizer it was trained or imported with (its taslm_config.json tokenizer_folder).")
    model.text_weight, model.taste_weight, model.text_kl_weight = text_weight, taste_weight, text_kl_weight
    model.config.update(text_weight=text_weight, taste_weight=taste_weight, text_kl_weight=text_kl_weight,
                        initialized_from=os.path.abspath(folder), **extra)
    if gradient_checkpointing:
        model.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


@register_checkpoint_hooks
class TrainableParameters:
    """SpeechBrain recoverable saving only a model's trainable parameters."""

    def __init__(self, model):
        self.model = model

    @mark_as_saver
    def save(self, path):
        torch.save(self.model.trainable_state_dict(), path)

    @mark_as_loader
    def load(self, path, end_of_epoch=False):
        self.model.load_trainable_state_dict(torch.load(path, weights_only=True, map_location="cpu"))
