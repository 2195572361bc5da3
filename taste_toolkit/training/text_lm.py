"""Offline default TASLM backbone: a small Llama-architecture text LM trained here.

No pretrained LLM can be downloaded on the project's machines, so the embedded
TASLM recipe first trains a small ``LlamaForCausalLM`` (GQA, RoPE, RMSNorm, tied
embeddings: Llama-3.2's architecture at toy size) on text, with its own BPE
tokenizer (``tokenizers`` BPE with a ``▁`` word-start marker, wrapped as a
transformers fast tokenizer), and saves both with ``save_pretrained``: the folder
then loads like any hub LLM (``AutoModelForCausalLM`` / ``AutoTokenizer``), and
TASLM adapts it with LoRA exactly as it would adapt Llama-3.2-1B.

Training text: the training transcripts plus ``extra_sentences`` sentences drawn
from the embedded corpus's template grammar
(:func:`taste_toolkit.data.synthetic_corpus.make_sentence`, seed
``sentence_seed``); held-out sentences (dev/test transcripts) are removed from it.
The folder is reused when its ``text_lm_done.json`` records the same options and
data.
"""

import json
import logging
import math
import os
import time

import numpy as np
import torch
from tqdm import tqdm

from taste_toolkit.errors import InputError
from taste_toolkit.utils import atomic_write, stable_hash

logger = logging.getLogger(__name__)

DONE_FILE = "text_lm_done.json"

DEFAULTS = dict(vocab_size=512, hidden_size=128, intermediate_size=344, num_layers=4, num_heads=4, num_kv_heads=2,
                max_positions=128, extra_sentences=10000, sentence_seed=4321, steps=600, batch_size=32, lr=3e-3,
                warmup=50, seed=0)


def _normalize(text):
    return " ".join(text.lower().split())


def grammar_sentences(n, seed, exclude=()):
    """``n`` sentences from the embedded corpus grammar, without any in ``exclude``."""
    from taste_toolkit.data.synthetic_corpus import make_sentence

    rng = np.random.default_rng(seed)
    excluded = {_normalize(t) for t in exclude}
    out = []
    while len(out) < n:
        s = " ".join(make_sentence(rng))
        if s not in excluded:
            out.append(s)
    return out


def train_bpe_tokenizer(texts, vocab_size, folder):
    """Fit a BPE tokenizer with ``▁`` word starts and save it as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>")
    fast.save_pretrained(folder)
    return fast


def _batches(seqs, batch_size, rng, pad_id):
    order = rng.permutation(len(seqs))
    for s in range(0, len(order) - batch_size + 1, batch_size):
        rows = [seqs[i] for i in order[s:s + batch_size]]
        n = max(len(r) for r in rows)
        ids = torch.full((len(rows), n), pad_id, dtype=torch.long)
        labels = torch.full((len(rows), n), -100, dtype=torch.long)
        for b, r in enumerate(rows):
            ids[b, : len(r)] = torch.tensor(r)
            labels[b, : len(r)] = torch.tensor(r)
        yield ids, labels, (ids != pad_id) | (labels != -100)


@torch.no_grad()
def perplexity(model, seqs, pad_id, batch_size=64):
    """Token perplexity of ``seqs`` (BOS ... EOS id lists); every token after BOS is predicted."""
    model.eval()
    nll, count = 0.0, 0
    for s in range(0, len(seqs), batch_size):
        rows = seqs[s:s + batch_size]
        n = max(len(r) for r in rows)
        ids = torch.full((len(rows), n), pad_id, dtype=torch.long)
        labels = torch.full((len(rows), n), -100, dtype=torch.long)
        for b, r in enumerate(rows):
            ids[b, : len(r)] = torch.tensor(r)
            labels[b, : len(r)] = torch.tensor(r)
        logits = model(input_ids=ids, attention_mask=(labels != -100).long()).logits[:, :-1].float()
        tgt = labels[:, 1:]
        nll += float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), tgt.flatten(), ignore_index=-100,
                                                       reduction="sum"))
        count += int((tgt != -100).sum())
    return math.exp(nll / max(count, 1))


def ensure_text_lm(folder, train_texts, heldout_texts=(), **options):
    """Train (or reuse) the small Llama text LM in ``folder``; returns ``folder``.

    Arguments
    ---------
    folder : str
        Output folder (``config.json``, ``model.safetensors``, tokenizer files).
    train_texts : list of str
        Training transcripts (always used).
    heldout_texts : list of str
        Held-out transcripts: excluded from the grammar sentences and used for the
        held-out perplexity recorded in ``text_lm_done.json``.
    **options
        Overrides of :data:`DEFAULTS` (sizes, steps, learning rate, extra sentences).
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    from taste_toolkit.taslm.bridge import WordBridge

    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise InputError(f"Unknown text_lm option(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}.")
    opts = {**DEFAULTS, **options}
    train_texts = [_normalize(t) for t in train_texts if t and t.strip()]
    heldout = [_normalize(t) for t in heldout_texts if t and t.strip()]
    if not train_texts:
        raise InputError("No training transcript for the text LM.")
    key = stable_hash([opts, train_texts, heldout])
    done = os.path.join(folder, DONE_FILE)
    if os.path.exists(done):
        with open(done) as f:
            if json.load(f).get("key") == key:
                return folder
    os.makedirs(folder, exist_ok=True)
    start = time.time()
    texts = train_texts + grammar_sentences(opts["extra_sentences"], opts["sentence_seed"], exclude=heldout)
    torch.manual_seed(opts["seed"])
    tok = train_bpe_tokenizer(texts, opts["vocab_size"], folder)
    bridge = WordBridge(tok, num_quantizers=1)
    seqs = [[bridge.bos_id] + bridge.encode_words(t.split())[0] + [bridge.eos_id] for t in texts]
    held = [[bridge.bos_id] + bridge.encode_words(t.split())[0] + [bridge.eos_id] for t in heldout]
    config = LlamaConfig(vocab_size=len(tok), hidden_size=opts["hidden_size"],
                         intermediate_size=opts["intermediate_size"], num_hidden_layers=opts["num_layers"],
                         num_attention_heads=opts["num_heads"], num_key_value_heads=opts["num_kv_heads"],
                         max_position_embeddings=opts["max_positions"], tie_word_embeddings=True,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(config)
    opt = torch.optim.AdamW(model.parameters(), lr=opts["lr"], weight_decay=0.01)
    steps, warmup = opts["steps"], opts["warmup"]
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    rng = np.random.default_rng(opts["seed"])
    model.train()
    step, bar = 0, tqdm(total=steps, desc="text LM")
    while step < steps:
        for ids, labels, mask in _batches(seqs, opts["batch_size"], rng, tok.pad_token_id):
            loss = model(input_ids=ids, attention_mask=mask.long(), labels=labels).loss
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss):.3f}")
            if step >= steps:
                break
    bar.close()
    model.eval()
    model.save_pretrained(folder)
    words = {w for t in texts for w in t.split()}
    report = {
        "key": key, "options": opts, "parameters": sum(p.numel() for p in model.parameters()),
        "training_sentences": len(texts), "vocab_size": len(tok),
        "multi_token_word_fraction": round(sum(len(bridge.word_tokens(w)) > 1 for w in words) / len(words), 3),
        "heldout_perplexity": round(perplexity(model, held, tok.pad_token_id), 3) if held else None,
        "seconds": round(time.time() - start, 1),
    }
    with atomic_write(done) as f:
        json.dump(report, f, indent=2)
    logger.info("Text LM trained in %.0f s: %s", report["seconds"], report)
    return folder
