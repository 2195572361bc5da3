"""``taste tokenize / resynthesize / edit / align / info`` run in-process on a tiny saved tokenizer."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from taste_toolkit import cli
from taste_toolkit.alignment import word_timestamps
from taste_toolkit.api import TasteTokenizer
from taste_toolkit.commands.speech import parse_words
from taste_toolkit.errors import InputError
from taste_toolkit.registry import build
from taste_toolkit.tokens import TasteTokens

SR = 16000
TEXTS = ["the cat sat on the mat", "a dog ran far away", "hello world again", "the dog sat", "a cat ran"]
VERBS = ["tokenize", "resynthesize", "edit", "align", "info"]


def _tokenizer(factory, whisper_dir, sp_dir, seed=0, vocoder=True):
    """Tiny random TASTE tokenizer (conftest factory) with a griffin_lim vocoder over its 20 units."""
    model, text_tok = factory(whisper_dir, TEXTS * 5, sp_dir, seed=seed)
    voc = None
    if vocoder:
        voc = build("vocoder", "griffin_lim", {"num_units": 20, "n_mels": 16, "stack": 1, "n_fft": 256,
                                               "hop_length": 64, "n_iter": 4})
        voc.load_table(torch.linspace(-6, 0, 20 * 16).reshape(20, 1, 16))
    return TasteTokenizer(model, text_tok, vocoder=voc)


def _wav(seconds, seed):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * SR)) / SR
    return (0.3 * torch.sin(2 * torch.pi * (150 + 50 * seed) * t) + 0.02 * torch.randn(t.shape, generator=g)).numpy()


@pytest.fixture(scope="module")
def models(tiny_taste_model, tiny_whisper_dir, tmp_path_factory):
    """``{"main", "novocoder", "foreign"}`` -> saved tokenizer folders."""
    root = tmp_path_factory.mktemp("models")
    main = _tokenizer(tiny_taste_model, tiny_whisper_dir, root / "sp")
    main.save_pretrained(root / "main")
    TasteTokenizer(main.model, main.text_tokenizer).save_pretrained(root / "novocoder")
    _tokenizer(tiny_taste_model, tiny_whisper_dir, root / "sp7", seed=7, vocoder=False).save_pretrained(root / "foreign")
    return {name: str(root / name) for name in ("main", "novocoder", "foreign")}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """5 wavs in a SpeechBrain manifest; ``u2`` has NaN samples (the bad item)."""
    root = tmp_path_factory.mktemp("corpus")
    rows = []
    for i, text in enumerate(TEXTS):
        wav = _wav(0.8 + 0.3 * i, i).astype(np.float32)
        if i == 2:
            wav[100] = np.nan
        path = root / f"u{i}.wav"
        sf.write(path, wav, SR, subtype="FLOAT")
        rows.append({"ID": f"u{i}", "duration": len(wav) / SR, "wav": str(path), "spk_id": "1", "wrd": text.upper()})
    manifest = root / "test.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["ID", "duration", "wav", "spk_id", "wrd"])
        writer.writeheader()
        writer.writerows(rows)
    return {"root": root, "manifest": str(manifest), "good": ["u0", "u1", "u3", "u4"], "bad": "u2"}


def run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _lines(path):
    return open(path).read().splitlines()


def _tokenize(models, corpus, output, capsys, model="main", extra=()):
    return run(["tokenize", "--model", models[model], "--manifest", corpus["manifest"], "--output", output,
                "--batch-size", 2, "--no-progress", *extra], capsys)


@pytest.fixture(scope="module")
def reference(models, corpus, tmp_path_factory):
    """Lines of an uninterrupted tokenize run of the manifest."""
    out = tmp_path_factory.mktemp("ref") / "tok.jsonl"
    assert cli.main(["tokenize", "--model", models["main"], "--manifest", corpus["manifest"], "--output", str(out),
                     "--batch-size", "2", "--no-progress"]) == 0
    return _lines(out)


# ---------------------------------------------------------------- tokenize


def test_tokenize_manifest_records_and_errors(models, corpus, reference, tmp_path, capsys):
    out = tmp_path / "tok.jsonl"
    code, stdout, err = _tokenize(models, corpus, out, capsys)
    assert code == 0, err
    summary = json.loads(stdout)
    assert (summary["tokenized"], summary["errors"], summary["already_done"]) == (4, 1, 0)
    assert _lines(out) == reference  # deterministic
    records = [json.loads(line) for line in reference]
    assert [r["id"] for r in records] == corpus["good"]
    errors = [json.loads(line) for line in _lines(str(out) + ".errors")]
    assert [e["id"] for e in errors] == [corpus["bad"]] and "NaN" in errors[0]["error"]
    # the records are the tokens the API gives for the same audio
    tok = TasteTokenizer.from_pretrained(models["main"])
    for record in records[:2]:
        wav, sr = sf.read(corpus["root"] / f"{record['id']}.wav", dtype="float32")
        direct = tok.encode(wav, sr, TEXTS[int(record["id"][1:])])
        back = TasteTokens.from_dict(record)
        assert torch.equal(back.codes, direct.codes) and back.words == direct.words
        assert back.fingerprint == tok.fingerprint and back.codes.shape == (len(back.words), 2)
    codes = torch.cat([TasteTokens.from_dict(r).codes for r in records])
    assert len(torch.unique(codes)) > 2  # real codebooks, not the all-zero uninitialised ones


def test_tokenize_resumes_after_interruption(models, corpus, reference, tmp_path, capsys):
    out = tmp_path / "tok.jsonl"
    # killed while writing the 3rd record: 2 complete lines + half a line
    out.write_text(reference[0] + "\n" + reference[1] + "\n" + reference[2][: len(reference[2]) // 2])
    code, stdout, err = _tokenize(models, corpus, out, capsys)
    assert code == 0, err
    summary = json.loads(stdout)
    assert (summary["already_done"], summary["tokenized"], summary["errors"]) == (2, 2, 1)
    assert _lines(out) == reference  # every id and its codes exactly once
    # a finished output: nothing redone, nothing appended
    code, stdout, _ = _tokenize(models, corpus, out, capsys)
    assert code == 0 and json.loads(stdout)["tokenized"] == 0
    assert _lines(out) == reference


def test_tokenize_refuses_foreign_fingerprint(models, corpus, reference, tmp_path, capsys):
    out = tmp_path / "tok.jsonl"
    out.write_text(reference[0] + "\n")
    code, stdout, err = _tokenize(models, corpus, out, capsys, model="foreign")
    assert code == 1 and stdout == ""
    assert err.startswith("error: ") and "another model" in err and "--output" in err
    assert _lines(out) == reference[:1]


def test_merge_shards_in_manifest_order(models, corpus, reference, tmp_path, capsys, monkeypatch):
    out = tmp_path / "tok.jsonl"
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in (1, 0):
        monkeypatch.setenv("RANK", str(rank))
        code, stdout, err = _tokenize(models, corpus, out, capsys)
        assert code == 0, err
    assert not out.exists()
    shard0 = [json.loads(line)["id"] for line in _lines(f"{out}.rank0")]
    assert shard0 == ["u0", "u4"]  # items[0::2] minus the bad u2
    assert [json.loads(line)["id"] for line in _lines(f"{out}.rank1")] == ["u1", "u3"]
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.delenv("RANK")
    code, _, err = _tokenize(models, corpus, out, capsys)
    assert code == 1 and "--merge" in err  # unmerged shards are not silently duplicated
    code, stdout, err = run(["tokenize", "--merge", out, "--manifest", corpus["manifest"]], capsys)
    assert code == 0, err
    assert json.loads(stdout) == {"output": str(out), "records": 4, "shards": 2, "errors": 1, "missing": 1}
    assert _lines(out) == reference
    assert [json.loads(line)["id"] for line in _lines(f"{out}.errors")] == [corpus["bad"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok.jsonl", "tok.jsonl.errors"]
    code, _, err = run(["tokenize", "--merge", out], capsys)
    assert code == 1 and "No shards" in err


def test_tokenize_folder_transcript_sources(models, tmp_path, capsys):
    data = tmp_path / "data"
    (data / "19" / "198").mkdir(parents=True)
    sf.write(data / "a.wav", _wav(1.0, 0), SR)
    (data / "a.txt").write_text("the cat sat\n")
    sf.write(data / "b.flac", _wav(0.9, 1), SR)
    (data / "b.lab").write_text("a dog ran")
    sf.write(data / "19" / "198" / "19-198-0001.flac", _wav(1.1, 2), SR)
    (data / "19" / "198" / "19-198.trans.txt").write_text("19-198-0001 HELLO WORLD AGAIN\n")
    sf.write(data / "no_text.wav", _wav(0.5, 3), SR)
    (data / "broken.wav").write_bytes(b"RIFF not really a wav")
    (data / "broken.txt").write_text("the mat")
    out = tmp_path / "tok.jsonl"
    code, stdout, err = run(["tokenize", "--model", models["main"], "--folder", data, "--output", out,
                             "--embeddings", "--no-progress"], capsys)
    assert code == 0, err
    records = {json.loads(line)["id"]: json.loads(line) for line in _lines(out)}
    assert sorted(records) == ["19-198-0001", "a", "b"]
    assert records["19-198-0001"]["words"] == ["hello", "world", "again"]
    assert np.array(records["a"]["embeddings"]).shape == (3, 32)  # --embeddings: one vector per word
    errors = {e["id"]: e["error"] for e in map(json.loads, _lines(f"{out}.errors"))}
    assert sorted(errors) == ["broken", "no_text"]
    assert "Cannot read audio" in errors["broken"] and "no transcript" in errors["no_text"]
    assert json.loads(stdout)["errors"] == 2


def test_tokenize_input_errors(models, corpus, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("ID,path,words\nx,y.wav,hi\n")
    code, _, err = run(["tokenize", "--model", models["main"], "--manifest", bad, "--output", tmp_path / "o.jsonl"],
                       capsys)
    assert code == 1 and "lacks column(s) ['wav', 'wrd']" in err
    only_bad = tmp_path / "only_bad.csv"
    only_bad.write_text(f"ID,wav,wrd\nu2,{corpus['root'] / 'u2.wav'},a dog\n")
    code, _, err = run(["tokenize", "--model", models["main"], "--manifest", only_bad, "--output",
                        tmp_path / "o.jsonl", "--no-progress"], capsys)
    assert code == 1 and "Nothing was tokenized" in err
    code, _, err = run(["tokenize", "--manifest", corpus["manifest"], "--output", tmp_path / "o.jsonl"], capsys)
    assert code == 1 and "--model" in err
    code, _, err = run(["tokenize", "--model", tmp_path / "nowhere", "--manifest", corpus["manifest"],
                        "--output", tmp_path / "o2.jsonl"], capsys)
    assert code == 1 and "not a folder" in err


def test_tokenize_skips_and_counts_input_error_items(models, corpus, reference, tmp_path, capsys, monkeypatch):
    """An InputError raised while encoding one item of a batch skips that item only."""
    real = TasteTokenizer.encode

    def encode(self, audio, sample_rate, text, **kw):
        texts = [text] if isinstance(text, str) else text
        if TEXTS[1].upper() in texts:
            raise InputError("unusable transcript (test)")
        return real(self, audio, sample_rate, text, **kw)

    monkeypatch.setattr(TasteTokenizer, "encode", encode)
    out = tmp_path / "tok.jsonl"
    code, stdout, err = _tokenize(models, corpus, out, capsys)  # batches [u0, u1] [u2, u3] [u4]
    assert code == 0, err
    summary = json.loads(stdout)
    assert (summary["tokenized"], summary["errors"]) == (3, 2)
    assert _lines(out) == [reference[0], reference[2], reference[3]]  # u0 u3 u4: u1 failed alone
    errors = {e["id"]: e["error"] for e in map(json.loads, _lines(f"{out}.errors"))}
    assert errors["u1"] == "unusable transcript (test)" and "NaN" in errors["u2"]


def _fail_second_tokenize(monkeypatch):
    """Make the model's 2nd forward pass raise a RuntimeError (a bug, not bad input)."""
    from taste_toolkit.models.tokenizer import TasteModel

    real, calls = TasteModel.tokenize, []

    def tokenize(self, *args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("shape mismatch inside the model (test)")
        return real(self, *args, **kw)

    monkeypatch.setattr(TasteModel, "tokenize", tokenize)


def test_tokenize_internal_error_stops_after_saving(models, corpus, reference, tmp_path, capsys, monkeypatch):
    """A RuntimeError in the model is not a skipped item: the run stops, finished batches stay saved."""
    _fail_second_tokenize(monkeypatch)
    out = tmp_path / "tok.jsonl"
    with pytest.raises(RuntimeError, match="shape mismatch") as info:  # the console script exits 1, with traceback
        _tokenize(models, corpus, out, capsys)  # batch [u0, u1] done; [u2 (NaN), u3] hits the bug
    note = " ".join(getattr(info.value, "__notes__", []))
    assert "internal error" in note and "2 records" in note and "rerun the same command" in note
    assert _lines(out) == reference[:2]
    assert [json.loads(line)["id"] for line in _lines(f"{out}.errors")] == ["u2"]  # only the real bad item
    monkeypatch.undo()
    code, stdout, err = _tokenize(models, corpus, out, capsys)  # the rerun resumes
    assert code == 0, err
    assert (json.loads(stdout)["already_done"], json.loads(stdout)["tokenized"]) == (2, 2)
    assert _lines(out) == reference


def test_tokenize_internal_error_exit_code(models, corpus, reference, tmp_path):
    """Run as a program, the same bug gives a non-zero exit and a traceback, not a summary."""
    out = tmp_path / "tok.jsonl"
    script = "\n".join([
        "import sys, pytest",
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})",
        "from test_cli_tokenizer import _fail_second_tokenize",
        "from taste_toolkit import cli",
        "_fail_second_tokenize(pytest.MonkeyPatch())",
        "sys.exit(cli.main(sys.argv[1:]))",
    ])
    argv = ["tokenize", "--model", models["main"], "--manifest", corpus["manifest"], "--output", str(out),
            "--batch-size", "2", "--no-progress"]
    proc = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode != 0 and proc.stdout == ""
    assert "RuntimeError: shape mismatch inside the model (test)" in proc.stderr
    assert "rerun the same command to resume" in proc.stderr
    assert _lines(out) == reference[:2]


