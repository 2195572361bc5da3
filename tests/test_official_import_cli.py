"""``taste generate / score / resynthesize`` on an import of a self-consistent release-layout checkpoint.

The official-tiny fixture (``../shared/fixtures/official-tiny``) is a stage-1 model
whose spoken LM cannot run (its bridge reads 1280-d audio, its RVQ outputs 64-d), so
its import has no TASLM. Here the fixture's ``config.json`` and stage-1 tensors
(``audio_tower.*``, ``speech_decoder.*``) are joined with ``spoken_lm.*`` tensors in the
release's key layout sized for that tiny model (audio dim = the fixture's RVQ output,
a tiny LoRA Llama built by :func:`_official_fixtures.make_tiny_release`) and a matching
``spoken_lm_config`` / ``text_config``. That checkpoint is imported (tokenizer +
TASLM) and the TASLM verbs of the CLI run on ``OUT``.

The release ships no usable vocoder (``cosyvoice/voice_generator.pth`` is a pickle),
so ``OUT/tokenizer`` decodes to units only: ``generate`` and ``resynthesize`` refuse
it naming the vocoder to add; with a vocoder added to a copy of the folder
(``griffin_lim`` over the decoder's units), both run. Skipped without the fixture.
"""

import json
import math
import os
import shutil

import pytest
import torch
from _official_fixtures import make_fake_whisper_tokenizer, make_tiny_release
from test_official_import import FIXTURE, ConstantSpeaker  # noqa: F401 (registers the test_constant_192 speaker)

from taste_toolkit import cli

pytestmark = pytest.mark.skipif(
    not os.path.isfile(os.path.join(FIXTURE, "model.safetensors")),
    reason=f"official-tiny fixture not found at {FIXTURE} (CI has ../shared beside the checkout)")

PROMPT = "Hello quantized world"


def make_consistent_release(root):
    """Fixture config + stage-1 tensors, plus a tiny LoRA spoken LM whose bridge reads the fixture's RVQ output."""
    from safetensors.torch import load_file, save_file

    with open(os.path.join(FIXTURE, "config.json")) as f:
        config = json.load(f)
    q = config["audio_tower_config"]["kwargs_for_quantizer"]
    tiny = make_tiny_release(os.path.join(root, "tiny_lm"), R=q["num_quantizers"], K=q["codebook_size"],
                             d=q["codebook_dim"], D=q["dim"])
    folder = os.path.join(root, "release")
    os.makedirs(folder)
    tensors = {k: v for k, v in load_file(os.path.join(FIXTURE, "model.safetensors")).items()
               if not k.startswith("spoken_lm.")}
    assert tensors["audio_tower.vq.rvq.project_out.weight"].shape == (q["dim"], q["codebook_dim"])
    tensors.update({k: v for k, v in tiny["tensors"].items() if k.startswith("spoken_lm.")})
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(folder, "model.safetensors"))
    config["spoken_lm_config"] = {**config["spoken_lm_config"], **tiny["config"]["spoken_lm_config"]}
    config["text_config"] = tiny["config"]["text_config"]
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    shutil.copytree(os.path.join(tiny["folder"], "llama_tokenizer"), os.path.join(folder, "llama_tokenizer"))
    return folder, tensors


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    from taste_toolkit.official.importer import import_official

    root = tmp_path_factory.mktemp("consistent")
    src, tensors = make_consistent_release(str(root))
    whisper = make_fake_whisper_tokenizer(str(root / "whisper_tok"))
    out = root / "out"
    report = import_official(src, str(out), whisper_tokenizer=whisper, speaker=("test_constant_192", {}))
    return {"root": root, "out": out, "report": report, "tensors": tensors}


@pytest.fixture(scope="module")
def prompt_wav(imported):
    import soundfile as sf
    from safetensors.torch import load_file

    audio = load_file(os.path.join(FIXTURE, "inputs.safetensors"))["audio_16k"][0, :24000].numpy()
    path = imported["root"] / "prompt.wav"
    sf.write(path, audio, 16000)
    return str(path)


def test_import_writes_a_taslm(imported):
    report = imported["report"]
    assert report["taslm"]["written"] is True and report["taslm"]["head"] == "taste_embedding"
    spoken = [n for n in imported["tensors"] if n.startswith("spoken_lm.")]
    assert all(report["tensors"][n]["status"] in ("mapped", "skipped") for n in spoken)
    assert (imported["out"] / "taslm" / "taslm_config.json").is_file()


