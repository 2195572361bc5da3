"""The release's audio tower (``audio_tower.*``) as ``whisper`` + ``whisper_decoder`` + ``rvq`` plugins.

The official ``TasteAudioTower`` (joint encoder-segmenter, ``forward_type:
asr_attn_pooling``) is a whole Whisper (distil-large-v3 in the release) plus a
residual VQ:

============================================================  =================================
release tensors (prefix ``audio_tower.`` stripped)            toolkit plugin (state-dict keys)
============================================================  =================================
``audio_joint_encoder_segmenter.audio_encoder.encoder.*``     encoder ``whisper`` (``encoder.*``)
``audio_joint_encoder_segmenter.audio_segmenter.decoder.*``   aggregator ``whisper_decoder`` (``*``)
``vq.rvq.{project_in,project_out,layers.N._codebook.*}``      quantizer ``rvq`` (``rvq.*``)
``vq.rvq.mlps.*``                                             skipped (QINCo MLPs, unused)
============================================================  =================================

The Whisper geometry: the release builds the tower from
``kwargs_for_joint_encoder_segmenter.model_name_or_path`` (distil-large-v3: 32
encoder layers, 2 decoder layers), a config that ``config.json`` does not carry;
its ``asr_config`` is the ASR Whisper (large-v3: 32 decoder layers). So the
Whisper config is ``whisper_config`` when given, else ``asr_config`` with the
encoder and decoder layer counts read from the tensors (every other field of
distil-large-v3 equals large-v3's). Shapes are then checked tensor by tensor.

What matches the release (checked against the official-tiny fixture, 1e-4, codes
exact): the key and value taps over the whole 30-s window, the decoder states and
cross-attention, the word-averaged vectors at valid positions, ``project_in``, the
codes (-1 at padding) and the quantized vectors at valid positions. Where the
plugins differ, on purpose:

* padded positions: the aggregator and the RVQ give zeros there; the release
  leaves the decoder states of its padding ids and ``project_out(0)``;
* the eval-mode commitment loss: the ``rvq`` plugin computes it, the release
  returns 0 in eval;
* a one-word transcript batched with longer ones: the release's run-based word
  grouping may mix in (or skip averaging because of) padding; alone they agree
  (see :mod:`taste_toolkit.plugins.aggregator.whisper_decoder`);
* numerics: the plugins run in float32 (bfloat16 tensors are upcast); the
  release's ``dtype: bfloat16`` Whisper computes in bfloat16, so at the release's
  size outputs differ from it by bfloat16 rounding, not by the math.

Inputs as the release builds them: Whisper large-v3 token ids of the transcript
(first word without a leading space, later words with one, case kept), word
ids per token, and 128-bin log-mels of the audio padded to 30 s (the ``whisper``
encoder computes them from 16-kHz waveforms, or takes them via ``encode_features``).
"""

import logging
import re
from collections.abc import Mapping

import torch

from taste_toolkit.errors import ConfigError, InputError
from taste_toolkit.plugins.aggregator.whisper_decoder import (
    RELEASE_EOS_ID,
    RELEASE_PROMPT_IDS,
    whisper_decoder_options,
)
from taste_toolkit.registry import build

logger = logging.getLogger(__name__)