# ---------------------------------------------------------------- resynthesize / edit


def test_resynthesize_writes_vocoder_rate_wav(models, corpus, tmp_path, capsys):
    args = ["resynthesize", "--model", models["main"], "--audio", corpus["root"] / "u0.wav", "--text", TEXTS[0]]
    code, stdout, err = run(args + ["--output", tmp_path / "a.wav"], capsys)
    assert code == 0, err
    summary = json.loads(stdout)
    wav, sr = sf.read(tmp_path / "a.wav")
    assert sr == summary["sample_rate"] == 16000
    assert summary["units"] > 0 and len(wav) == summary["units"] * 64  # griffin_lim: stack * hop samples per unit
    assert summary["speech_tokens"] == len(TEXTS[0].split())
    assert run(args + ["--output", tmp_path / "b.wav"], capsys)[0] == 0
    np.testing.assert_array_equal(sf.read(tmp_path / "b.wav")[0], wav)  # greedy: deterministic
    code, stdout, err = run(args + ["--output", tmp_path / "c.wav", "--top-k", 5, "--seed", 3], capsys)
    assert code == 0, err
    assert sf.read(tmp_path / "c.wav")[1] == 16000


def test_resynthesize_without_vocoder_is_a_clear_error(models, corpus, tmp_path, capsys):
    code, out, err = run(["resynthesize", "--model", models["novocoder"], "--audio", corpus["root"] / "u0.wav",
                          "--text", TEXTS[0], "--output", tmp_path / "a.wav"], capsys)
    assert (code, out) == (1, "")
    assert "has no vocoder" in err and "--vocoder griffin_lim" in err and "Traceback" not in err
    assert not (tmp_path / "a.wav").exists()
    code, _, err = run(["resynthesize", "--model", models["main"], "--audio", corpus["root"] / "u2.wav",
                        "--text", TEXTS[2], "--output", tmp_path / "a.wav"], capsys)
    assert code == 1 and err.startswith("error: --audio:") and "NaN" in err


