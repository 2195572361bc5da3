"""Helpers shared by the TASLM tests: a tiny Llama + BPE tokenizer saved like a hub model."""

import torch

SENTENCES = [
    "the photographer waited near a river",
    "a small dog carried the yellow basket",
    "my teacher painted an enormous elephant",
    "the baker found a wooden violin inside the library",
    "their neighbor watched the quiet river again",
    "the cat slept beside the warm kitchen",
]


def make_tiny_llm(folder, vocab_size=120, hidden=32, layers=2, seed=0):
    """Random-init tiny ``LlamaForCausalLM`` + a small BPE tokenizer saved in ``folder``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from taste_toolkit.training.text_lm import train_bpe_tokenizer

    tok = train_bpe_tokenizer(SENTENCES * 5, vocab_size, str(folder))
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=128, tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(str(folder))
    return str(folder)
