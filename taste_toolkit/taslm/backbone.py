"""The TASLM backbone: any transformers causal LM, frozen, with peft LoRA adapters.

``source`` is a hub id (e.g. ``meta-llama/Llama-3.2-1B``, the official backbone,
from the local hub cache or the hub) or a local folder written by
``save_pretrained`` (e.g. the small Llama trained by
:mod:`taste_toolkit.training.text_lm` when no pretrained LLM can be downloaded).
"""

import logging
import os

import torch

from taste_toolkit.errors import ConfigError, MissingResourceError

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def load_causal_lm(source, dtype="float32"):
    """Load ``(model, tokenizer)`` from a hub id or a local folder, model frozen in eval mode.

    Raises
    ------
    MissingResourceError
        Nothing loadable at ``source`` (not a folder with a config, not in the hub cache).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype not in DTYPES:
        raise ConfigError(f"backbone dtype must be one of {sorted(DTYPES)}, got {dtype!r}.")
    if not source:
        raise ConfigError("backbone source is empty: give a hub id or a local folder.")
    local = os.path.isdir(source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=DTYPES[dtype], local_files_only=local)
    except (OSError, ValueError) as exc:
        raise MissingResourceError(
            f"Cannot load a causal LM from {source!r} ({exc}). Give a local folder written by "
            "save_pretrained or a hub id available in the local cache."
        ) from exc
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, tokenizer


def linear_module_names(model):
    """Sorted short names (last path component) of the ``nn.Linear`` modules of ``model``."""
    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)})


def add_lora(model, r=64, alpha=128, dropout=0.05, target_modules=("q_proj", "k_proj", "v_proj", "o_proj",
                                                                 "gate_proj", "up_proj", "down_proj")):
    """Wrap ``model`` with peft LoRA adapters; only the adapters train.

    Arguments
    ---------
    r, alpha, dropout : LoRA rank, scaling numerator (scale = alpha / r) and dropout.
    target_modules : list of str or "all-linear"
        Short names of the Linear layers to adapt (official: every projection of
        the decoder blocks, ``lm_head`` excluded).

    Raises
    ------
    ConfigError
        A named target module does not exist in the model (the message lists the
        Linear layers it has), or bad LoRA sizes.
    """
    from peft import LoraConfig, get_peft_model

    if r < 1 or alpha <= 0 or not 0 <= dropout < 1:
        raise ConfigError(f"LoRA needs r >= 1, alpha > 0 and dropout in [0, 1); got r={r}, alpha={alpha}, dropout={dropout}.")
    available = linear_module_names(model)
    if target_modules != "all-linear":
        targets = list(target_modules)
        missing = [t for t in targets if t not in available]
        if not targets or missing:
            raise ConfigError(
                f"LoRA target module(s) {missing or targets} not found in {type(model).__name__}; its Linear "
                f"layers are: {', '.join(available)}. Set lora target_modules to some of these (or 'all-linear')."
            )
    else:
        targets = "all-linear"
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none")
    return get_peft_model(model, config)


def parameter_counts(module):
    """``{"trainable": n, "total": n}`` parameter counts (buffers excluded)."""
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return {"trainable": int(trainable), "total": int(total)}