def test_edit_swaps_words(models, corpus, tmp_path, capsys):
    base = ["edit", "--model", models["main"], "--audio-a", corpus["root"] / "u0.wav",
            "--audio-b", corpus["root"] / "u1.wav", "--text", TEXTS[0]]
    code, stdout, err = run(base + ["--words", "cat,3", "--output", tmp_path / "e.wav"], capsys)
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["edited_words"] == ["cat", "on"]
    assert len(sf.read(tmp_path / "e.wav")[0]) == summary["units"] * 64
    code, _, err = run(base + ["--words", "zebra", "--output", tmp_path / "f.wav"], capsys)
    assert code == 1 and "--words 'zebra'" in err and "not in the transcript" in err
    assert parse_words(" 2, Cat ,5") == [2, "cat", 5]
    with pytest.raises(InputError, match="names no word"):
        parse_words(" , ")


# ---------------------------------------------------------------- align / info


def test_align_table_json_and_plot(models, corpus, tmp_path, capsys):
    code, out, err = run(["align", "--model", models["main"], "--audio", corpus["root"] / "u1.wav",
                          "--text", TEXTS[1], "--json", tmp_path / "a.json", "--plot", tmp_path / "a.png"], capsys)
    assert code == 0, err
    rows = out.splitlines()
    assert rows[0].split() == ["word", "start", "end"] and len(rows) == 1 + len(TEXTS[1].split())
    stamps = json.loads((tmp_path / "a.json").read_text())
    assert [s["word"] for s in stamps] == TEXTS[1].split()
    assert all(0 <= s["start"] < s["end"] <= 1.1 + 0.05 for s in stamps)  # u1 is 1.1 s
    # monotonic DTW path (neighbouring words may share a boundary frame)
    assert all(a["start"] <= b["start"] and a["end"] <= b["end"] for a, b in zip(stamps, stamps[1:]))
    tok = TasteTokenizer.from_pretrained(models["main"])
    wav, sr = sf.read(corpus["root"] / "u1.wav", dtype="float32")
    expected = word_timestamps(tok.encode(wav, sr, TEXTS[1], return_alignment=True))
    assert [(s["start"], s["end"]) for s in stamps] == [(round(s, 4), round(e, 4)) for _, s, e in expected]
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"


