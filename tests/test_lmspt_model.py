"""LM-SPT model, tokenizer API and YAMLs: learning on tiny data, export round trip, frame-rate variants."""

import os

import numpy as np
import pytest
import torch

from taste_toolkit.errors import ConfigError, InputError, MissingResourceError
from taste_toolkit.hparams_loader import load_hparams, peek_task
from taste_toolkit.lmspt import LmsptTokenizer, load_tokenizer
from taste_toolkit.models.lmspt import LmsptModel
from taste_toolkit.registry import build

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LMSPT_YAMLS = {"lmspt.yaml": 12.5, "lmspt_25hz.yaml": 25.0, "lmspt_6hz.yaml": 6.25}


def build_tiny_lmspt(whisper_dir, stride=4, seed=0, acoustic=True):
    """A tiny LM-SPT model on the tiny random Whisper, every part built through the registry."""
    torch.manual_seed(seed)
    enc = build("encoder", "whisper", {"source": whisper_dir, "value_layer": 1})
    down = {"stride": stride, "d_model": 32, "num_layers": 1, "num_heads": 2, "ffn_dim": 64, "dropout": 0.0}
    sem = build("aggregator", "downsample", {**down, "tap": "keys"}, key_dim=64, value_dim=64)
    sq = build("quantizer", "rvq", {"num_quantizers": 1, "codebook_size": 16, "codebook_dim": 8,
                                    "quantize_dropout": False, "kmeans_iters": 2}, input_dim=32)
    dec_opts = {"frames_per_token": 2 * stride, "d_model": 32, "num_layers": 1, "num_heads": 2, "ffn_dim": 64,
                "conv_channels": 16, "conv_layers": 1, "dropout": 0.0}
    dec = build("decoder", "mel_transformer", dec_opts, speech_dim=32)
    aux = build("decoder", "mel_transformer", {**dec_opts, "d_model": 16, "conv_channels": 8}, speech_dim=32)
    ac = aq = None
    if acoustic:
        ac = build("aggregator", "downsample", {**down, "tap": "values"}, key_dim=64, value_dim=64)
        aq = build("quantizer", "rvq", {"num_quantizers": 2, "codebook_size": 16, "codebook_dim": 8,
                                        "quantize_dropout": False, "kmeans_iters": 2}, input_dim=32)
    return LmsptModel(enc, sem, sq, dec, aux, ac, aq, distill_weight=10.0)


def test_model_checks_rates_and_widths(tiny_whisper_dir):
    model = build_tiny_lmspt(tiny_whisper_dir)
    assert model.token_rate == 12.5 and model.bits_per_token == 3 * 4
    bad = build("decoder", "mel_transformer", {"frames_per_token": 4, "d_model": 32, "num_layers": 0,
                                               "conv_channels": 8}, speech_dim=32)
    with pytest.raises(ConfigError, match="frames_per_token=4 at 12.5 Hz"):
        LmsptModel(model.encoder, model.semantic_downsampler, model.semantic_quantizer, bad, model.aux_decoder)
    with pytest.raises(ConfigError, match="both acoustic_downsampler and acoustic_quantizer"):
        LmsptModel(model.encoder, model.semantic_downsampler, model.semantic_quantizer, model.decoder,
                   model.aux_decoder, acoustic_downsampler=model.acoustic_downsampler)


def test_tiny_training_lowers_every_loss(tiny_whisper_dir, make_wavs):
    model = build_tiny_lmspt(tiny_whisper_dir).train()
    wavs, wav_lengths = make_wavs([16000, 12000, 9000, 14000], seed=5)
    with torch.no_grad():
        enc = model.encode_audio(wavs, wav_lengths)
    mels, mel_lengths = model.log_mels(wavs, wav_lengths)
    trainable = [p for p in model.parameters() if p.requires_grad]
    frozen = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    opt = torch.optim.Adam(trainable, lr=3e-3)
    history = []
    for _ in range(40):
        out = model(enc, mels, mel_lengths)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        history.append({k: float(v.detach()) for k, v in out.losses.items()})
    first, last = history[0], history[-1]
    assert last["recon"] < 0.6 * first["recon"]
    assert last["distill"] < 0.9 * first["distill"]  # the aux decoder learns to fool the frozen Whisper
    assert all(torch.equal(v, model.encoder.state_dict()[k]) for k, v in frozen.items())  # Whisper untouched
    assert out.tokens.codes.shape == (4, 13, 3) and out.tokens.lengths.tolist() == [13, 10, 7, 11]


