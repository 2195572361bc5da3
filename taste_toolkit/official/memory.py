"""Peak-memory estimate of an import, from tensor sizes alone (no weights needed).

Model of :func:`~taste_toolkit.official.importer.import_official`:

* tokenizer stage: the ``audio_tower.*`` and ``speech_decoder.*`` tensors as stored
  (read lazily, at worst all held while a module loads them), the modules in float32,
  and one float32 copy while safetensors serializes them: ``stored + 2 * fp32``;
  the verification reload (file + modules, ``2 * fp32``) comes after and is not larger;
* TASLM stage (after the tokenizer is freed): the backbone is streamed (two copies of
  its largest tensor); the verification reload holds the backbone in the run dtype
  plus the adapters: ``numel * bytes(dtype)``;
* plus :data:`BASELINE` for Python, torch and transformers.

:func:`release_estimate` applies it to the real release's sizes, counted from the
architectures built on the ``meta`` device (Llama-3.2-1B, Whisper distil-large-v3,
the ``cosyvoice_lm`` decoder of the release's config).
"""

import torch

BASELINE = 1024 * 2 ** 20  # measured: ~0.85 GiB RSS after importing the tiny fixture
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def stage_bytes(tok_stored, tok_numel, llm_numel, largest_llm_tensor, llm_dtype="float32",
                parts=("tokenizer", "taslm")):
    """``{"tokenizer", "taslm", "peak"}`` bytes of the two stages and the overall peak."""
    tok = tok_stored + 2 * 4 * tok_numel if "tokenizer" in parts else 0
    lm = max(2 * largest_llm_tensor, llm_numel * BYTES.get(llm_dtype, 4)) if "taslm" in parts else 0
    return {"tokenizer": tok, "taslm": lm, "peak": BASELINE + max(tok, lm)}


def estimate_peak_bytes(ckpt, parts=("tokenizer", "taslm"), llm_dtype="float32"):
    """Estimated peak bytes of importing ``ckpt`` (a :class:`~taste_toolkit.official.reader.Checkpoint`)."""
    tok = [n for n in ckpt.location if n.startswith(("audio_tower.", "speech_decoder."))]
    lm = ckpt.names("spoken_lm.")
    return stage_bytes(sum(ckpt.nbytes(n) for n in tok), sum(ckpt.numel(n) for n in tok),
                       sum(ckpt.numel(n) for n in lm), max([ckpt.nbytes(n) for n in lm] or [0]), llm_dtype,
                       parts)["peak"]


def _numel(module):
    return sum(t.numel() for t in module.state_dict().values())


def release_sizes():
    """Parameter counts of the real release's parts (built on the meta device)."""
    from transformers import LlamaConfig, LlamaForCausalLM, WhisperConfig, WhisperModel

    llama = LlamaConfig(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                        num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=True)
    whisper = WhisperConfig(vocab_size=51866, num_mel_bins=128, d_model=1280, encoder_layers=32, decoder_layers=2,
                            encoder_attention_heads=20, decoder_attention_heads=20, encoder_ffn_dim=5120,
                            decoder_ffn_dim=5120)
    with torch.device("meta"):
        lm = LlamaForCausalLM(llama)
        tower = WhisperModel(whisper)
    per_layer = sum(64 * (i + o) for i, o in [(2048, 2048), (2048, 512), (2048, 512), (2048, 2048), (2048, 8192),
                                              (2048, 8192), (8192, 2048)])
    sizes = {"llm": _numel(lm) - 128256 * 2048, "lora": 16 * per_layer, "largest_llm_tensor": 128256 * 2048,
             "whisper": _numel(tower), "rvq": 2 * 4 * 512 * 256 + 2 * 1280 * 256 + 1280}
    try:
        from taste_toolkit.official.speech_decoder import speech_decoder_options
        from taste_toolkit.registry import build

        options = speech_decoder_options({"audio_encoder_input_size": 1280, "fuse_encoded_audio_text_type":
                                          "weighted_sum", "fuse_encoded_audio_text_kwargs": {"normalize": False}})
        with torch.device("meta"):
            sizes["speech_decoder"] = _numel(build("decoder", "cosyvoice_lm", options))
    except Exception:  # the decoder plugin's options changed: CosyVoice-300M LM order of magnitude
        sizes["speech_decoder"] = 150_000_000
    return sizes


def release_estimate(llm_dtype="float32", stored_bytes=4):
    """Estimated peak of importing ``MediaTek-Research/Llama-1B-TASTE-V0`` (its stage-1 tensors
    stored with ``stored_bytes`` per value: 4 = float32, the worst case).

    Returns
    -------
    dict
        Sizes (values), stage bytes and the peak in bytes and GiB.
    """
    s = release_sizes()
    tok = s["whisper"] + s["rvq"] + s["speech_decoder"]
    stages = stage_bytes(tok * stored_bytes, tok, s["llm"] + s["lora"], 2 * s["largest_llm_tensor"], llm_dtype)
    return {"sizes": s, **stages, "peak_gib": round(stages["peak"] / 2 ** 30, 2)}
