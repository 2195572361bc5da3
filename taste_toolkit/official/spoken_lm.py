"""The release's spoken LM (``spoken_lm.*``) as a toolkit TASLM folder.

Mapping (official ``TasteSpokenLM`` -> :class:`~taste_toolkit.taslm.model.TaslmModel`):

==========================================================  ================================================
``language_model`` (Llama; peft LoRA when ``use_lora``)      ``backbone/`` (HF folder: base weights, config,
                                                             ``llama_tokenizer/`` files) + LoRA adapters
                                                             ``backbone.base_model.model.*.lora_{A,B}.default``
``fuse_for_bridge_in_llm.{linear, weights}``                 ``weighted_sum`` fusion ``proj``, ``logits``
                                                             (official ``[audio, text]`` -> ours ``[text, speech]``)
``extract_for_bridge_out_llm.{fc_mu, b_logvar}``             ``taste_embedding`` head ``mu``, ``logvar``
                                                             (``normalized=False``, ``point="mean_plus_sigma"``)
``extract_for_bridge_out_llm.linear`` (``linear_last``)      ``taste_token`` head ``proj`` (with bias)
``pad_text_unit_embed`` / ``pad_audio_unit_embed``           ``text_pad`` / ``speech_pad``
==========================================================  ================================================

The speech input is the RVQ output (``speech_input="project_out"``, its size read
from the checkpoint, never assumed to be 1280), the first position is the plain
``sos`` embedding (``bos_input="text"``), and the bridge uses the release's layout
(``end="pad"``: no EOS, ``d`` text pads; first word without its leading space;
``bos_id = sos_id``).
"""

import json
import os
import shutil

import torch

from taste_toolkit.errors import ConfigError, InputError
from taste_toolkit.official.reader import write_safetensors

HEADS = {"continue_latent_linear_last": "taste_embedding", "linear_last": "taste_token"}
LORA_KEYS = {"lora_model_dir", "lora_r", "lora_alpha", "lora_dropout", "lora_target_linear", "lora_target_modules",
             "lora_fan_in_fan_out", "lora_modules_to_save"}
TOKENIZER_FILES = (".json", ".txt", ".model", ".tiktoken")


def _field(section, name, where, choices=None, kind=None):
    if name not in section:
        raise ConfigError(f"config.json {where}.{name} is missing; the release's config has it.")
    value = section[name]
    if kind is not None and (not isinstance(value, kind) or isinstance(value, bool) and kind is not bool):
        raise ConfigError(f"config.json {where}.{name}={value!r} must be a {kind.__name__}.")
    if choices is not None and value not in choices:
        raise ConfigError(f"config.json {where}.{name}={value!r} is not supported; the toolkit implements "
                          f"{', '.join(map(repr, choices))}.")
    return value


def spoken_lm_plan(config):
    """Check ``spoken_lm_config`` / ``text_config`` and return the TASLM settings.

    Returns
    -------
    dict
        ``delay``, ``head_name``, ``lora`` (dict or None), ``sos_id``, ``text_weight``,
        ``taste_weight``, ``text_config`` (the Llama config dict).

    Raises
    ------
    ConfigError
        A field with a value the toolkit does not implement (named), or a text model
        that is not a Llama.
    """
    sl, tc = config.get("spoken_lm_config"), config.get("text_config")
    if not isinstance(sl, dict) or not isinstance(tc, dict):
        raise ConfigError("config.json has no spoken_lm_config / text_config: not a TASTE release config.")
    where = "spoken_lm_config"
    delay = _field(sl, "delay", where, kind=int)
    if delay < 1:
        raise ConfigError(f"config.json {where}.delay={delay} is not supported; the toolkit implements the "
                          "release's word delay (>= 1).")
    _field(sl, "delay_level", where, choices=("word",))
    _field(sl, "audio_embed_conv_mode", where, choices=("fill_forward",))
    _field(sl, "in_llm_module", where, choices=("weighted_sum",))
    head = _field(sl, "out_llm_module", where, choices=tuple(HEADS))
    sos_id = _field(sl, "sos_id", where, kind=int)
    weights = str(_field(sl, "loss_weights", where, kind=str)).split("-")
    try:
        text_weight, taste_weight = (float(w) for w in weights)
    except ValueError as exc:
        raise ConfigError(f"config.json {where}.loss_weights={sl['loss_weights']!r}: expected 'text-taste' "
                          "(two numbers, e.g. '0.5-0.5').") from exc
    lora = None
    if _field(sl, "use_lora", where, kind=bool):
        kw = _field(sl, "kwargs_for_lora", where, kind=dict)
        unknown = sorted(set(kw) - LORA_KEYS)
        if unknown:
            raise ConfigError(f"config.json {where}.kwargs_for_lora has unknown field(s) {unknown}.")
        for name in ("lora_fan_in_fan_out", "lora_modules_to_save"):
            if kw.get(name):
                raise ConfigError(f"config.json {where}.kwargs_for_lora.{name}={kw[name]!r} is not supported "
                                  "(the release has none).")
        lora = {"r": _field(kw, "lora_r", f"{where}.kwargs_for_lora", kind=int),
                "alpha": _field(kw, "lora_alpha", f"{where}.kwargs_for_lora", kind=(int, float)),
                "dropout": float(kw.get("lora_dropout") or 0.0)}
    if tc.get("model_type") != "llama":
        raise ConfigError(f"config.json text_config.model_type={tc.get('model_type')!r}: the release's spoken LM "
                          "is a Llama; other text models are not supported.")
    return {"delay": delay, "head_name": HEADS[head], "lora": lora, "sos_id": sos_id, "text_weight": text_weight,
            "taste_weight": taste_weight, "text_config": tc}


