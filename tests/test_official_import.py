"""``taste import-official``: the official-tiny fixture imported, loaded and run; bad inputs refused.

The fixture (``../shared/fixtures/official-tiny``, a random stage-1 model the
unmodified official code built and ran) sits beside the checkout in CI; elsewhere
the fixture tests skip. The bad-input tests use a tiny release-layout checkpoint
made here (``_official_fixtures.make_tiny_release``) and need no fixture.
"""

import json
import os
import shutil

import pytest
import torch
from _official_fixtures import make_fake_whisper_tokenizer, make_tiny_release
from safetensors.torch import load_file, save_file

from taste_toolkit import cli
from taste_toolkit.errors import ConfigError, InputError, MissingResourceError
from taste_toolkit.interfaces import Speaker
from taste_toolkit.official.importer import REPORT_FILE, import_official
from taste_toolkit.registry import register

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "..", "shared", "fixtures", "official-tiny")
needs_fixture = pytest.mark.skipif(not os.path.isfile(os.path.join(FIXTURE, "model.safetensors")),
                                   reason=f"official-tiny fixture not found at {FIXTURE} (CI has ../shared beside "
                                   "the checkout)")


@register("speaker", "test_constant_192")
class ConstantSpeaker(Speaker):
    """192-d unit vector for every utterance (the release's CAM++ ONNX is not in the fixture)."""

    def __init__(self):
        super().__init__()

    @property
    def embedding_dim(self):
        return 192

    def forward(self, wavs, wav_lengths):
        return torch.full((wavs.shape[0], 192), 192 ** -0.5, device=wavs.device)


@pytest.fixture(scope="module")
def whisper_tok(tmp_path_factory):
    return make_fake_whisper_tokenizer(tmp_path_factory.mktemp("whisper_tok"))


@pytest.fixture(scope="module")
def fixture_import(tmp_path_factory, whisper_tok):
    if not os.path.isfile(os.path.join(FIXTURE, "model.safetensors")):
        pytest.skip(f"official-tiny fixture not found at {FIXTURE}")
    out = tmp_path_factory.mktemp("imp") / "out"
    report = import_official(FIXTURE, str(out), whisper_tokenizer=whisper_tok, speaker=("test_constant_192", {}))
    return out, report


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return make_tiny_release(tmp_path_factory.mktemp("rel") / "release")


def _copy(src, dst, skip=()):
    """A copy of a release folder (weights symlinked unless listed in ``skip``)."""
    os.makedirs(dst)
    for f in os.listdir(src):
        if f in skip:
            continue
        s, d = os.path.join(src, f), os.path.join(dst, f)
        if os.path.isdir(s):
            shutil.copytree(s, d)
        elif f.endswith(".safetensors"):
            os.symlink(os.path.abspath(s), d)
        else:
            shutil.copyfile(s, d)
    return str(dst)


def _edit_config(folder, edit):
    path = os.path.join(folder, "config.json")
    with open(path) as f:
        config = json.load(f)
    edit(config)
    with open(path, "w") as f:
        json.dump(config, f)


# ---------------------------------------------------------------- the fixture


@needs_fixture
def test_fixture_import_report(fixture_import):
    out, report = fixture_import
    counts = report["counts"]
    assert counts["total"] == {"tensors": 428, "parameters": 5739353}
    assert counts["skipped"]["tensors"] == 54  # audio_tower.vq.rvq.mlps.*
    assert all(n.startswith("audio_tower.vq.rvq.mlps.") for n, e in report["tensors"].items()
               if e["status"] == "skipped")
    # stage-1 checkpoint: the spoken LM's 1280-d bridge cannot read the 64-d RVQ output
    assert {n for n, e in report["tensors"].items() if e["status"] == "not_placed"} == \
        {n for n in report["tensors"] if n.startswith("spoken_lm.")}
    assert report["taslm"]["written"] is False and "1280" in report["taslm"]["reason"]
    assert counts["mapped"]["tensors"] == 428 - 54 - 29
    saved = json.load(open(out / REPORT_FILE))
    assert saved["counts"] == counts and not (out / "taslm").exists()
    print(f"fixture import: {report['seconds']} s, mapped {counts['mapped']} of {counts['total']}")