@pytest.fixture(scope="module")
def exported(tiny_whisper_dir, tmp_path_factory):
    model = build_tiny_lmspt(tiny_whisper_dir, seed=1)
    g = torch.Generator().manual_seed(2)
    model.train()
    with torch.no_grad():  # one training pass initialises every codebook (k-means)
        wavs = 0.1 * torch.randn(3, 16000, generator=g)
        lengths = torch.tensor([16000, 14000, 12000])
        model(model.encode_audio(wavs, lengths), *model.log_mels(wavs, lengths))
    voc = build("vocoder", "whisper_mel_griffin_lim", {"n_iter": 2})
    tok = LmsptTokenizer(model, voc)
    folder = tmp_path_factory.mktemp("lmspt_export")
    tok.save_pretrained(folder)
    return tok, folder


def test_export_round_trip(exported, make_wavs):
    tok, folder = exported
    loaded = LmsptTokenizer.from_pretrained(folder)
    assert loaded.fingerprint == tok.fingerprint
    assert isinstance(load_tokenizer(folder), LmsptTokenizer)  # dispatch on the folder's metadata
    wavs, lengths = make_wavs([16000, 10400], seed=6)
    audio = [wavs[0], wavs[1, :10400].numpy()]
    a = tok.encode(audio, 16000, ["one two", None])
    b = loaded.encode(audio, 16000)
    for x, y in zip(a, b):
        assert x.level == "frame" and x.extra["alignment"] == "frame" and x.frame_rate == 12.5
        assert torch.equal(x.codes, y.codes) and x.codes.shape[1] == 3 and int(x.codes.min()) >= 0
    assert [t.codes.shape[0] for t in a] == [13, 9]  # ceil(50 / 4), ceil(33 / 4)
    assert a[0].words == ["one", "two"] and a[1].text == ""
    out_a, out_b = tok.decode(a), loaded.decode(b)
    assert [f.shape for f in out_a.features] == [(100, 80), (65, 80)]  # S // 160 frames: the source length
    for f, g in zip(out_a.features, out_b.features):
        torch.testing.assert_close(f, g)
    assert out_b.sample_rate == 16000 and [w.numel() for w in out_b.waveforms] == [16000, 10400]
    semantic = loaded.decode_features(b[0], acoustic_layers=0)[0]
    aux = loaded.decode_features(b[0], use_aux_decoder=True)[0]
    assert semantic.shape == aux.shape == (100, 80) and not torch.allclose(semantic, out_b.features[0])
    # Tokens survive the JSON form used by `taste tokenize` files.
    from taste_toolkit.tokens import TasteTokens

    again = TasteTokens.from_dict(b[1].to_dict())
    torch.testing.assert_close(loaded.decode_features(again)[0], out_b.features[1])


def test_info_and_bad_tokens(exported, make_wavs):
    tok, _ = exported
    info = tok.info()
    assert info["alignment"] == "frame" and info["tokenizer"] == "lmspt" and info["token_rate_hz"] == 12.5
    assert info["num_quantizers"] == 3 and info["bitrate_bps"] == pytest.approx(12.5 * 12)
    assert info["semantic_bitrate_bps"] == pytest.approx(12.5 * 4)
    wavs, _ = make_wavs([8000])
    tokens = tok.encode(wavs[0], 16000)
    broken = tokens.__class__(**{**tokens.__dict__, "codes": tokens.codes.clone()})
    broken.codes[0, 0] = 99
    with pytest.raises(InputError, match=r"\[0, 16\)"):
        tok.decode(broken)
    with pytest.raises(InputError, match="another model"):
        tok.decode(tokens.__class__(**{**tokens.__dict__, "fingerprint": "0" * 16}))
    with pytest.raises(InputError, match="one transcript"):
        tok.encode([wavs[0], wavs[0]], 16000, "one text for two utterances")
    with pytest.raises(InputError, match="acoustic_layers"):
        tok.decode(tokens, acoustic_layers=-1)
    with pytest.raises(InputError, match="longer than the limit"):
        tok.encode(torch.zeros(16000 * 31), 16000)