def llama_shapes(text_config):
    """``{name: shape}`` of the Llama state dict of ``text_config`` (built on the meta device)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig.from_dict({k: v for k, v in text_config.items() if not k.startswith("_")})
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}, cfg


def map_spoken_lm(ckpt, plan, codebook):
    """Plan where every ``spoken_lm.*`` tensor goes, checking names and shapes (nothing is read).

    Arguments
    ---------
    ckpt : Checkpoint
    plan : dict from :func:`spoken_lm_plan`
    codebook : SpeechCodebook
        The release's RVQ (codebooks ``(R, K, d)`` and ``project_out`` ``(D, d)``).

    Returns
    -------
    dict
        ``backbone``: ``{HF name: source}``; ``trainable``: ``{TASLM name: source}``;
        ``skipped``: ``{source: reason}``; ``not_placed``: ``{source: reason}``;
        ``lora_targets``; ``llama_config``.

    Raises
    ------
    InputError
        A tensor missing or of the wrong shape (named, with the expected shape).
    """
    shapes, llama_config = llama_shapes(plan["text_config"])
    hidden, (R, K, d), D = llama_config.hidden_size, tuple(codebook.codebooks.shape), codebook.output_dim
    names = ckpt.names("spoken_lm.")
    lora = plan["lora"]
    base = "spoken_lm.language_model." + ("base_model.model." if lora else "")
    out = {"backbone": {}, "trainable": {}, "skipped": {}, "not_placed": {}, "lora_targets": set(),
           "llama_config": llama_config}
    expected = {}

    def want(src, dst, shape, table):
        expected[src] = shape
        out[table][dst] = src

    for name in names:
        if not name.startswith(base):
            continue
        rest = name[len(base):]
        if ".lora_A.default." in rest or ".lora_B.default." in rest:
            if not lora:
                raise InputError(f"Tensor {name} is a LoRA adapter but spoken_lm_config.use_lora is false.")
            module, kind = rest.split(".lora_")[0], rest.split(".lora_")[1][0]
            target = shapes.get(module + ".weight")
            if target is None:
                raise InputError(f"Tensor {name} adapts {module}, which the Llama of text_config does not have.")
            out_f, in_f = target
            want(name, "backbone.base_model.model." + rest, (lora["r"], in_f) if kind == "A" else (out_f, lora["r"]),
                 "trainable")
            out["lora_targets"].add(module.rsplit(".", 1)[-1])
            continue
        hf = rest.replace(".base_layer.", ".")
        if hf == "lm_head.weight" and llama_config.tie_word_embeddings:
            out["skipped"][name] = "tied to model.embed_tokens.weight (text_config.tie_word_embeddings)"
            expected[name] = shapes.get(hf)
            continue
        if hf not in shapes:
            out["not_placed"][name] = "not a parameter of the Llama described by text_config"
            continue
        want(name, hf, shapes[hf], "backbone")
    pre = "spoken_lm."
    extras = {"fuse_for_bridge_in_llm.linear.weight": ("fusion.proj.weight", (hidden, D)),
              "fuse_for_bridge_in_llm.linear.bias": ("fusion.proj.bias", (hidden,)),
              "fuse_for_bridge_in_llm.weights": ("fusion.logits", (2,)),
              "pad_text_unit_embed": ("text_pad", (hidden,)),
              "pad_audio_unit_embed": ("speech_pad", (D,))}
    if plan["head_name"] == "taste_embedding":
        extras.update({"extract_for_bridge_out_llm.fc_mu.weight": ("head.mu.weight", (d, hidden)),
                       "extract_for_bridge_out_llm.fc_mu.bias": ("head.mu.bias", (d,)),
                       "extract_for_bridge_out_llm.b_logvar": ("head.logvar", (d,))})
    else:
        extras.update({"extract_for_bridge_out_llm.linear.weight": ("head.proj.weight", (R * K, hidden)),
                       "extract_for_bridge_out_llm.linear.bias": ("head.proj.bias", (R * K,))})
    for src, (dst, shape) in extras.items():
        want(pre + src, dst, shape, "trainable")
    for name in names:
        if name not in expected and name not in out["not_placed"] and name not in out["skipped"]:
            out["not_placed"][name] = "no counterpart in the toolkit TASLM for this spoken_lm_config"
    for k in shapes:
        if k == "lm_head.weight" and llama_config.tie_word_embeddings:
            continue
        module, leaf = k.rsplit(".", 1)
        if base + k not in ckpt.location and f"{base}{module}.base_layer.{leaf}" not in ckpt.location:
            raise InputError(f"Missing tensor {base}{k}: text_config describes a Llama with it.")
    for src, shape in expected.items():
        if src not in ckpt.location:
            raise InputError(f"Missing tensor {src}, expected shape {list(shape)}.")
        if shape is not None and tuple(ckpt.shape(src)) != tuple(shape):
            raise InputError(f"Tensor {src} has shape {list(ckpt.shape(src))}, expected {list(shape)} from "
                             "config.json and the RVQ; the checkpoint and its config do not match.")
    if lora and len(out["lora_targets"]) == 0:
        raise InputError("spoken_lm_config.use_lora is true but no spoken_lm.*.lora_A.default.weight tensor exists.")
    out["lora_targets"] = sorted(out["lora_targets"])
    return out


def audio_dim_mismatch(ckpt, codebook):
    """Reason the spoken LM cannot read this checkpoint's RVQ output, or None.

    The release's bridge hard-codes 1280-d audio (Whisper large). A stage-1
    checkpoint with a smaller Whisper keeps those 1280-d bridge tensors: it holds no
    usable spoken LM, which is reported instead of refused.
    """
    name = "spoken_lm.fuse_for_bridge_in_llm.linear.weight"
    if name in ckpt.location and ckpt.shape(name)[-1] != codebook.output_dim:
        return (f"{name} reads {ckpt.shape(name)[-1]}-d audio but the RVQ outputs {codebook.output_dim}-d vectors "
                "(the official bridge hard-codes 1280-d audio): this checkpoint holds no spoken LM usable with its "
                "tokenizer, so no TASLM folder is written")
    return None


def write_taslm(folder, ckpt, plan, mapping, codebook, tokenizer_dir, dtype="float32", tokenizer_folder=None,
                fingerprint=None):
    """Write the TASLM folder: ``backbone/`` (streamed), ``taslm_trainable.safetensors``, ``taslm_config.json``.

    Returns
    -------
    dict
        ``{"backbone_bytes", "files_copied"}``.
    """
    from safetensors.torch import save_file

    from taste_toolkit.taslm.model import CONFIG_FILE, WEIGHTS_FILE

    backbone = os.path.join(folder, "backbone")
    os.makedirs(backbone)
    entries = [(dst, ckpt.dtype(src), ckpt.shape(src), lambda src=src: ckpt.get(src))
               for dst, src in mapping["backbone"].items()]
    write_safetensors(os.path.join(backbone, "model.safetensors"), entries, metadata={"format": "pt"})
    llama_config = mapping["llama_config"]
    llama_config.torch_dtype = None
    llama_config.bos_token_id = plan["sos_id"]
    llama_config.save_pretrained(backbone)
    copied = []
    for f in sorted(os.listdir(tokenizer_dir)):
        if f.endswith(TOKENIZER_FILES) and os.path.isfile(os.path.join(tokenizer_dir, f)):
            shutil.copyfile(os.path.join(tokenizer_dir, f), os.path.join(backbone, f))
            copied.append(f)
    if "tokenizer.json" not in copied and "tokenizer.model" not in copied:
        raise InputError(f"{tokenizer_dir} has no tokenizer.json: the release's llama_tokenizer/ is incomplete.")
    trainable = {}
    for dst, src in mapping["trainable"].items():
        t = ckpt.get(src).float()
        trainable["trainable." + dst] = t.flip(0).contiguous() if dst == "fusion.logits" else t.contiguous()
    trainable["codebook"] = codebook.codebooks.contiguous()
    trainable.update(codebook.extra_tensors())
    save_file(trainable, os.path.join(folder, WEIGHTS_FILE))
    head_options = {"num_quantizers": codebook.num_quantizers, "codebook_size": codebook.codebook_size}
    if plan["head_name"] == "taste_embedding":  # the release's loss: 0.5 MSE + 0.5 KL averaged over dimensions
        head_options.update(logvar="learned", normalized=False, point="mean_plus_sigma", regression_weight=0.5,
                            kl_weight=0.5 / codebook.dim, prior_std=1.0)
    else:
        head_options.update(bias=True, layer_weights=[])
    lora = plan["lora"]
    config = {
        "backbone_source": "./backbone", "head_name": plan["head_name"], "head_options": head_options,
        "fusion_name": "weighted_sum", "fusion_options": {"init_logits": [2.0, -2.0]},
        "lora": {**lora, "target_modules": mapping["lora_targets"]} if lora else None,
        "delay": plan["delay"], "dtype": dtype, "text_weight": plan["text_weight"],
        "taste_weight": plan["taste_weight"], "text_kl_weight": 0.0, "speech_input": "project_out",
        "bos_input": "text", "bridge_options": {"end": "pad", "first_word_space": False, "bos_id": plan["sos_id"]},
        "tokenizer_folder": tokenizer_folder, "tokenizer_fingerprint": fingerprint,
        "imported_from": "official TASTE release (taste import-official)",
    }
    with open(os.path.join(folder, CONFIG_FILE), "w") as f:
        json.dump(config, f, indent=2)
    return {"backbone_bytes": os.path.getsize(os.path.join(backbone, "model.safetensors")), "files_copied": copied}