@pytest.fixture(scope="module")
def voiced_tokenizer(imported):
    """A copy of ``OUT/tokenizer`` with a ``griffin_lim`` vocoder over the decoder's units (random unit table)."""
    from taste_toolkit.api import TasteTokenizer
    from taste_toolkit.registry import build

    tok = TasteTokenizer.from_pretrained(str(imported["out"] / "tokenizer"))
    assert tok.vocoder is None  # the import decodes to units only
    num_units = tok.model.decoder.num_units
    vocoder = build("vocoder", "griffin_lim", {"num_units": num_units, "n_mels": 40, "stack": 1, "n_fft": 512,
                                               "hop_length": 320, "n_iter": 4})
    vocoder.load_table(torch.randn(num_units, 1, 40, generator=torch.Generator().manual_seed(0)) * 0.5 - 4.0)
    folder = imported["root"] / "tokenizer_with_vocoder"
    TasteTokenizer(tok.model, tok.text_tokenizer, units=tok.units, speaker=tok.speaker,
                   vocoder=vocoder).save_pretrained(str(folder))
    return str(folder)


def _json_out(code, capsys):
    """The verb's JSON summary, after checking it exited 0 (else its error is shown)."""
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def test_from_pretrained_and_taslm_load_on_out(imported):
    from taste_toolkit.api import TasteTokenizer
    from taste_toolkit.taslm.model import TaslmModel

    out = imported["out"]
    tok = TasteTokenizer.from_pretrained(str(out / "tokenizer"))
    model = TaslmModel.from_pretrained(str(out / "taslm"))
    assert torch.equal(tok.model.quantizer.codebooks.detach().float(), model.codebook.codebooks)
    # recorded as ../tokenizer, resolved against the TASLM folder when loaded
    assert os.path.samefile(model.config["tokenizer_folder"], out / "tokenizer")
    assert model.config["tokenizer_fingerprint"] == tok.fingerprint


def test_cli_score_on_a_salmon_style_folder(imported, prompt_wav, capsys):
    import soundfile as sf

    from taste_toolkit.api import TasteTokenizer
    from taste_toolkit.taslm.model import TaslmModel
    from taste_toolkit.taslm.scoring import load_two_choice_folder, score

    folder = imported["root"] / "salmon" / "sSC"
    folder.mkdir(parents=True)
    wav, sr = sf.read(prompt_wav)
    for i, (good, bad) in enumerate([("Hello quantized world", "world quantized Hello"),
                                     ("the river waited", "river the waited")]):
        for tag, text in (("correct", good), ("incorrect", bad)):
            sf.write(folder / f"p{i}_{tag}.wav", wav[: 16000 + 4000 * i], sr)
            (folder / f"p{i}_{tag}.txt").write_text(text)
    code = cli.main(["score", "--taslm", str(imported["out"] / "taslm"), "--folder",
                     str(imported["root"] / "salmon")])
    result = _json_out(code, capsys)
    assert set(result) == {"sSC"} and result["sSC"]["n"] == 2 and 0.0 <= result["sSC"]["accuracy"] <= 1.0
    # the likelihoods behind the accuracy are finite
    tok = TasteTokenizer.from_pretrained(str(imported["out"] / "tokenizer"))
    model = TaslmModel.from_pretrained(str(imported["out"] / "taslm"))
    pairs = load_two_choice_folder(str(imported["root"] / "salmon"), tok)["sSC"]
    scores = score(model, [(*p[k], 0) for p in pairs for k in ("good", "bad")])
    assert len(scores) == 4 and all(math.isfinite(s["total"]) for s in scores)


def test_cli_generate_needs_a_vocoder_then_continues_the_prompt(imported, prompt_wav, voiced_tokenizer, tmp_path,
                                                                 capsys):
    import soundfile as sf

    taslm = str(imported["out"] / "taslm")
    out_wav = str(tmp_path / "continued.wav")
    args = ["generate", "--taslm", taslm, "--audio", prompt_wav, "--text", PROMPT, "--output", out_wav,
            "--max-new-words", "3", "--seed", "0"]
    assert cli.main(args) == 1  # OUT/tokenizer has no vocoder: refused, naming what to add
    err = capsys.readouterr().err
    assert "no vocoder" in err and "griffin_lim" in err and "import-official" in err and not os.path.exists(out_wav)
    code = cli.main(args + ["--model", voiced_tokenizer])
    result = _json_out(code, capsys)
    assert result["prompt"] == PROMPT and result["continuation"].split()
    assert len(result["continuation"].split()) <= 3 and result["seconds"] > 0
    wav, sr = sf.read(out_wav)
    assert sr == 16000 and len(wav) > 0 and bool((abs(wav) < 1.0 + 1e-6).all())
    print(json.dumps(result))


def test_cli_resynthesize_needs_a_vocoder(imported, prompt_wav, voiced_tokenizer, tmp_path, capsys):
    import soundfile as sf

    out_wav = str(tmp_path / "resynth.wav")
    args = ["resynthesize", "--audio", prompt_wav, "--text", PROMPT, "--output", out_wav]
    assert cli.main(args + ["--model", str(imported["out"] / "tokenizer")]) == 1
    err = capsys.readouterr().err
    assert "no vocoder" in err and "griffin_lim" in err and not os.path.exists(out_wav)
    code = cli.main(args + ["--model", voiced_tokenizer])
    result = _json_out(code, capsys)
    wav, sr = sf.read(out_wav)
    assert sr == 16000 and len(wav) > 0
    print(json.dumps(result))
