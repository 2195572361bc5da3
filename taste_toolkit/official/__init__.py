"""Import of the official TASTE release (``MediaTek-Research/Llama-1B-TASTE-V0``).

One module per part of the release's ``TasteForCausalLM``; each maps the part's
config fields and tensors onto a registered toolkit plugin (registry name +
plain-data options + state dict), so imported folders rebuild without the
official code. Loading never runs code from the release.
"""
