"""Import of the official TASTE release (``MediaTek-Research/Llama-1B-TASTE-V0``).

One module per part of the release's ``TasteForCausalLM``; each maps the part's
config fields and tensors onto a registered toolkit plugin (registry name +
plain-data options + state dict), so imported folders rebuild without the
official code. Loading never runs code from the release.

Entry point: :func:`taste_toolkit.official.importer.import_official` (CLI ``taste
import-official SRC OUT``), which composes :mod:`.audio_tower`, :mod:`.speech_decoder`
and :mod:`.spoken_lm` over the lazily read shards of :mod:`.reader`.
"""
