"""A shared tokenizer folder cannot run code on the loading machine.

Each test plants a payload that would create a marker file if it were ever
executed (a hyperpyyaml tag, a pickle whose ``__reduce__`` calls ``os.system``, a
Python module, a code-bearing plugin file) and checks that ``from_pretrained``
refuses the folder (or ignores the file) and that the marker never appears.
``tests/test_api.py`` covers: a ``!new:`` tag in an option, a folder holding only a
pickle, truncated / missing weights, unknown plugins, newer versions, bad JSON, a
tampered fingerprint; this file fills the other cases.
"""

import json
import os
import pickle
import shutil

import pytest
import torch

from taste_toolkit.api import TasteTokenizer
from taste_toolkit.errors import ConfigError, InputError, PluginNotFoundError, TasteError
from taste_toolkit.pretrained.standalone import CONFIG_FILE, WEIGHTS_FILE

TEXTS = ["the cat sat on the mat", "a dog ran far away", "hello world again"]
#: Every hostile case refused here (printed with -s for the closing note).
REFUSED = []


class Payload:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def saved(tiny_taste_model, tiny_whisper_dir, tmp_path_factory):
    model, text_tok = tiny_taste_model(tiny_whisper_dir, TEXTS * 5, tmp_path_factory.mktemp("sp"))
    folder = tmp_path_factory.mktemp("export") / "tok"
    TasteTokenizer(model, text_tok).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", autouse=True)
def summary():
    yield
    print(f"\nhostile-file cases refused ({len(REFUSED)}):\n  " + "\n  ".join(REFUSED))


@pytest.fixture
def copy(saved, tmp_path):
    dst = tmp_path / "tok"
    shutil.copytree(saved, dst)
    return dst


def _edit(folder, fn):
    path = folder / CONFIG_FILE
    config = json.loads(path.read_text())
    fn(config)
    path.write_text(json.dumps(config))


def refused(case, folder, marker, error=TasteError, match=None, **kwargs):
    with pytest.raises(error, match=match) as err:
        TasteTokenizer.from_pretrained(folder, **kwargs)
    assert not os.path.exists(marker), f"{case}: the payload ran"
    REFUSED.append(f"{case} -> {type(err.value).__name__}: {str(err.value)[:110]}")


TAGS = ["!new:os.system", "!apply:os.system", "!name:os.system", "!include:evil.yaml", "!ref <x>", "  !apply:os.system"]


@pytest.mark.parametrize("tag", TAGS)
@pytest.mark.parametrize("where", ["option", "nested list", "metadata", "text tokenizer option"])
def test_yaml_tags_anywhere_are_refused(copy, tmp_path, tag, where):
    marker = tmp_path / "pwned"
    value = f"{tag} ['touch {marker}']"

    def plant(c):
        if where == "option":
            c["components"]["aggregator"]["options"]["num_heads"] = value
        elif where == "nested list":
            c["components"]["decoder"]["options"]["extra"] = [1, {"deep": [value]}]
        elif where == "metadata":
            c["metadata"]["note"] = {"x": value}
        else:
            c["components"]["text_tokenizer"]["options"]["model_path"] = value

    _edit(copy, plant)
    refused(f"{tag.strip()} tag in {where}", copy, marker, ConfigError, "hyperpyyaml tag")


def test_tag_as_option_name_or_plugin_name_is_never_evaluated(copy, tmp_path):
    marker = tmp_path / "pwned"
    _edit(copy, lambda c: c["components"]["decoder"]["options"].update({f"!apply:os.system ['touch {marker}']": 1}))
    refused("tag as an option name", copy, marker, ConfigError, "Unknown option")
    _edit(copy, lambda c: c["components"]["decoder"]["options"].pop(f"!apply:os.system ['touch {marker}']"))
    _edit(copy, lambda c: c["components"]["decoder"].update(name=f"!new:os.system ['touch {marker}']"))
    refused("tag as a plugin name", copy, marker, PluginNotFoundError)