def test_info_with_and_without_sample(models, corpus, capsys):
    code, out, err = run(["info", "--model", models["main"]], capsys)
    assert code == 0, err
    info = json.loads(out)
    assert info["plugins"]["vocoder"] == "griffin_lim" and "sample" not in info
    assert (info["num_quantizers"], info["codebook_size"], info["bits_per_speech_token"]) == (2, 16, 8.0)
    code, out, err = run(["info", "--model", models["main"], "--audio", corpus["root"] / "u3.wav",
                          "--text", TEXTS[3]], capsys)
    assert code == 0, err
    sample = json.loads(out)["sample"]
    assert sample["speech_tokens"] == sample["words"] == 3
    assert sample["duration_s"] == pytest.approx(1.7)
    assert sample["speech_token_rate_hz"] == pytest.approx(3 / 1.7, abs=1e-3)
    assert sample["bitrate_bps"] == pytest.approx(8 * 3 / 1.7, abs=1e-2)
    code, _, err = run(["info", "--model", models["main"], "--audio", corpus["root"] / "u3.wav"], capsys)
    assert code == 1 and "--audio and --text go together" in err


@pytest.mark.parametrize("verb", VERBS)
def test_help_exits_zero(verb, capsys):
    code, out, _ = run([verb, "--help"], capsys)
    assert code == 0 and out.startswith(f"usage: taste {verb}")