@pytest.mark.parametrize("name", sorted(LMSPT_YAMLS))
def test_lmspt_yamls_build_at_their_rate(name, tiny_whisper_dir, tmp_path):
    path = os.path.join(ROOT, "hparams", name)
    assert peek_task([path]) == "lmspt"
    hparams, _, _ = load_hparams(path, {"output_folder": str(tmp_path / "out"), "whisper_source": tiny_whisper_dir})
    model = hparams["model"]
    assert isinstance(model, LmsptModel) and model.token_rate == LMSPT_YAMLS[name]
    assert model.decoder.frames_per_token * model.token_rate == 100.0
    assert "encoder" not in hparams["checkpointer"].recoverables
    wavs = 0.1 * torch.randn(1, 8000)
    tokens = LmsptTokenizer(model, hparams["vocoder"]).encode(wavs[0], 16000)
    assert tokens.codes.shape == (-(-25 // model.semantic_downsampler.stride), 8)


def test_evaluation_systems_score_lmspt_at_its_bitrate(exported, make_wavs):
    """``type: lmspt`` (all streams / semantic only) and ``type: mel_topline`` in the evaluation harness."""
    from taste_toolkit.evaluation.systems import build_system

    _, folder = exported
    wavs, _ = make_wavs([16000], seed=8)
    wav = wavs[0].numpy()
    full = build_system({"name": "a", "type": "lmspt", "options": {"path": str(folder)}})
    semantic = build_system({"name": "b", "type": "lmspt", "options": {"path": str(folder), "acoustic_layers": 0}})
    topline = build_system({"name": "c", "type": "mel_topline", "options": {"tokenizer": str(folder)}})
    assert full.info()["bitrate_bps"] == pytest.approx(12.5 * 12) and full.info()["alignment"] == "frame"
    assert semantic.info()["bitrate_bps"] == pytest.approx(12.5 * 4)
    out_full, sr, extras = full.reconstruct(wav, 16000, "ignored words", "u1")
    out_sem, _, extras_sem = semantic.reconstruct(wav, 16000, "", "u1")
    assert sr == 16000 and out_full.shape == out_sem.shape == (16000,)
    assert extras["speech_tokens"] == 13 and len(extras["codes"][0]) == 3 and len(extras_sem["codes"][0]) == 1
    assert not np.allclose(out_full, out_sem)  # the acoustic streams change the output
    out_top, _, extras_top = topline.reconstruct(wav, 16000, "", "u1")
    assert out_top.shape == (16000,) and extras_top["speech_tokens"] == 100  # 100 Hz log-mel frames
    with pytest.raises(MissingResourceError, match="train one"):
        build_system({"name": "d", "type": "lmspt", "options": {"path": str(folder) + "_missing"}})


def test_cli_runs_frame_tokenizers_and_refuses_word_verbs(exported, make_wavs, tmp_path, capsys):
    """`taste tokenize/resynthesize/info` take an LM-SPT folder without transcripts; `edit`/`align` refuse it."""
    import json

    import soundfile as sf

    from taste_toolkit import cli

    _, folder = exported
    wavs, _ = make_wavs([16000, 12000], seed=9)
    audio_dir = tmp_path / "audio"
    audio_dir.mkdir()
    for i in range(2):
        sf.write(audio_dir / f"utt{i}.wav", wavs[i].numpy(), 16000)  # no transcripts next to them
    out = tmp_path / "tokens.jsonl"
    assert cli.main(["tokenize", "--model", str(folder), "--folder", str(audio_dir), "--output", str(out),
                     "--no-progress"]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == ["utt0", "utt1"] and all(r["level"] == "frame" for r in records)
    assert cli.main(["resynthesize", "--model", str(folder), "--audio", str(audio_dir / "utt0.wav"),
                     "--output", str(tmp_path / "re.wav")]) == 0
    assert sf.info(str(tmp_path / "re.wav")).frames == 16000
    capsys.readouterr()
    assert cli.main(["info", "--model", str(folder)]) == 0
    assert json.loads(capsys.readouterr().out)["alignment"] == "frame"
    wav0 = str(audio_dir / "utt0.wav")
    for argv in (["align", "--audio", wav0, "--text", "a b"],
                 ["edit", "--audio-a", wav0, "--audio-b", wav0, "--text", "a b", "--words", "0",
                  "--output", str(tmp_path / "e.wav")]):
        assert cli.main([argv[0], "--model", str(folder), *argv[1:]]) == 1
        assert "needs a text-aligned tokenizer" in capsys.readouterr().err