@pytest.mark.parametrize("name", ["model.ckpt", "pytorch_model.bin", "model.pt", "decoder/weights.pth",
                                  "text_tokenizer/tokenizer.pkl", "encoder/pytorch_model.bin"])
def test_pickles_next_to_a_valid_checkpoint_are_never_read(copy, tmp_path, name):
    marker = tmp_path / "pwned"
    (copy / name).parent.mkdir(exist_ok=True)
    (copy / name).write_bytes(pickle.dumps(Payload(marker)))
    tok = TasteTokenizer.from_pretrained(copy)  # loads from safetensors + JSON only
    assert tok.fingerprint and not os.path.exists(marker)
    REFUSED.append(f"pickle {name} beside valid weights: ignored, never unpickled")


@pytest.mark.parametrize("how", ["raw pickle", "torch.save zip"])
def test_pickle_disguised_as_safetensors_is_refused(copy, tmp_path, how):
    marker = tmp_path / "pwned"
    weights = copy / WEIGHTS_FILE
    if how == "raw pickle":
        weights.write_bytes(pickle.dumps(Payload(marker)))
    else:
        torch.save({"w": Payload(marker)}, weights)
    _edit(copy, lambda c: c.update(weights_bytes=weights.stat().st_size))  # consistent sizes: only the format is wrong
    refused(f"{how} as {WEIGHTS_FILE}", copy, marker, InputError, "safetensors")


def test_encoder_weights_as_pickle_are_refused(copy, tmp_path, tiny_whisper_dir):
    """An encoder told to load its weights from the folder, where a pickle waits."""
    marker = tmp_path / "pwned"
    enc = copy / "encoder"
    shutil.copy(os.path.join(tiny_whisper_dir, "config.json"), enc / "config.json")
    shutil.copy(os.path.join(tiny_whisper_dir, "preprocessor_config.json"), enc / "preprocessor_config.json")
    torch.save({"w": Payload(marker)}, enc / "pytorch_model.bin")
    for f in enc.glob("*.safetensors"):
        f.unlink()
    _edit(copy, lambda c: c["components"]["encoder"]["options"].update(source="./", init_weights=True))
    refused("pickled pytorch_model.bin loaded by the encoder plugin", copy, marker, TasteError)


def test_text_tokenizer_model_replaced_by_pickle_is_refused(copy, tmp_path):
    marker = tmp_path / "pwned"
    options = json.loads((copy / CONFIG_FILE).read_text())["components"]["text_tokenizer"]["options"]
    model_file = copy / "text_tokenizer" / options["model_path"][2:]
    model_file.write_bytes(pickle.dumps(Payload(marker)))
    refused("pickle as the SentencePiece model", copy, marker, TasteError)


