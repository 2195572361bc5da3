"""The release's unit decoder (``speech_decoder.*``) as a ``cosyvoice_lm`` decoder plugin.

:func:`build_speech_decoder` maps the fields of the release's
``TasteSpeechDecoderConfig`` (``config.json`` -> ``speech_decoder_config``) onto
:class:`~taste_toolkit.plugins.decoder.cosyvoice_lm.CosyVoiceLMDecoder` options and
loads the ``speech_decoder.*`` tensors, whose names the plugin keeps. Fields the
official code reads are honoured or refused (:class:`ConfigError` naming the
field); a missing field takes the official default. The audio-token encoder is
not configurable in the release (2 blocks, 8 heads, 2048 units, input ``linear``,
dropouts 0.1/0.1/0): the plugin's defaults are those values.
"""

from collections.abc import Mapping

import torch

from taste_toolkit.errors import ConfigError, InputError
from taste_toolkit.registry import build

PLUGIN = "cosyvoice_lm"

#: ``TasteSpeechDecoderConfig`` defaults (official configuration_taste.py), used for absent fields.
OFFICIAL_DEFAULTS = {
    "encoder_input_size": 512, "audio_encoder_input_size": -1, "llm_input_size": 1024, "llm_output_size": 1024,
    "text_token_size": 51866, "speech_token_size": 4096, "length_normalized_loss": True, "lsm_weight": 0.0,
    "spk_embed_dim": 192, "fuse_encoded_audio_text_type": "concat", "fuse_encoded_audio_text_kwargs": {},
    "encoder__attention_heads": 8, "encoder__linear_units": 2048, "encoder__num_blocks": 3,
    "encoder__dropout_rate": 0.1, "encoder__positional_dropout_rate": 0.1, "encoder__attention_dropout_rate": 0.0,
    "encoder__normalize_before": True, "encoder__input_layer": "linear",
    "encoder__pos_enc_layer_type": "rel_pos_espnet",
    "encoder__selfattention_layer_type": "rel_selfattn", "encoder__use_cnn_module": False,
    "encoder__macaron_style": False, "encoder__use_dynamic_chunk": False, "encoder__static_chunk_size": 1,
    "llm__attention_heads": 8, "llm__linear_units": 2048, "llm__num_blocks": 7, "llm__dropout_rate": 0.1,
    "llm__positional_dropout_rate": 0.1, "llm__attention_dropout_rate": 0.0, "llm__input_layer": "linear_legacy",
    "llm__pos_enc_layer_type": "rel_pos_espnet", "llm__selfattention_layer_type": "rel_selfattn",
    "llm__static_chunk_size": 1,
}
#: ``WeightedSum.__init__`` defaults (official fusion.py).
FUSION_DEFAULTS = {"normalize": True, "use_trainable_weight": True, "use_layer_norm": False,
                   "weight_init_type": "balance"}


def _get(section, name, kind, where="speech_decoder_config", defaults=OFFICIAL_DEFAULTS, choices=None, minimum=None):
    value = section.get(name, defaults[name])
    if kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise ConfigError(f"{where}.{name} must be {kind.__name__}, got {value!r}.")
    if choices is not None and value not in choices:
        raise ConfigError(f"{where}.{name}={value!r} is not supported by the {PLUGIN} decoder; "
                          f"supported: {', '.join(map(repr, choices))}.")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{where}.{name} must be >= {minimum}, got {value!r}.")
    return value


def _stack_options(section, prefix, ours, chunk_choices=None):
    """Options of one relative-position stack from the ``encoder__``/``llm__`` fields."""
    _get(section, f"{prefix}__pos_enc_layer_type", str, choices=("rel_pos_espnet",))
    _get(section, f"{prefix}__selfattention_layer_type", str, choices=("rel_selfattn",))
    options = {
        f"{ours}_layers": _get(section, f"{prefix}__num_blocks", int, minimum=0),
        f"{ours}_heads": _get(section, f"{prefix}__attention_heads", int, minimum=1),
        f"{ours}_ffn_dim": _get(section, f"{prefix}__linear_units", int, minimum=1),
        f"{ours}_input_layer": _get(section, f"{prefix}__input_layer", str, choices=("linear", "linear_legacy")),
        f"{ours}_dropout": _get(section, f"{prefix}__dropout_rate", float),
        f"{ours}_positional_dropout": _get(section, f"{prefix}__positional_dropout_rate", float),
        f"{ours}_attention_dropout": _get(section, f"{prefix}__attention_dropout_rate", float),
    }
    chunk = _get(section, f"{prefix}__static_chunk_size", int, choices=chunk_choices)
    if chunk < 0:
        raise ConfigError(f"speech_decoder_config.{prefix}__static_chunk_size must be >= 0, got {chunk}.")
    return options, chunk