ENCODER_PREFIX = "audio_joint_encoder_segmenter.audio_encoder.encoder."
DECODER_PREFIX = "audio_joint_encoder_segmenter.audio_segmenter.decoder."
RVQ_PREFIX = "vq.rvq."
SKIPPED_PREFIX = "vq.rvq.mlps."
#: ``WhisperConfig`` fields the plugins read (stored in the encoder's options).
WHISPER_FIELDS = (
    "vocab_size", "num_mel_bins", "d_model", "encoder_layers", "encoder_attention_heads", "encoder_ffn_dim",
    "decoder_layers", "decoder_attention_heads", "decoder_ffn_dim", "max_source_positions",
    "max_target_positions", "activation_function", "scale_embedding", "dropout", "attention_dropout",
    "activation_dropout", "pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id",
)
#: ``ResidualVQ``/``VectorQuantize`` keyword -> ``rvq`` option (vendored defaults where the release omits them).
QUANTIZER_FIELDS = {
    "dim": ("input_dim", None), "num_quantizers": ("num_quantizers", None), "codebook_size": ("codebook_size", None),
    "codebook_dim": ("codebook_dim", None), "decay": ("decay", 0.8), "kmeans_init": ("kmeans_init", False),
    "kmeans_iters": ("kmeans_iters", 10), "threshold_ema_dead_code": ("threshold_ema_dead_code", 0),
    "commitment_weight": ("commitment_weight", 1.0), "quantize_dropout": ("quantize_dropout", False),
}
#: Keywords that change nothing at inference (training-time synchronisation).
QUANTIZER_IGNORED = {"quantizer_class", "sync_kmeans", "sync_codebook"}
#: Keywords accepted only at the vendored default, which our ``rvq`` implements.
QUANTIZER_FIXED = {"heads": 1, "use_cosine_sim": False, "shared_codebook": False, "implicit_neural_codebook": False,
                   "learnable_codebook": False, "stochastic_sample_codes": False, "orthogonal_reg_weight": 0.0,
                   "accept_image_fmap": False, "layernorm_after_project_in": False, "affine_param": False}


def _tower_section(config):
    if not isinstance(config, Mapping):
        raise ConfigError(
            f"build_audio_tower expects the release's config.json as a dict, got {type(config).__name__}."
        )
    tower = config.get("audio_tower_config", config)
    if not isinstance(tower, Mapping):
        raise ConfigError(f"audio_tower_config must be a dict, got {tower!r}.")
    return tower


def _layer_count(tensors, prefix):
    pattern = re.compile(re.escape(prefix) + r"layers\.(\d+)\.")
    found = {int(m.group(1)) for m in map(pattern.match, tensors) if m}
    return max(found) + 1 if found else 0


def tower_whisper_config(config, tensors, whisper_config=None):
    """The Whisper config of the tower: ``whisper_config``, else ``asr_config`` + layer counts of the tensors.

    Returns
    -------
    dict
        The :data:`WHISPER_FIELDS` as plain data.
    """
    notes = []
    if whisper_config is None:
        base = config.get("asr_config") if isinstance(config, Mapping) else None
        if not isinstance(base, Mapping):
            raise ConfigError(
                f"config.json has no asr_config dict (got {base!r}); pass whisper_config= (the tower Whisper's "
                "config.json as a dict, e.g. distil-large-v3's)."
            )
        base = dict(base)
        for field, prefix in (("encoder_layers", ENCODER_PREFIX), ("decoder_layers", DECODER_PREFIX)):
            count = _layer_count(tensors, prefix)
            if count and count != base.get(field):
                notes.append(f"{field}: {count} from the tensors (asr_config says {base.get(field)})")
                base[field] = count
    else:
        base = dict(whisper_config)
    missing = [f for f in ("vocab_size", "num_mel_bins", "d_model", "encoder_layers", "encoder_attention_heads",
                           "encoder_ffn_dim", "decoder_layers", "decoder_attention_heads", "decoder_ffn_dim",
                           "max_source_positions", "max_target_positions") if f not in base]
    if missing:
        raise ConfigError(f"The Whisper config lacks {missing}; pass a full WhisperConfig dict as whisper_config.")
    if base.get("activation_function", "gelu") != "gelu":
        raise ConfigError(f"Whisper activation_function={base['activation_function']!r}: the whisper_decoder "
                          "aggregator implements 'gelu' (Whisper's) only.")
    out = {k: base[k] for k in WHISPER_FIELDS if k in base}
    out["model_type"] = "whisper"
    return out, notes


