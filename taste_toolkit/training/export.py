"""Export a trained recipe model as a standalone ``TasteTokenizer`` folder."""

import logging

from taste_toolkit.api import TasteTokenizer
from taste_toolkit.errors import ConfigError
from taste_toolkit.registry import build, select_block

logger = logging.getLogger(__name__)


def build_vocoder(name, blocks, units):
    """The vocoder to ship with the tokenizer, or None.

    Arguments
    ---------
    name : str
        Vocoder plugin (``vocoder_name``); empty: no vocoder.
    blocks : dict
        Per-plugin options, ``vocoder_options: {plugin_name: {...}}`` as for every
        other kind; only the block of ``name`` is used.
    units : UnitExtractor
        The fitted unit extractor the vocoder must match.

    ``griffin_lim`` is derived from the fitted unit extractor's table (no training);
    ``unit_to_spec`` is loaded from its block's ``checkpoint`` (trained by
    :func:`taste_toolkit.training.unit_vocoder.fit_unit_vocoder`) and must match ``units``;
    any other registered vocoder is built by ``registry.build(kind="vocoder", name=name,
    blocks=blocks)`` (its weights must come with it, e.g. ``unit_hifigan`` trained by
    ``train_vocoder.py``).
    """
    if not name:
        return None
    if name == "griffin_lim":
        from taste_toolkit.plugins.vocoder.griffin_lim import GriffinLimVocoder

        return GriffinLimVocoder.from_units_extractor(units, **select_block("vocoder", name, blocks or {}))
    if name == "unit_to_spec":
        from taste_toolkit.plugins.vocoder.unit_to_spec import UnitToSpecVocoder

        options = select_block("vocoder", name, blocks or {})
        checkpoint = options.pop("checkpoint", None)
        if not checkpoint:
            raise ConfigError(
                "vocoder unit_to_spec needs vocoder_options: {unit_to_spec: {checkpoint: <file>}}, the file "
                "written by taste_toolkit.training.unit_vocoder.fit_unit_vocoder during data preparation."
            )
        vocoder = UnitToSpecVocoder.from_pretrained(checkpoint, **options)
        vocoder.check_units(units)  # refuses a vocoder trained for other units
        return vocoder
    return build(kind="vocoder", name=name, blocks=blocks or {})


def export_tokenizer(hparams, folder):
    """Save the recipe's model (as currently loaded) + text tokenizer, units, speaker, vocoder."""
    vocoder = build_vocoder(hparams.get("vocoder_name", ""), hparams.get("vocoder_options", {}), hparams["units"])
    tokenizer = TasteTokenizer(hparams["model"], hparams["text_tokenizer"], hparams["units"], hparams["speaker"], vocoder)
    tokenizer.save_pretrained(folder)
    logger.info("Standalone tokenizer written to %s (fingerprint %s)", folder, tokenizer.fingerprint)
    return tokenizer
