"""Whisper-initialized query path of the ``cross_attention`` aggregator: geometry, prompt, alignment heads.

The aggregator copies a Whisper decoder (token and position embeddings, the first
``num_layers`` layers) and prepends Whisper's prompt to the text queries. Three
things may not fit, and each has its own answer here instead of one shape error:

* the **encoder's width** differs from the decoder's (a third-party encoder):
  the decoder keeps Whisper's width and the aggregator adds key/value input
  projections (:func:`whisper_geometry` returns the width to use);
* the **text vocabulary** is not Whisper's (sentencepiece): the query embedding
  is random-initialized and no Whisper prompt is used (:func:`same_vocabulary`);
* the **language**: a multilingual Whisper gets ``<|lang|> <|task|>`` in its
  prompt, an English-only one (``tiny.en``) has none (:func:`whisper_prompt_ids`).
"""

import json
import os

from taste_toolkit.errors import ConfigError, MissingResourceError


def whisper_decoder_config(source):
    """The ``WhisperConfig`` of ``source`` (hub id, folder, CTranslate2 folder or ``builtin:``).

    Reads ``config.json`` only: no weights are loaded and no random number is drawn.
    """
    from transformers import WhisperConfig

    from taste_toolkit.pretrained.ctranslate2_whisper import resolve_whisper_source

    try:
        return WhisperConfig.from_pretrained(resolve_whisper_source(source))
    except (OSError, ValueError) as exc:
        raise MissingResourceError(
            f"init_from_whisper: cannot read the Whisper config of {source!r} ({exc}). Give a local Whisper "
            "folder, 'builtin:tiny.en' (offline), a hub id in the hub cache, or init_from_whisper: '' for a "
            "random decoder."
        ) from exc


def whisper_geometry(source, config, d_model, num_layers, num_heads, ffn_dim, max_positions):
    """Check the aggregator's geometry against the Whisper decoder's; return its width and FFN size.

    Arguments
    ---------
    source : str
        Whisper source, for messages.
    config : transformers.WhisperConfig
        Its config (:func:`whisper_decoder_config`).
    d_model, num_layers, num_heads, ffn_dim, max_positions : int
        The aggregator's options (``d_model`` / ``ffn_dim`` 0 = follow Whisper).

    Returns
    -------
    d_model, ffn_dim : int
        Whisper's: the decoder keeps its width whatever the encoder's (key/value
        input projections adapt the encoder's taps).

    Raises
    ------
    ConfigError
        An option that contradicts the Whisper decoder; the message gives the value to set.
    """
    want = {"d_model": config.d_model, "num_heads": config.decoder_attention_heads,
            "ffn_dim": config.decoder_ffn_dim, "max_positions": config.max_target_positions}
    asked = {"d_model": d_model or config.d_model, "num_heads": num_heads,
             "ffn_dim": ffn_dim or config.decoder_ffn_dim, "max_positions": max_positions}
    wrong = {k: v for k, v in asked.items() if v != want[k]}
    if num_layers > config.decoder_layers:
        raise ConfigError(f"init_from_whisper: {source!r} has {config.decoder_layers} decoder layers, asked "
                          f"num_layers={num_layers}: set num_layers <= {config.decoder_layers}.")
    if wrong:
        fix = ", ".join(f"{k}: {want[k]}" for k in wrong)
        aligner = ""
        if "d_model" in wrong:  # the Whisper-exact aligners ask for the encoder's key width
            aligner = (" If this is the aligned_spans aggregator or attention supervision's aligner (d_model = the "
                       "encoder's key width): they read Whisper's alignment heads over the keys, so they need the "
                       f"encoder of this Whisper (width {want['d_model']}); with another encoder set "
                       "attention_supervision_weight: 0 and use another aggregator.")
        raise ConfigError(
            f"init_from_whisper: the Whisper decoder of {source!r} has d_model {want['d_model']}, "
            f"{want['num_heads']} heads, FFN {want['ffn_dim']}, {want['max_positions']} positions, but the aggregator "
            f"asks {', '.join(f'{k}={v}' for k, v in wrong.items())}. Set {fix} (d_model: 0 and ffn_dim: 0 follow "
            "Whisper; an encoder of another width gets key/value input projections), or init_from_whisper: '' for "
            "a random decoder of your own geometry." + aligner
        )
    return config.d_model, config.decoder_ffn_dim


def same_vocabulary(vocab_size, config):
    """True when the text vocabulary is Whisper's (its ids index Whisper's token embeddings)."""
    return int(vocab_size) == int(config.vocab_size)


def whisper_prompt_ids(source, language="", task="transcribe"):
    """Ids of Whisper's transcription prompt (no timestamps) for ``language`` and ``task``.

    Multilingual: ``[sot, <|lang|>, <|task|>, notimestamps]`` (``""`` = English, the
    paper's ``[50258, 50259, 50360, 50364]``); English-only: ``[sot, notimestamps]``.

    Raises
    ------
    MissingResourceError
        ``source`` has no Whisper tokenizer files.
    ConfigError
        A language Whisper has no token for, or an unknown task.
    """
    from transformers import WhisperTokenizerFast

    from taste_toolkit.plugins.text_tokenizer.whisper import is_multilingual_vocabulary, whisper_prompt_tokens
    from taste_toolkit.pretrained.ctranslate2_whisper import resolve_whisper_source

    tok = WhisperTokenizerFast.from_pretrained(resolve_whisper_source(source))
    vocab = tok.get_vocab()
    if "<|notimestamps|>" not in vocab:
        raise MissingResourceError(
            f"init_from_whisper: {source!r} has no Whisper tokenizer files (vocab.json/tokenizer.json), "
            "needed for the decoder prompt. Save the tokenizer next to the model (WhisperTokenizer.save_pretrained)."
        )
    tokens = whisper_prompt_tokens(is_multilingual_vocabulary(vocab["<|endoftext|>"]), language, task)
    missing = [t for t in tokens if t not in vocab]
    if missing:
        raise ConfigError(f"init_from_whisper: the Whisper of {source!r} has no {missing[0]} token (language "
                          f"{language!r}): choose a language Whisper knows.")
    return [vocab[t] for t in tokens]


def whisper_alignment_heads(source, num_layers):
    """Whisper's ``alignment_heads`` (layer, head) within the first ``num_layers`` layers."""
    from taste_toolkit.pretrained.ctranslate2_whisper import resolve_whisper_source

    path = os.path.join(resolve_whisper_source(source), "generation_config.json")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        heads = json.load(f).get("alignment_heads") or []
    return [[int(l), int(h)] for l, h in heads if l < num_layers]
