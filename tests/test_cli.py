"""Tests of the ``taste`` command line (taste_toolkit.cli)."""

import argparse
import os
import shutil
import subprocess

import pytest

from taste_toolkit import cli, registry
from taste_toolkit.errors import DataPreparationError


def run(argv, capsys):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_plugins_lists_every_kind(capsys):
    code, out, err = run(["plugins"], capsys)
    assert code == 0, err
    lines = out.splitlines()
    for kind in registry.KINDS:
        assert f"{kind}:" in lines
    for kind, names in registry.available().items():
        for name in names:
            assert any(line.split()[:1] == [name] for line in lines), (kind, name)
    # rvq's options with their defaults, under the quantizer heading.
    rvq = lines.index(next(line for line in lines if line.split()[:1] == ["rvq"]))
    assert lines.index("quantizer:") < rvq
    assert "      input_dim = (required)" in lines[rvq + 1:]
    assert "      codebook_size = 512" in lines[rvq + 1:]


def test_plugins_one_kind(capsys):
    code, out, _ = run(["plugins", "--kind", "quantizer"], capsys)
    assert code == 0
    assert out.splitlines()[0] == "quantizer:"
    assert "rvq" in out and "identity" in out
    assert not any(f"{kind}:" in out.splitlines() for kind in registry.KINDS if kind != "quantizer")


def test_plugins_bad_kind_exit_2(capsys):
    code, out, err = run(["plugins", "--kind", "quantiser"], capsys)
    assert code == 2 and out == ""
    assert "'quantiser'" in err
    assert all(kind in err for kind in registry.KINDS)


def test_plugins_loads_module_and_reports_taste_error(capsys):
    code, out, err = run(["plugins", "-m", "taste_no_such_plugin_module"], capsys)
    assert code == 1 and out == ""
    assert err.startswith("error: ") and "taste_no_such_plugin_module" in err
    assert "Traceback" not in err


def test_usage_errors_and_help(capsys):
    assert run([], capsys)[0] == 2
    assert run(["no-such-verb"], capsys)[0] == 2
    assert run(["make-corpus"], capsys)[0] == 2  # --root is required
    code, out, _ = run(["--help"], capsys)
    assert code == 0 and all(verb in out for verb in cli.SUBCOMMANDS)


def test_a_dash_led_value_gets_a_hint_to_join_it_to_its_option(tmp_path, capsys):
    argv = ["resynthesize", "--model", str(tmp_path / "none"), "--audio", "a.wav", "--output", "o.wav"]
    code, _, err = run(argv + ["--text", "-:"], capsys)  # (argparse takes "-x y", with a space, as a value)
    assert code == 2 and "--text=-:" in err
    code, _, err = run(argv + ["--text=-:"], capsys)  # parsed: fails later, on the missing model
    assert code == 1 and "join them" not in err
    assert "join them" not in run(["make-corpus"], capsys)[2]  # other usage errors get no hint


@pytest.mark.parametrize("verb", sorted(cli.SUBCOMMANDS))
def test_every_option_has_help(verb, capsys):
    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser = sub.choices[verb]
    options = [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]
    assert options, verb
    code, out, _ = run([verb, "--help"], capsys)
    assert code == 0
    for action in options:
        assert action.help and len(action.help) > 10, action.option_strings or action.dest
        assert (action.option_strings[-1] if action.option_strings else action.metavar or action.dest) in out


def test_make_corpus_wires_arguments(monkeypatch, tmp_path, capsys):
    from taste_toolkit.data import synthetic_corpus

    calls = []

    def fake_generate(root, **kwargs):
        calls.append((root, kwargs))
        return {"root": root, "total_utterances": 7, "speakers": [{"id": 1001}]}

    monkeypatch.setattr(synthetic_corpus, "generate_corpus", fake_generate)
    code, out, _ = run(["make-corpus", "--root", str(tmp_path), "--seed", "5", "--num-speakers",
                        "3", "--train", "4", "--dev", "2", "--test", "1", "--workers", "0",
                        "--no-progress"], capsys)
    assert code == 0
    assert calls == [(str(tmp_path), dict(
        seed=5, num_speakers=3, utterances_per_split={"train": 4, "dev": 2, "test": 1},
        num_workers=0, prosody_probability=0.3, progress=False, language="en"))]
    assert '"total_utterances": 7' in out and "speakers" not in out

    def failing(root, **kwargs):
        raise DataPreparationError("folder is not ours; choose an empty --root")

    monkeypatch.setattr(synthetic_corpus, "generate_corpus", failing)
    code, out, err = run(["make-corpus", "--root", str(tmp_path)], capsys)
    assert (code, out) == (1, "")
    assert err == "error: folder is not ours; choose an empty --root\n"


def test_make_corpus_real_validation_error(tmp_path, capsys):
    # Checked before any synthesis, so this is fast and needs no espeak-ng run.
    code, _, err = run(["make-corpus", "--root", str(tmp_path), "--num-speakers", "0"], capsys)
    assert code == 1 and err.startswith("error: num_speakers must be 1..12")
    assert not os.listdir(tmp_path)


def test_console_script_installed():
    exe = shutil.which("taste")
    assert exe, "console script 'taste' not on PATH; run pip install -e /work/main"
    proc = subprocess.run([exe, "plugins", "--kind", "quantizer"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("quantizer:") and "codebook_size = 512" in proc.stdout
