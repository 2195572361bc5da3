"""TASLM: a spoken LM on top of the TASTE tokenizer (text LLM + LoRA + TASTE heads).

* :mod:`.backbone` loads any transformers causal LM (hub id or local folder) and adds LoRA.
* :mod:`.bridge` maps the tokenizer's words onto the LLM's tokens (one TASTE token per
  word, on the word's first LLM token, delayed by ``delay`` words).
* :mod:`.codebook` holds the frozen RVQ codebooks (code sums in, re-quantization out).
* :mod:`.model` fuses text and speech at each position and computes the losses.
* :mod:`.generation` joint text + TASTE generation with a KV cache.
* :mod:`.scoring` likelihood scoring and two-choice evaluations.
"""