def speech_decoder_options(config):
    """``cosyvoice_lm`` options equivalent to a ``TasteSpeechDecoderConfig`` dict.

    Arguments
    ---------
    config : dict
        The whole ``TasteConfig`` dict (its ``speech_decoder_config`` is used) or that section.

    Returns
    -------
    dict
        Every option of the plugin, explicit.

    Raises
    ------
    ConfigError
        A field the plugin cannot honour (named ``speech_decoder_config.<field>``).
    """
    section = config.get("speech_decoder_config", config) if isinstance(config, Mapping) else None
    if not isinstance(section, Mapping):
        raise ConfigError(f"Expected the TasteConfig dict or its speech_decoder_config, got {type(config).__name__}.")
    text, text_chunk = _stack_options(section, "encoder", "text")
    text["text_normalize_before"] = _get(section, "encoder__normalize_before", bool)
    text["text_static_chunk_size"] = text_chunk
    for name in ("encoder__use_cnn_module", "encoder__macaron_style", "encoder__use_dynamic_chunk"):
        _get(section, name, bool, choices=(False,))
    # The LM is trained with static_chunk_size=1 (causal) and decoded token by token.
    lm, _ = _stack_options(section, "llm", "lm", chunk_choices=(1,))

    _get(section, "fuse_encoded_audio_text_type", str, choices=("weighted_sum",))
    fuse = section.get("fuse_encoded_audio_text_kwargs", {}) or {}
    if not isinstance(fuse, Mapping):
        raise ConfigError(f"speech_decoder_config.fuse_encoded_audio_text_kwargs must be a dict, got {fuse!r}.")
    where = "speech_decoder_config.fuse_encoded_audio_text_kwargs"
    unknown = sorted(set(fuse) - set(FUSION_DEFAULTS) - {"ignore_id"})
    if unknown:
        raise ConfigError(f"{where} has unsupported key(s) {unknown}; known: {sorted(FUSION_DEFAULTS)}.")
    _get(fuse, "use_layer_norm", bool, where, FUSION_DEFAULTS, choices=(False,))

    embed = _get(section, "encoder_input_size", int, minimum=1)
    audio_in = _get(section, "audio_encoder_input_size", int)
    if audio_in == 0 or audio_in < -1:
        raise ConfigError(f"speech_decoder_config.audio_encoder_input_size must be -1 or >= 1, got {audio_in}.")
    options = dict(
        vocab_size=_get(section, "text_token_size", int, minimum=1),
        num_units=_get(section, "speech_token_size", int, minimum=1),
        speech_dim=embed if audio_in == -1 else audio_in,
        speech_affine=audio_in != -1,
        speaker_dim=_get(section, "spk_embed_dim", int, minimum=1),
        text_embed_dim=embed,
        d_model=_get(section, "llm_input_size", int, minimum=1),
        lm_dim=_get(section, "llm_output_size", int, minimum=1),
        fusion_normalize=_get(fuse, "normalize", bool, where, FUSION_DEFAULTS),
        fusion_init=_get(fuse, "weight_init_type", str, where, FUSION_DEFAULTS, choices=("balance", "zero_audio")),
        fusion_trainable=_get(fuse, "use_trainable_weight", bool, where, FUSION_DEFAULTS),
        lsm_weight=_get(section, "lsm_weight", float),
        length_normalized_loss=_get(section, "length_normalized_loss", bool),
        # Hard-coded in the release (TasteSpeechDecoder's audio-token encoder).
        speech_layers=2, speech_heads=8, speech_ffn_dim=2048, speech_dropout=0.1,
        speech_positional_dropout=0.1, speech_attention_dropout=0.0,
    )
    options.update(text)
    options.update(lm)
    for width, heads, field in [("d_model", "text_heads", "encoder__attention_heads"),
                                ("d_model", "speech_heads", "llm_input_size (audio-token encoder: 8 heads)"),
                                ("lm_dim", "lm_heads", "llm__attention_heads")]:
        if options[width] % options[heads] or options[width] % 2:
            raise ConfigError(f"speech_decoder_config.{field}: width {options[width]} must be even and divisible "
                              f"by {options[heads]} heads.")
    return options


def build_speech_decoder(config: dict, tensors: Mapping[str, torch.Tensor]) -> dict:
    """Build the ``cosyvoice_lm`` decoder of the release and load its weights.

    Arguments
    ---------
    config : dict
        The release's ``TasteConfig`` dict (``config.json``) or its ``speech_decoder_config``.
    tensors : Mapping[str, torch.Tensor]
        The ``speech_decoder.*`` tensors with that prefix stripped
        (``"llm.encoders.0.norm1.weight"``, ...).

    Returns
    -------
    dict
        ``decoder``: the plugin in eval mode with the weights (float32);
        ``options``: ``("cosyvoice_lm", options)`` rebuilding it through the registry;
        ``consumed``: sorted names loaded; ``skipped``: sorted names given but not used
        (none in a release checkpoint: report them as not placed).

    Raises
    ------
    ConfigError
        A config field the plugin does not support.
    InputError
        A tensor missing or of the wrong shape (named, with the expected shape).
    """
    options = speech_decoder_options(config)
    decoder = build("decoder", PLUGIN, options)
    expected = decoder.state_dict()  # shares storage with the parameters
    for name, target in expected.items():  # one tensor in memory at a time (lazy mappings)
        if name not in tensors:
            hint = " (strip the 'speech_decoder.' prefix)" if f"speech_decoder.{name}" in tensors else ""
            raise InputError(f"Missing tensor speech_decoder.{name}, expected shape {list(target.shape)}{hint}.")
        got = tensors[name]
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(target.shape):
            shape = list(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            raise InputError(f"Tensor speech_decoder.{name} has shape {shape}, expected {list(target.shape)} "
                             f"from the config; the checkpoint and config.json do not match.")
        if not torch.is_floating_point(got) or not torch.isfinite(got).all():
            raise InputError(f"Tensor speech_decoder.{name} must hold finite floating-point values.")
        with torch.no_grad():
            target.copy_(got)
    decoder.eval()
    return {
        "decoder": decoder,
        "options": (PLUGIN, options),
        "consumed": sorted(expected),
        "skipped": sorted(name for name in tensors if name not in expected),
    }
