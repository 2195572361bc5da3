"""TASLM model: LoRA counts, frozen base, errors, KV-cache generation, learning + scoring, save/load."""

import pytest
import torch

from _taslm_fixtures import SENTENCES, make_tiny_llm
from taste_toolkit.errors import ConfigError, InputError
from taste_toolkit.taslm.codebook import SpeechCodebook
from taste_toolkit.taslm.generation import GenerationConfig, continue_speech, generate
from taste_toolkit.taslm.model import TaslmModel, build_taslm
from taste_toolkit.taslm.scoring import builtin_two_choice_sets, score, two_choice_accuracy

LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
HEADS = {"taste_token": {"num_quantizers": 2, "codebook_size": 8},
         "taste_embedding": {"num_quantizers": 2, "codebook_size": 8}}


@pytest.fixture(scope="module")
def llm_dir(tmp_path_factory):
    return make_tiny_llm(tmp_path_factory.mktemp("tiny_llm"))


@pytest.fixture(scope="module")
def codebook():
    torch.manual_seed(0)
    return SpeechCodebook(torch.randn(2, 8, 4))


def make(llm_dir, codebook, head="taste_token", **kw):
    torch.manual_seed(0)
    return build_taslm(llm_dir, codebook, head, HEADS[head], lora=kw.pop("lora", LORA), **kw)


def records(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"id": str(i), "spk_id": str(i % 3), "words": s.split(),
             "codes": torch.randint(0, 8, (len(s.split()), 2), generator=g)} for i, s in enumerate(SENTENCES)]


def train(model, steps=60, lr=2e-2):
    """A few full-batch steps on the six sentences; returns (first loss, last loss)."""
    recs = records()
    batch = model.bridge.collate([model.bridge.build(r["words"], r["codes"]) for r in recs])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        out = model(batch)
        losses.append(float(out.loss.detach()))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    model.eval()
    return losses[0], float(model(batch).loss.detach())


def test_lora_counts_and_frozen_base(llm_dir, codebook):
    model = make(llm_dir, codebook)
    counts = model.parameter_counts()
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    cfg = model.backbone.get_base_model().config
    kv = cfg.hidden_size * cfg.num_key_value_heads // cfg.num_attention_heads
    assert lora == cfg.num_hidden_layers * 4 * ((cfg.hidden_size * 2) + (cfg.hidden_size + kv))
    extra = sum(p.numel() for m in (model.fusion, model.head) for p in m.parameters())
    assert counts["trainable"] == lora + extra + model.text_pad.numel() + model.speech_pad.numel()
    frozen = [n for n, p in model.backbone.named_parameters() if "lora_" not in n]
    assert frozen and all(not dict(model.backbone.named_parameters())[n].requires_grad for n in frozen)
    assert counts["total"] > counts["trainable"]


def test_bad_configurations(llm_dir, codebook):
    with pytest.raises(ConfigError, match="not found.*Linear layers are: .*q_proj"):
        make(llm_dir, codebook, lora={**LORA, "target_modules": ["c_attn"]})
    with pytest.raises(ConfigError, match="RVQ has 2 layers x 8 codes"):
        build_taslm(llm_dir, codebook, "taste_token", {"num_quantizers": 4, "codebook_size": 8}, lora=LORA)
    with pytest.raises(ConfigError, match="embedding_dim=6"):
        build_taslm(llm_dir, codebook, "taste_embedding", {**HEADS["taste_embedding"], "embedding_dim": 6})


@pytest.mark.parametrize("head,delay", [("taste_token", 1), ("taste_embedding", 1), ("taste_token", 2)])
def test_kv_cache_generation_equals_recomputation(llm_dir, codebook, head, delay):
    model = make(llm_dir, codebook, head, delay=delay)
    train(model, steps=40)
    with torch.no_grad():  # move off the near-text-only init so speech matters
        model.fusion.logits.copy_(torch.tensor([0.0, 0.0]))
    rec = records()[0]
    cfg = GenerationConfig(max_new_words=6, min_new_words=6, max_new_tokens=40)
    fast = generate(model, rec["words"][:3], rec["codes"][:3], cfg, use_cache=True)
    slow = generate(model, rec["words"][:3], rec["codes"][:3], cfg, use_cache=False)
    assert fast.new_token_ids == slow.new_token_ids and torch.equal(fast.codes, slow.codes)
    assert len(fast.words) == fast.codes.shape[0] >= 4 and len(fast.words) <= 3 + 6
    assert fast.stop_reason in ("max_new_words", "max_new_tokens") and fast.steps > 6
    assert torch.equal(fast.codes[:3], rec["codes"][:3])  # the prompt's tokens are kept, not re-predicted
    sampled = generate(model, rec["words"][:3], rec["codes"][:3],
                       GenerationConfig(max_new_words=6, top_p=0.9, temperature=1.0, repetition_penalty=1.2,
                                        taste_sample=True, seed=3))
    assert sampled.codes.shape[0] == len(sampled.words)


def test_training_lowers_loss_and_scoring_prefers_truth(llm_dir, codebook):
    model = make(llm_dir, codebook, lora={**LORA, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj",
                                                                     "gate_proj", "up_proj", "down_proj"]})
    recs = records()
    first, last = train(model)
    assert last < 0.8 * first
    sets = builtin_two_choice_sets(recs, seed=0)
    assert len(sets["token_mismatch"]) == len(sets["shuffled_ending"]) == len(recs)
    for name, pairs in sets.items():
        assert two_choice_accuracy(model, pairs)["accuracy"] >= 0.8, name
    # Scores restricted to a continuation ignore the prompt words.
    r = recs[0]
    full, cont = score(model, [(r["words"], r["codes"], 0), (r["words"], r["codes"], 3)])
    assert cont["total"] > full["total"] and cont["text"] < 0


def test_save_load_round_trip(llm_dir, codebook, tmp_path):
    model = make(llm_dir, codebook, "taste_embedding")
    with torch.no_grad():
        model.head.mu.weight.add_(0.5)
        model.speech_pad.add_(1.0)
    model.save_pretrained(tmp_path / "taslm")
    loaded = TaslmModel.from_pretrained(str(tmp_path / "taslm"))
    r = records()[1]
    model.eval()
    a, b = score(model, [(r["words"], r["codes"], 0)]), score(loaded, [(r["words"], r["codes"], 0)])
    assert a[0]["total"] == pytest.approx(b[0]["total"], rel=1e-5)


def test_bad_prompts(llm_dir, codebook):
    model = make(llm_dir, codebook)
    with pytest.raises(InputError, match="Empty prompt"):
        generate(model, [], torch.zeros(0, 2, dtype=torch.long))
    with pytest.raises(InputError, match="no transcript and no ASR"):
        continue_speech(model, tokenizer=None, audio=torch.zeros(16000), sample_rate=16000)
    with pytest.raises(InputError, match="Empty transcript"):
        continue_speech(model, tokenizer=None, audio=torch.zeros(16000), sample_rate=16000, transcript="  ")
    with pytest.raises(ConfigError, match="min_new_words"):
        generate(model, ["the"], torch.zeros(1, 2, dtype=torch.long), GenerationConfig(max_new_words=2, min_new_words=3))