def _quantizer_options(tower, d_model):
    kwargs = tower.get("kwargs_for_quantizer")
    if kwargs is None:
        raise ConfigError("audio_tower_config.kwargs_for_quantizer is null (a release without RVQ); "
                          "only the RVQ release is supported.")
    if kwargs.get("quantizer_class", "rvq") != "rvq":
        raise ConfigError(f"audio_tower_config.kwargs_for_quantizer.quantizer_class={kwargs['quantizer_class']!r}: "
                          "only 'rvq' (the release's) is supported.")
    unknown = sorted(set(kwargs) - set(QUANTIZER_FIELDS) - QUANTIZER_IGNORED - set(QUANTIZER_FIXED))
    if unknown:
        raise ConfigError(f"audio_tower_config.kwargs_for_quantizer has {unknown}, which the rvq plugin does not "
                          "implement.")
    for key, default in QUANTIZER_FIXED.items():
        if key in kwargs and kwargs[key] != default:
            raise ConfigError(f"audio_tower_config.kwargs_for_quantizer.{key}={kwargs[key]!r} is not supported "
                              f"(the rvq plugin implements {key}={default!r}).")
    options = {"sync_codebook": True}
    for key, (ours, default) in QUANTIZER_FIELDS.items():
        value = kwargs.get(key, default)
        if value is None and key == "codebook_dim":
            value = kwargs.get("dim")
        if value is None:
            raise ConfigError(f"audio_tower_config.kwargs_for_quantizer.{key} is required.")
        options[ours] = value
    if options["input_dim"] != d_model:
        raise ConfigError(f"kwargs_for_quantizer.dim={options['input_dim']} but the Whisper d_model is {d_model}: "
                          "the RVQ quantizes the decoder's output.")
    return options


def audio_tower_options(config, tensors, whisper_config=None):
    """Registry names and options of the three plugins for the release's config.

    Returns
    -------
    options : dict
        ``{"encoder": ("whisper", {...}), "aggregator": ("whisper_decoder", {...}),
        "quantizer": ("rvq", {...})}``.
    notes : list of str
        How the Whisper geometry was completed from the tensors.
    """
    tower = _tower_section(config)
    if not tower.get("is_joint_encoder_segmenter", True):
        raise ConfigError("audio_tower_config.is_joint_encoder_segmenter=false (the local-average-pooling tower) "
                          "is not supported; the release uses the joint Whisper encoder-segmenter.")
    joint = dict(tower.get("kwargs_for_joint_encoder_segmenter") or {})
    where = "audio_tower_config.kwargs_for_joint_encoder_segmenter"
    if joint.get("forward_type", "add_and_norm") != "asr_attn_pooling":
        raise ConfigError(f"{where}.forward_type={joint.get('forward_type', 'add_and_norm')!r}: only "
                          "'asr_attn_pooling' (keys = last layer, values = target_hidden_layer) is supported.")
    if joint.get("skip_prefix_idx") != len(RELEASE_PROMPT_IDS):
        raise ConfigError(f"{where}.skip_prefix_idx={joint.get('skip_prefix_idx')!r}: the release prepends "
                          f"{len(RELEASE_PROMPT_IDS)} prompt ids and must skip exactly them.")
    whisper, notes = tower_whisper_config(config, tensors, whisper_config)
    value_layer = joint.get("target_hidden_layer", 6)
    if not isinstance(value_layer, int) or not 0 <= value_layer < whisper["encoder_layers"]:
        raise ConfigError(f"{where}.target_hidden_layer={value_layer!r} must be in 0..{whisper['encoder_layers'] - 1} "
                          f"(the Whisper encoder has {whisper['encoder_layers']} layers).")
    encoder = {"source": "", "whisper_config": whisper, "value_layer": value_layer, "key_layer": -1,
               "mode": "padded_window", "attention_implementation": "eager", "freeze": True, "init_weights": False}
    aggregator = dict(whisper_decoder_options(whisper), prompt_ids=list(RELEASE_PROMPT_IDS), eos_id=RELEASE_EOS_ID,
                      word_pooling="broadcast" if joint.get("is_word_level", False) else "none",
                      value_identity_init=bool(joint.get("make_v_proj_identity", False)),
                      attention_implementation="eager", dropout=float(whisper.get("dropout", 0.0)))
    quantizer = _quantizer_options(tower, whisper["d_model"])
    return {"encoder": ("whisper", encoder), "aggregator": ("whisper_decoder", aggregator),
            "quantizer": ("rvq", quantizer)}, notes


def _release_key(role, key):
    """Release tensor name (prefix ``audio_tower.`` stripped) of one of our state-dict keys."""
    if role == "encoder":
        return ENCODER_PREFIX + key[len("encoder."):]
    if role == "aggregator":
        return DECODER_PREFIX + key
    return RVQ_PREFIX + key[len("rvq."):]


