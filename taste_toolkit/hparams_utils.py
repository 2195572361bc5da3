"""Helpers called from hyperpyyaml files (``!apply:taste_toolkit.hparams_utils.*``)."""

import logging

from taste_toolkit.registry import build

logger = logging.getLogger(__name__)


def planned_vocab_size(text_tokenizer):
    """Vocabulary size to size embeddings with, known before a tokenizer is fitted.

    A fitted tokenizer reports its real size; an unfitted one (sentencepiece
    before training) reports the size it was asked for, which is an upper bound.
    """
    planned = getattr(text_tokenizer, "vocab_size_target", None)
    if planned is not None and text_tokenizer.needs_fit:
        try:
            return max(text_tokenizer.vocab_size, planned)
        except Exception:  # not fitted yet: the requested size is an upper bound
            return planned
    return text_tokenizer.vocab_size


def build_quantizer(name, blocks, input_dim):
    """Build the quantizer; text-only models (``input_dim`` 0) get the identity.

    A text-only model has no speech vectors to quantize, so whatever quantizer
    the YAML names is replaced by ``identity`` (and logged) instead of failing.
    """
    if input_dim == 0:
        if name != "identity":
            logger.info("Aggregator gives no speech vectors: quantizer %r replaced by identity.", name)
        return build("quantizer", "identity", {"input_dim": 0})
    return build("quantizer", name, blocks=blocks, input_dim=input_dim)