def test_plugin_module_in_the_folder_is_never_imported(copy, tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    (copy / "evil_plugin.py").write_text(f"import os\nos.system('touch {marker}')\n")
    monkeypatch.chdir(copy)  # even with the folder as the working directory
    monkeypatch.syspath_prepend(str(copy))
    _edit(copy, lambda c: (c["metadata"].update(plugin_modules=["evil_plugin"]),
                           c["components"]["quantizer"].update(name="evil")))
    refused("plugin module named by the folder (plugin_modules / unknown plugin)", copy, marker, PluginNotFoundError)


def test_code_executing_plugin_needs_allow_code(copy, tmp_path):
    """The cosyvoice vocoder evaluates its folder's hyperpyyaml: never from an untrusted checkpoint."""
    marker = tmp_path / "pwned"
    voc = copy / "vocoder"
    voc.mkdir()
    (voc / "cosyvoice.yaml").write_text(f"flow: !apply:os.system ['touch {marker}']\nhift: 1\n")
    for name in ("flow.pt", "hift.pt"):
        (voc / name).write_bytes(pickle.dumps(Payload(marker)))
    _edit(copy, lambda c: c["components"].update(vocoder={"kind": "vocoder", "name": "cosyvoice",
                                                          "options": {"model_dir": "./"}}))
    refused("cosyvoice vocoder (runs its folder's hyperpyyaml) without allow_code", copy, marker, ConfigError,
            "allow_code=True")


def test_paths_cannot_leave_the_folder(copy, tmp_path):
    marker = tmp_path / "pwned"
    _edit(copy, lambda c: c["components"]["text_tokenizer"]["options"].update(model_path="./../../../../etc/passwd"))
    refused("option path escaping the folder (./../..)", copy, marker, ConfigError, "outside the checkpoint folder")


# ---------------------------------------------------------------- options naming things outside the folder


@pytest.mark.parametrize("key, value, why", [
    ("model_path", "/etc/passwd", "an absolute path"),
    ("source", "~/models/whisper", "an absolute path"),
    ("model_path", "../sentencepiece.model", "a path leaving the folder"),
    ("any_option", "/tmp/x", "an absolute path"),
    ("source", "openai/whisper-tiny", "a hub id"),
    ("model_dir", "models", "a hub id or a path relative to the current directory"),
    ("source", "./", None),
    ("model_path", "./sentencepiece.model", None),
    ("source", "builtin:tiny.en", None),
    ("model_path", "", None),
    ("tap", "values", None),  # not a path option: plain strings are plain strings
    ("num_units", 20, None),
])
def test_external_reference_classifies_option_values(key, value, why):
    from taste_toolkit.pretrained.standalone import external_reference

    found = external_reference(key, value)
    assert (found is None) if why is None else (found is not None and why in found)


def _outside(copy, tmp_path, tiny_whisper_dir, where):
    """Point one component option of ``copy`` at something outside the folder; returns (option, value)."""
    if where == "text tokenizer model_path":
        options = json.loads((copy / CONFIG_FILE).read_text())["components"]["text_tokenizer"]["options"]
        outside = tmp_path / "elsewhere" / "sp.model"
        outside.parent.mkdir()
        shutil.copy(copy / "text_tokenizer" / options["model_path"][2:], outside)
        role, key, value = "text_tokenizer", "model_path", str(outside)
    else:  # the encoder's Whisper config read from an absolute folder
        role, key, value = "encoder", "source", str(tiny_whisper_dir)
    _edit(copy, lambda c: c["components"][role]["options"].update({key: value}))
    return key, value


@pytest.mark.parametrize("where", ["text tokenizer model_path", "encoder source"])
def test_absolute_path_in_an_option_needs_allow_external(copy, tmp_path, tiny_whisper_dir, saved, where):
    reference = TasteTokenizer.from_pretrained(saved)  # relative ./ paths and nothing else: loads as before
    key, value = _outside(copy, tmp_path, tiny_whisper_dir, where)
    marker = tmp_path / "never"
    refused(f"absolute path in the {where} option without allow_external", copy, marker, ConfigError,
            f"{key}={value!r}, an absolute path")
    with pytest.raises(ConfigError) as err:
        TasteTokenizer.from_pretrained(copy)
    assert "allow_external=True" in str(err.value) and "--allow-external" in str(err.value)
    tok = TasteTokenizer.from_pretrained(copy, allow_external=True)  # opted in: the same tokenizer
    wav = torch.sin(torch.arange(16000) / 16000 * 2 * torch.pi * 220) * 0.3
    assert torch.equal(tok.encode(wav, 16000, TEXTS[0]).codes, reference.encode(wav, 16000, TEXTS[0]).codes)


def test_hub_id_in_an_option_needs_allow_external(copy, tmp_path):
    _edit(copy, lambda c: c["components"]["encoder"]["options"].update(source="someone/whisper-evil"))
    refused("hub id in the encoder source without allow_external", copy, tmp_path / "never", ConfigError,
            "source='someone/whisper-evil', a hub id")


def test_cli_allow_external_flag(copy, tmp_path, tiny_whisper_dir, capsys):
    from taste_toolkit import cli

    _outside(copy, tmp_path, tiny_whisper_dir, "text tokenizer model_path")
    assert cli.main(["info", "--model", str(copy)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "model_path=" in err and "--allow-external" in err
    assert cli.main(["info", "--model", str(copy), "--allow-external"]) == 0
    assert json.loads(capsys.readouterr().out)["plugins"]["text_tokenizer"] == "sentencepiece"
