"""LM-SPT (arXiv 2506.16738) as a second tokenizer family built from the toolkit's plugins.

The model lives in :mod:`taste_toolkit.models.lmspt`, its plugins under
``taste_toolkit/plugins/`` (aggregator ``downsample``, decoder ``mel_transformer``,
vocoder ``whisper_mel_griffin_lim``), training in
:mod:`taste_toolkit.training.lmspt_recipe`; this package holds the product API.
"""

from taste_toolkit.lmspt.api import DecodedFrames, LmsptTokenizer, load_tokenizer

__all__ = ["DecodedFrames", "LmsptTokenizer", "load_tokenizer"]
