"""The release's spoken LM imported as a toolkit TASLM matches plain-torch math on the raw tensors.

The reference below follows ../shared/docs/official-release.md (and the official
``TasteSpokenLM._prepare_single`` / ``ContinueLatentLinearLastExtract``), written
from the checkpoint's tensors alone: it shares no code with the plugins. Tiny
dims, including the audio size the release hard-codes to 1280.
"""

import math

import pytest
import torch
from _official_fixtures import make_tiny_release

from taste_toolkit.official.importer import import_official
from taste_toolkit.taslm.model import TaslmModel

WORDS = ["the", "photographer", "waited", "near", "a", "river"]
LM = "spoken_lm.language_model.base_model.model."


@pytest.fixture(scope="module", params=["continue_latent_linear_last", "linear_last"])
def imported(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    release = make_tiny_release(root / "release", head=request.param)
    report = import_official(str(root / "release"), str(root / "out"), parts=("taslm",))
    return release, report, TaslmModel.from_pretrained(str(root / "out" / "taslm"))


def _rms(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def _linear(t, name, scale):
    """Base weight + LoRA (alpha / r) * B @ A, in float32."""
    w = t[LM + name + ".base_layer.weight"].float()
    a, b = t[LM + name + ".lora_A.default.weight"].float(), t[LM + name + ".lora_B.default.weight"].float()
    return w + scale * b @ a


def reference(release, words, codes):
    """``(text logits (N, V), mu (N, d), taste logits (N, R, K) or None, z codes (N, R))`` by hand."""
    t, cfg, tok = release["tensors"], release["config"], release["tokenizer"]
    tc, sl = cfg["text_config"], cfg["spoken_lm_config"]
    scale = sl["kwargs_for_lora"]["lora_alpha"] / sl["kwargs_for_lora"]["lora_r"]
    # official process_one_sample: first word without its space, the others with one
    ids, word_ids = [], []
    for i, w in enumerate(words):
        piece = tok.encode(w if i == 0 else " " + w, add_special_tokens=False)
        ids += piece
        word_ids += [i] * len(piece)
    L, W = len(ids), len(words)
    embed = t[LM + "model.embed_tokens.weight"].float()
    books = torch.stack([t[f"audio_tower.vq.rvq.layers.{r}._codebook.embed"][0] for r in range(codes.shape[1])])
    pw, pb = t["audio_tower.vq.rvq.project_out.weight"], t["audio_tower.vq.rvq.project_out.bias"]

    def rvq_out(c):  # get_output_from_indices
        return sum(books[r][c[r]] for r in range(len(c))) @ pw.T + pb

    audio, text = [], []
    for j in range(L + 1):  # delay 1: one tail position
        if j < L:
            src = word_ids[j] - 1  # fill forward: every token of word w carries word w-1's code
            text.append(embed[ids[j]])
        else:
            src = W - 1
            text.append(t["spoken_lm.pad_text_unit_embed"])
        audio.append(rvq_out(codes[src]) if src >= 0 else t["spoken_lm.pad_audio_unit_embed"])
    w = torch.softmax(t["spoken_lm.fuse_for_bridge_in_llm.weights"], 0)  # [audio, text]
    fuse = "spoken_lm.fuse_for_bridge_in_llm.linear."
    lin_w, lin_b = t[fuse + "weight"], t[fuse + "bias"]
    fused = [w[0] * (a @ lin_w.T + lin_b) + w[1] * x for a, x in zip(audio, text)]
    x = torch.stack([embed[sl["sos_id"]]] + fused)  # the sos position is not fused
    N, H = x.shape
    nh, nkv = tc["num_attention_heads"], tc["num_key_value_heads"]
    hd = H // nh
    inv = 1.0 / tc["rope_parameters"]["rope_theta"] ** (torch.arange(0, hd, 2).float() / hd) \
        if "rope_parameters" in tc else 1.0 / tc["rope_theta"] ** (torch.arange(0, hd, 2).float() / hd)
    ang = torch.arange(N).float()[:, None] * inv[None]
    cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()
    rot = lambda v: torch.cat([-v[..., hd // 2:], v[..., :hd // 2]], -1)  # noqa: E731
    causal = torch.full((N, N), float("-inf")).triu(1)
    eps = tc["rms_norm_eps"]
    for i in range(tc["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = _rms(x, t[LM + p + "input_layernorm.weight"].float(), eps)
        q = (h @ _linear(t, p + "self_attn.q_proj", scale).T).view(N, nh, hd).transpose(0, 1)
        k = (h @ _linear(t, p + "self_attn.k_proj", scale).T).view(N, nkv, hd).transpose(0, 1)
        v = (h @ _linear(t, p + "self_attn.v_proj", scale).T).view(N, nkv, hd).transpose(0, 1)
        q, k = q * cos + rot(q) * sin, k * cos + rot(k) * sin
        k, v = k.repeat_interleave(nh // nkv, 0), v.repeat_interleave(nh // nkv, 0)
        att = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(hd) + causal, -1)
        x = x + (att @ v).transpose(0, 1).reshape(N, H) @ _linear(t, p + "self_attn.o_proj", scale).T
        h = _rms(x, t[LM + p + "post_attention_layernorm.weight"].float(), eps)
        gate, up = h @ _linear(t, p + "mlp.gate_proj", scale).T, h @ _linear(t, p + "mlp.up_proj", scale).T
        x = x + (torch.nn.functional.silu(gate) * up) @ _linear(t, p + "mlp.down_proj", scale).T
    h = _rms(x, t[LM + "model.norm.weight"].float(), eps)
    logits = h @ embed.T  # tied lm_head
    e = "spoken_lm.extract_for_bridge_out_llm."
    if e + "fc_mu.weight" in t:
        mu = h @ t[e + "fc_mu.weight"].T + t[e + "fc_mu.bias"]
        z = mu + torch.exp(0.5 * t[e + "b_logvar"])  # the release's inference: sigma added, not sampled
        res, zc = z.clone(), []
        for r in range(len(books)):  # get_indices_from_code: residual nearest neighbour, no project_in
            idx = torch.cdist(res, books[r]).argmin(-1)
            zc.append(idx)
            res = res - books[r][idx]
        return logits, mu, None, torch.stack(zc, -1)
    taste = (h @ t[e + "linear.weight"].T + t[e + "linear.bias"]).view(N, len(books), -1)
    return logits, None, taste, taste.argmax(-1)


def test_imported_taslm_matches_raw_tensor_math(imported):
    release, report, model = imported
    R = model.codebook.num_quantizers
    codes = torch.randint(0, model.codebook.codebook_size, (len(WORDS), R), generator=torch.Generator().manual_seed(3))
    ref_logits, ref_mu, ref_taste, ref_codes = reference(release, WORDS, codes)
    ex = model.bridge.build(WORDS, codes)
    assert ex.input_ids.shape[0] == ref_logits.shape[0]
    with torch.no_grad():
        hidden, logits, _ = model.run(model.embed(ex.input_ids[None], ex.is_tail[None], ex.audio_codes[None]))
        out = model.head(hidden)
    torch.testing.assert_close(logits[0].float(), ref_logits, atol=1e-4, rtol=1e-4)
    if ref_mu is not None:
        torch.testing.assert_close(out[0][0], ref_mu, atol=1e-4, rtol=1e-4)
        assert model.head.point == "mean_plus_sigma" and not model.head.normalized
    else:
        torch.testing.assert_close(out[0], ref_taste, atol=1e-4, rtol=1e-4)
    assert torch.equal(model.head.predict(out, model.codebook)[0], ref_codes)
    # TASTE labels sit where the official ones do: the word starts of words 1.. and the tail
    labelled = (ex.taste_labels[:, 0] >= 0).nonzero().flatten().tolist()
    assert len(labelled) == len(WORDS) and labelled[-1] == ex.input_ids.shape[0] - 2


def test_report_counts_every_spoken_lm_tensor(imported):
    release, report, model = imported
    sl = [n for n in release["tensors"] if n.startswith("spoken_lm.")]
    assert all(report["tensors"][n]["status"] in ("mapped", "skipped") for n in sl)
    assert report["tensors"][LM + "lm_head.weight"]["status"] == "skipped"  # tied
    assert report["taslm"]["lora_targets"] == sorted(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                      "up_proj", "down_proj"])
    counts = report["counts"]
    assert counts["total"]["tensors"] == len(release["tensors"])
    assert sum(counts[k]["tensors"] for k in ("mapped", "skipped", "not_placed")) == counts["total"]["tensors"]
    lora = [n for n, p in model.named_parameters() if "lora_" in n]
    assert lora and all(p.requires_grad for n, p in model.named_parameters() if "lora_" in n)


def test_point_predictions_are_named_and_differ(imported):
    release, _, model = imported
    if model.config["head_name"] != "taste_embedding":
        pytest.skip("token head: no Gaussian point prediction")
    hidden = torch.randn(1, 3, model.head.input_dim)
    out = model.head(hidden)
    release_codes = model.head.predict(out, model.codebook)
    model.head.point = "mean"
    try:
        mean_codes = model.head.predict(out, model.codebook)
        assert torch.equal(mean_codes, model.codebook.quantize(out[0]))
        assert torch.equal(release_codes, model.codebook.quantize(out[0] + torch.exp(0.5 * out[1])))
    finally:
        model.head.point = "mean_plus_sigma"


def test_generation_runs_on_the_imported_layout(imported):
    from taste_toolkit.taslm.generation import GenerationConfig, generate

    _, _, model = imported
    codes = torch.zeros(2, model.codebook.num_quantizers, dtype=torch.long)
    result = generate(model, WORDS[:2], codes, GenerationConfig(max_new_words=3))
    assert len(result.words) == result.codes.shape[0] >= 3


def test_finetune_yaml_loads():
    import os

    from taste_toolkit.hparams_loader import load_hparams

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    hparams, _, _ = load_hparams(os.path.join(root, "hparams", "official", "taslm_finetune.yaml"),
                                 {"output_folder": "/tmp/unused"})
    assert hparams["task"] == "taslm" and hparams["backbone_source"].endswith("/taslm")
    assert hparams["lora"]["r"] == 64 and hparams["lora"]["alpha"] == 128
    assert hparams["lm_head_name"] == "taste_embedding" and hparams["delay"] == 1


def test_finetune_starts_from_the_imported_weights(imported, tmp_path):
    """build_taslm with the imported folder as backbone_source (what the fine-tune YAML does)."""
    from taste_toolkit.errors import ConfigError
    from taste_toolkit.taslm.codebook import SpeechCodebook
    from taste_toolkit.taslm.model import build_taslm

    _, report, model = imported
    folder = report["output"] + "/taslm"
    codebook = SpeechCodebook(model.codebook.codebooks)
    lora = dict(model.config["lora"])
    tuned = build_taslm(folder, codebook, model.config["head_name"], lora=lora, delay=1, text_weight=0.5,
                        taste_weight=0.5, tokenizer_folder="somewhere")
    want = model.trainable_state_dict()
    got = tuned.trainable_state_dict()
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    assert tuned.config["tokenizer_folder"] == "somewhere" and tuned.config["initialized_from"].endswith("taslm")
    tuned.save_pretrained(str(tmp_path / "tuned"))
    again = TaslmModel.from_pretrained(str(tmp_path / "tuned"))
    assert again.speech_input == "project_out" and again.bridge.end == "pad"
    with pytest.raises(ConfigError, match="head_name"):
        build_taslm(folder, codebook, "other_head", lora=lora)
    with pytest.raises(ConfigError, match="lora.r"):
        build_taslm(folder, codebook, model.config["head_name"], lora={**lora, "r": 3})
    with pytest.raises(ConfigError, match="codebooks differ"):
        build_taslm(folder, SpeechCodebook(model.codebook.codebooks + 1), model.config["head_name"])