@needs_fixture
def test_imported_tokenizer_loads_and_quantizes_like_the_release(fixture_import):
    from taste_toolkit.api import TasteTokenizer

    out, _ = fixture_import
    tok = TasteTokenizer.from_pretrained(str(out / "tokenizer"))
    ref = load_file(os.path.join(FIXTURE, "outputs.safetensors"))
    x, mask = ref["rvq_input"], ref["rvq_mask"]
    with torch.no_grad():
        q = tok.model.quantizer(x, mask.sum(1))
    assert torch.equal(q.codes[mask], ref["rvq_indices"][mask])


@needs_fixture
def test_cli_info_and_tokenize_on_the_import(fixture_import, tmp_path, capsys):
    import soundfile as sf

    out, _ = fixture_import
    model = str(out / "tokenizer")
    assert cli.main(["info", "--model", model]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["num_quantizers"] == 4 and info["codebook_size"] == 16
    audio = load_file(os.path.join(FIXTURE, "inputs.safetensors"))["audio_16k"][0, :24000].numpy()
    data = tmp_path / "data"
    data.mkdir()
    sf.write(data / "u0.wav", audio, 16000)
    (data / "u0.txt").write_text("Hello quantized world")
    assert cli.main(["tokenize", "--model", model, "--folder", str(data), "--output", str(tmp_path / "t.jsonl"),
                     "--no-progress"]) == 0
    line = json.loads(open(tmp_path / "t.jsonl").read().splitlines()[0])
    assert line["words"] == ["Hello", "quantized", "world"]


@needs_fixture
def test_cli_import_official(tmp_path, whisper_tok, capsys):
    code = cli.main(["import-official", FIXTURE, str(tmp_path / "o"), "--whisper-tokenizer", whisper_tok,
                     "--only", "tokenizer", "--no-verify"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["counts"]["skipped"]["tensors"] == 54 and os.path.isfile(summary["report"])
    assert cli.main(["import-official", FIXTURE, str(tmp_path / "o")]) == 1  # exists: refused
    assert "exists" in capsys.readouterr().err


@needs_fixture
def test_wrong_shape_in_the_audio_tower_is_named(tmp_path, whisper_tok):
    src = _copy(FIXTURE, tmp_path / "src", skip=("model.safetensors",))
    tensors = load_file(os.path.join(FIXTURE, "model.safetensors"))
    name = "audio_tower.vq.rvq.project_in.weight"
    tensors[name] = tensors[name][:, :-1].contiguous()
    save_file(tensors, os.path.join(src, "model.safetensors"))
    with pytest.raises(InputError, match=name.replace(".", r"\.")):
        import_official(src, str(tmp_path / "out"), whisper_tokenizer=whisper_tok, parts=("tokenizer",))
    assert not (tmp_path / "out").exists()


@needs_fixture
def test_unknown_speech_decoder_value_is_named(tmp_path, whisper_tok):
    src = _copy(FIXTURE, tmp_path / "src")
    _edit_config(src, lambda c: c["speech_decoder_config"].update(llm__pos_enc_layer_type="abs_pos"))
    with pytest.raises(ConfigError, match="llm__pos_enc_layer_type"):
        import_official(src, str(tmp_path / "out"), whisper_tokenizer=whisper_tok)


# ---------------------------------------------------------------- bad input (no fixture needed)


def test_another_architecture_is_refused(release, tmp_path):
    src = _copy(release["folder"], tmp_path / "src")
    _edit_config(src, lambda c: c.update(architectures=["LlamaForCausalLM"], model_type="llama"))
    with pytest.raises(ConfigError, match=r"config\.json.*LlamaForCausalLM"):
        import_official(src, str(tmp_path / "out"), parts=("taslm",))


def test_missing_shard_is_named(release, tmp_path):
    src = _copy(release["folder"], tmp_path / "src", skip=("model.safetensors",))
    tensors = load_file(os.path.join(release["folder"], "model.safetensors"))
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, os.path.join(src, shard))
    index = {"metadata": {}, "weight_map": {k: s for s, keys in shards.items() for k in keys}}
    json.dump(index, open(os.path.join(src, "model.safetensors.index.json"), "w"))
    report = import_official(src, str(tmp_path / "ok"), parts=("taslm",), verify=False)  # sharded: fine
    assert report["taslm"]["written"]
    os.remove(os.path.join(src, "model-00002-of-00002.safetensors"))
    with pytest.raises(MissingResourceError, match="model-00002-of-00002.safetensors"):
        import_official(src, str(tmp_path / "out"), parts=("taslm",))


def test_wrong_shape_is_named(release, tmp_path):
    src = _copy(release["folder"], tmp_path / "src", skip=("model.safetensors",))
    tensors = dict(release["tensors"])
    tensors["spoken_lm.pad_audio_unit_embed"] = torch.zeros(1280)  # the release's hard-coded size, not this RVQ's
    tensors["spoken_lm.fuse_for_bridge_in_llm.linear.weight"] = torch.zeros(32, 24)
    tensors["spoken_lm.extract_for_bridge_out_llm.fc_mu.weight"] = torch.zeros(9, 32)
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(src, "model.safetensors"))
    with pytest.raises(InputError, match=r"spoken_lm\.(pad_audio_unit_embed|extract_for_bridge_out_llm\.fc_mu)"):
        import_official(src, str(tmp_path / "out"), parts=("taslm",))


def test_pickle_checkpoints_are_refused(release, tmp_path):
    src = _copy(release["folder"], tmp_path / "src", skip=("model.safetensors",))
    torch.save({"x": torch.zeros(1)}, os.path.join(src, "pytorch_model.bin"))
    with pytest.raises(InputError, match=r"pytorch_model\.bin.*pickle"):
        import_official(src, str(tmp_path / "out"))
    json.dump({"weight_map": {"x": "pytorch_model.bin"}}, open(os.path.join(src, "model.safetensors.index.json"), "w"))
    with pytest.raises(InputError, match=r"pytorch_model\.bin"):
        import_official(src, str(tmp_path / "out"))
    os.remove(os.path.join(src, "model.safetensors.index.json"))
    shutil.copyfile(os.path.join(src, "pytorch_model.bin"), os.path.join(src, "model.safetensors"))
    with pytest.raises(InputError, match=r"model\.safetensors is not a safetensors file"):
        import_official(src, str(tmp_path / "out"))


@pytest.mark.parametrize("field, value", [("audio_embed_conv_mode", "pad"), ("out_llm_module", "weighted_layer"),
                                          ("delay_level", "token"), ("in_llm_module", "reference_mix")])
def test_unknown_config_values_are_named(release, tmp_path, field, value):
    src = _copy(release["folder"], tmp_path / "src")
    _edit_config(src, lambda c: c["spoken_lm_config"].update({field: value}))
    with pytest.raises(ConfigError, match=f"spoken_lm_config.{field}={value!r}"):
        import_official(src, str(tmp_path / "out"), parts=("taslm",))


def test_partial_import_leaves_no_loadable_out(release, tmp_path, monkeypatch):
    import taste_toolkit.official.spoken_lm as spoken_lm
    from taste_toolkit.taslm.model import TaslmModel

    real = spoken_lm.write_taslm

    def crash(folder, *args, **kwargs):
        real(folder, *args, **kwargs)  # everything written, then the process "dies"
        raise RuntimeError("disk full")

    monkeypatch.setattr(spoken_lm, "write_taslm", crash)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="disk full"):
        import_official(release["folder"], str(out), parts=("taslm",))
    assert not out.exists() and os.listdir(tmp_path) == []
    monkeypatch.setattr(spoken_lm, "write_taslm", real)
    import_official(release["folder"], str(out), parts=("taslm",), verify=False)
    monkeypatch.setattr(spoken_lm, "write_taslm", crash)
    with pytest.raises(RuntimeError):  # a failed --overwrite keeps the previous import
        import_official(release["folder"], str(out), parts=("taslm",), overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["out"]
    TaslmModel.from_pretrained(str(out / "taslm"))


def test_hub_id_offline_is_a_clear_error(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingResourceError, match="Cannot fetch 'MediaTek-Research/Llama-1B-TASTE-V0'.*--local-dir"):
        import_official("MediaTek-Research/Llama-1B-TASTE-V0", str(tmp_path / "out"))
    with pytest.raises(MissingResourceError, match="not a folder"):
        import_official(str(tmp_path / "nowhere"), str(tmp_path / "out"))


def test_release_memory_estimate_fits_24_gib():
    from taste_toolkit.official.memory import release_estimate

    est = release_estimate()
    assert 1.2e9 < est["sizes"]["llm"] + est["sizes"]["lora"] < 1.4e9
    assert est["peak_gib"] < 24
    print(json.dumps(est, indent=1))