def _check(name, got, expected_shape):
    full = "audio_tower." + name
    if not isinstance(got, torch.Tensor):
        raise InputError(f"Tensor {full} is a {type(got).__name__}, expected a tensor of shape {expected_shape}.")
    if list(got.shape) != expected_shape:
        raise InputError(f"Tensor {full} has shape {list(got.shape)}, expected {expected_shape} from the config; "
                         "the checkpoint and config.json (or whisper_config) do not match.")
    if got.is_floating_point() and not torch.isfinite(got).all():
        raise InputError(f"Tensor {full} holds non-finite values; the checkpoint is corrupt.")


def build_audio_tower(config: dict, tensors: Mapping, whisper_config: dict = None) -> dict:
    """Build the release's encoder, aggregator and RVQ as toolkit plugins with its weights.

    Arguments
    ---------
    config : dict
        The release's ``TasteConfig`` (``config.json``), or its ``audio_tower_config``
        with ``whisper_config`` given.
    tensors : Mapping[str, torch.Tensor]
        The ``audio_tower.*`` tensors with that prefix stripped (may be lazy).
    whisper_config : dict, optional
        The tower Whisper's ``WhisperConfig`` dict; default: ``asr_config`` with the
        layer counts of the tensors (see the module docstring).

    Returns
    -------
    dict
        ``encoder``, ``aggregator``, ``quantizer``: plugins built by the registry, in
        eval mode, float32, weights loaded; ``options``: ``{kind: (plugin_name,
        options)}`` rebuilding them (the Whisper config is inside the encoder's
        options: no hub id or file); ``consumed``: sorted release names loaded;
        ``skipped``: sorted names deliberately unused (``vq.rvq.mlps.*``);
        ``unplaced``: sorted names given that match nothing; ``notes``: how the
        Whisper config was completed.

    Raises
    ------
    ConfigError
        A config field the plugins do not implement.
    InputError
        A tensor missing, of the wrong shape or non-finite (named, with the expected shape).
    """
    options, notes = audio_tower_options(config, tensors, whisper_config)
    modules = {kind: build(kind, name, opts) for kind, (name, opts) in options.items()}
    consumed, upcast = [], set()
    for role, module in modules.items():
        # Check every name and shape first: a refused checkpoint leaves no half-loaded module behind.
        targets = module.state_dict()  # references to the parameters and buffers
        for key, param in targets.items():
            name = _release_key(role, key)
            is_flag = role == "quantizer" and key.endswith("._codebook.initted")
            expected = [1] if is_flag else list(param.shape)  # the vendored codebook keeps initted as [1] float
            if name not in tensors:
                hint = " (strip the 'audio_tower.' prefix)" if "audio_tower." + name in tensors else ""
                raise InputError(f"Missing tensor audio_tower.{name}, expected shape {expected}{hint}.")
            _check(name, tensors[name], expected)
        # Then copy tensor by tensor (peak memory: the plugins plus one tensor, for lazy mappings).
        with torch.no_grad():
            for key, param in targets.items():
                name = _release_key(role, key)
                got = tensors[name]
                if got.dtype != param.dtype and got.is_floating_point():
                    upcast.add(str(got.dtype).replace("torch.", ""))
                param.copy_(got.reshape(()).bool() if param.dtype == torch.bool else got)
                consumed.append(name)
        module.eval()
    if upcast:
        notes.append(f"{'/'.join(sorted(upcast))} tensors converted to float32 (the plugins compute in float32)")
    placed = set(consumed)
    skipped = sorted(k for k in tensors if k not in placed and k.startswith(SKIPPED_PREFIX))
    unplaced = sorted(k for k in tensors if k not in placed and not k.startswith(SKIPPED_PREFIX))
    if not modules["quantizer"].initialised:
        notes.append("the RVQ codebooks are marked uninitialised (initted=0): every code would be 0")
    for note in notes:
        logger.info("audio tower: %s", note)
    return {**modules, "options": options, "consumed": sorted(consumed), "skipped": skipped,
            "unplaced": unplaced, "notes": notes}
