"""Tiny checkpoints in the official release's key layout (for tests/test_official_import.py).

* :func:`make_fake_whisper_tokenizer` -- a byte-level tokenizer with Whisper
  large-v3's 51866 ids and its special tokens at their ids (the real one needs the
  hub; the fixture's inputs already hold real ids).
* :func:`make_tiny_release` -- ``config.json`` + ``model.safetensors`` +
  ``llama_tokenizer/``: a random RVQ (``audio_tower.vq.rvq.*``) and a random spoken LM
  (``spoken_lm.*``: tiny Llama wrapped by peft LoRA exactly as the release is, its
  bridge with small audio dims instead of the release's hard-coded 1280).
"""

import json
import os

import torch

from _taslm_fixtures import make_tiny_llm

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_fake_whisper_tokenizer(folder):
    """A byte-level BPE with no merges, 51866 ids, Whisper large-v3's special tokens at 50257..51865."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel

    vocab = {c: i for i, c in enumerate(sorted(ByteLevel.alphabet()))}
    for i in range(len(vocab), 50257):
        vocab[f"<filler{i}>"] = i
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    langs = ["<|en|>"] + [f"<|lang{i}|>" for i in range(1, 100)]
    special = ["<|endoftext|>", "<|startoftranscript|>", *langs, "<|translate|>", "<|transcribe|>",
               "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>"]
    tok.add_special_tokens(special + [f"<|{i * 0.02:.2f}|>" for i in range(1501)])
    os.makedirs(folder, exist_ok=True)
    tok.save(os.path.join(folder, "tokenizer.json"))
    return str(folder)


def make_tiny_release(folder, head="continue_latent_linear_last", seed=0, R=4, K=16, d=8, D=24, lora_r=4,
                      lora_alpha=8):
    """Write a tiny release-layout checkpoint; returns ``{"folder", "tensors", "config"}``.

    ``tensors`` holds every tensor written (the raw material of the reference math).
    """
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, LlamaForCausalLM

    os.makedirs(folder, exist_ok=True)
    llm_dir = os.path.join(folder, "llama_tokenizer")
    make_tiny_llm(llm_dir, hidden=32, layers=2, seed=seed)
    tok = AutoTokenizer.from_pretrained(llm_dir)
    llm = LlamaForCausalLM.from_pretrained(llm_dir)
    for f in os.listdir(llm_dir):  # llama_tokenizer/ holds tokenizer files only, as in the release
        if f.endswith(".safetensors") or f in ("config.json", "generation_config.json"):
            os.remove(os.path.join(llm_dir, f))
    g = torch.Generator().manual_seed(seed)
    peft = get_peft_model(llm, LoraConfig(r=lora_r, lora_alpha=lora_alpha, target_modules=LORA_TARGETS,
                                          lora_dropout=0.05, bias="none", task_type="CAUSAL_LM"))
    tensors = {}
    for name, value in peft.state_dict().items():
        if "lora_" in name:  # peft starts B at zero: draw both so the adapters matter
            value = torch.randn(value.shape, generator=g) * 0.2
        tensors["spoken_lm.language_model." + name] = value.to(torch.bfloat16)
    H = llm.config.hidden_size
    rnd = lambda *shape, s=1.0: torch.randn(*shape, generator=g) * s  # noqa: E731
    for r in range(R):
        tensors[f"audio_tower.vq.rvq.layers.{r}._codebook.embed"] = rnd(1, K, d, s=1.0 / (r + 1))
        tensors[f"audio_tower.vq.rvq.layers.{r}._codebook.embed_avg"] = rnd(1, K, d)
        tensors[f"audio_tower.vq.rvq.layers.{r}._codebook.cluster_size"] = torch.ones(1, K)
        tensors[f"audio_tower.vq.rvq.layers.{r}._codebook.initted"] = torch.ones(1)
    tensors["audio_tower.vq.rvq.project_in.weight"] = rnd(d, D, s=D ** -0.5)
    tensors["audio_tower.vq.rvq.project_in.bias"] = rnd(d, s=0.1)
    tensors["audio_tower.vq.rvq.project_out.weight"] = rnd(D, d, s=d ** -0.5)
    tensors["audio_tower.vq.rvq.project_out.bias"] = rnd(D, s=0.1)
    tensors["audio_tower.vq.rvq.mlps.0.proj_in.weight"] = rnd(d, 2 * d)
    sl = "spoken_lm."
    tensors[sl + "fuse_for_bridge_in_llm.linear.weight"] = rnd(H, D, s=D ** -0.5)
    tensors[sl + "fuse_for_bridge_in_llm.linear.bias"] = rnd(H, s=0.1)
    tensors[sl + "fuse_for_bridge_in_llm.weights"] = torch.tensor([-0.3, 0.6])  # [audio, text]
    tensors[sl + "pad_text_unit_embed"] = rnd(H, s=0.5)
    tensors[sl + "pad_audio_unit_embed"] = rnd(D, s=0.5)
    if head == "continue_latent_linear_last":
        tensors[sl + "extract_for_bridge_out_llm.fc_mu.weight"] = rnd(d, H, s=H ** -0.5)
        tensors[sl + "extract_for_bridge_out_llm.fc_mu.bias"] = rnd(d, s=0.1)
        tensors[sl + "extract_for_bridge_out_llm.b_logvar"] = rnd(d, s=0.5)
    else:
        tensors[sl + "extract_for_bridge_out_llm.linear.weight"] = rnd(R * K, H, s=H ** -0.5)
        tensors[sl + "extract_for_bridge_out_llm.linear.bias"] = rnd(R * K, s=0.1)
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(folder, "model.safetensors"))
    text_config = {**llm.config.to_dict(), "_name_or_path": "llama_tiny"}
    config = {
        "architectures": ["TasteForCausalLM"], "model_type": "taste",
        "audio_tower_config": {"kwargs_for_quantizer": {"dim": D, "codebook_dim": d, "codebook_size": K,
                                                        "num_quantizers": R}},
        "spoken_lm_config": {
            "delay": 1, "delay_level": "word", "audio_embed_conv_mode": "fill_forward",
            "in_llm_module": "weighted_sum", "out_llm_module": head, "sos_id": tok.bos_token_id,
            "loss_weights": "0.5-0.5", "use_lora": True,
            "kwargs_for_lora": {"lora_model_dir": None, "lora_r": lora_r, "lora_alpha": lora_alpha,
                                "lora_dropout": 0.05, "lora_target_linear": True, "lora_target_modules": None,
                                "lora_fan_in_fan_out": None, "lora_modules_to_save": None}},
        "text_config": text_config,
    }
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    return {"folder": str(folder), "tensors": tensors, "config": config, "tokenizer": tok}
