"""Tests of the plugin registry: register/get/build/available, option checks, plugin loading."""

import importlib.metadata
import logging
import sys
import textwrap

import pytest

from taste_toolkit import registry
from taste_toolkit.errors import ConfigError, PluginNotFoundError
from taste_toolkit.interfaces import Speaker
from taste_toolkit.registry import available, build, get, load_plugins, register


class ToySpeaker(Speaker):
    """Toy speaker used only by these tests."""

    def __init__(self, dim: int, scale: float = 1.0, mode: str = "mean", taps: list = (1, 2)):
        super().__init__()
        self.dim, self.scale, self.mode, self.taps = dim, scale, mode, taps

    @property
    def embedding_dim(self):
        return self.dim

    def forward(self, wavs, wav_lengths):
        return wavs.new_zeros(wavs.shape[0], self.dim)


class OtherSpeaker(Speaker):
    """Second toy speaker, to collide with the first."""

    def __init__(self, dim: int = 2):
        super().__init__()
        self.dim = dim

    embedding_dim = ToySpeaker.embedding_dim
    forward = ToySpeaker.forward


@pytest.fixture(autouse=True)
def clean_registry(monkeypatch):
    """Snapshot the registry (built-ins loaded) and restore it after each test."""
    available()  # load built-ins and entry points first, so they are in the snapshot
    snapshot = {kind: dict(plugins) for kind, plugins in registry._REGISTRY.items()}
    modules = set(sys.modules)
    monkeypatch.setattr(registry, "_loaded_entry_points", registry._loaded_entry_points)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(snapshot)
    # Plugin modules imported by a test must import (and register) again next time.
    for name in set(sys.modules) - modules:
        if name.startswith("taste_test_plugin"):
            del sys.modules[name]


@pytest.fixture
def toy():
    return register("speaker", "toy_test")(ToySpeaker)


# ------------------------------------------------------------------ basics


def test_register_get_build_available(toy):
    assert get("speaker", "toy_test") is ToySpeaker
    assert ToySpeaker.registry_name == "toy_test" and ToySpeaker.registry_kind == "speaker"
    assert "toy_test" in available("speaker")
    everything = available()
    assert set(everything) == set(registry.KINDS)
    assert "toy_test" in everything["speaker"] and "toy_test" not in everything["quantizer"]
    assert available("speaker") == sorted(available("speaker"))
    obj = build("speaker", "toy_test", {"dim": 3, "scale": 2, "taps": [4]})
    assert isinstance(obj, ToySpeaker)
    assert (obj.dim, obj.scale, obj.mode, obj.taps) == (3, 2, "mean", [4])


def test_builtins_are_registered():
    assert {"rvq", "identity"} <= set(available("quantizer"))
    q = build("quantizer", "identity", {"input_dim": 5})
    assert q.input_dim == 5 and q.registry_name == "identity"


def test_unknown_name_lists_available():
    with pytest.raises(PluginNotFoundError) as info:
        get("quantizer", "no_such_quantizer")
    message = str(info.value)
    assert "no_such_quantizer" in message
    for name in available("quantizer"):
        assert name in message
    # Both a ConfigError (the toolkit's) and a KeyError (a lookup) for callers.
    assert isinstance(info.value, ConfigError) and isinstance(info.value, KeyError)
    with pytest.raises(PluginNotFoundError, match="rvq"):
        build("quantizer", "no_such_quantizer", {"input_dim": 4})


def test_unknown_kind():
    for call in (
        lambda: get("no_kind", "x"),
        lambda: available("no_kind"),
        lambda: build("no_kind", "x"),
        lambda: register("no_kind", "x"),
    ):
        with pytest.raises(ConfigError, match="Unknown plugin kind 'no_kind'") as info:
            call()
        assert all(kind in str(info.value) for kind in registry.KINDS)


# ------------------------------------------------------------------ option checks


def _accepted_listed(message):
    return all(part in message for part in ("dim", "scale=1.0", "mode='mean'", "taps=(1, 2)"))


def test_unknown_option_names_plugin_and_accepted(toy):
    with pytest.raises(ConfigError) as info:
        build("speaker", "toy_test", {"dim": 3, "colour": "red"})
    message = str(info.value)
    assert "'colour'" in message and "'toy_test'" in message and _accepted_listed(message)


def test_missing_option_names_plugin_and_accepted(toy):
    with pytest.raises(ConfigError) as info:
        build("speaker", "toy_test", {"scale": 2.0})
    message = str(info.value)
    assert "Missing" in message and "'dim'" in message and "'toy_test'" in message
    assert _accepted_listed(message)


@pytest.mark.parametrize(
    "options",
    [{"dim": "3"}, {"dim": 3.0}, {"dim": True}, {"dim": 3, "scale": "big"},
     {"dim": 3, "mode": 1}, {"dim": 3, "taps": 5}],
)
def test_mistyped_option_names_plugin(toy, options):
    bad = [k for k in options if k != "dim"] or ["dim"]
    with pytest.raises(ConfigError) as info:
        build("speaker", "toy_test", options)
    message = str(info.value)
    assert f"'{bad[0]}'" in message and "'toy_test'" in message and "must be" in message


def test_well_typed_options_pass(toy):
    # int is accepted for float, tuple for list, None for anything (an unset YAML value).
    obj = build("speaker", "toy_test", {"dim": 1, "scale": 3, "taps": (7,), "mode": None})
    assert (obj.scale, obj.taps, obj.mode) == (3, (7,), None)


def test_options_and_blocks_are_exclusive(toy):
    with pytest.raises(ConfigError, match="either options or blocks"):
        build("speaker", "toy_test", {"dim": 1}, blocks={"toy_test": {"dim": 1}})
    with pytest.raises(ConfigError, match="mapping"):
        build("speaker", "toy_test", blocks=[("toy_test", {})])


def test_flat_options_given_as_blocks_are_a_clear_error(toy):
    # vocoder_options: {n_iter: 32} (the old flat form) must not silently drop n_iter.
    with pytest.raises(ConfigError) as info:
        build("speaker", "toy_test", blocks={"dim": 3})
    message = str(info.value)
    assert "key 'dim' holds 3" in message and "speaker_options: {toy_test: {dim: 3}}" in message
    assert registry.select_block("vocoder", "griffin_lim", {"griffin_lim": {"n_iter": 4}, "unit_to_spec": None}) == {
        "n_iter": 4}
    assert registry.select_block("vocoder", "griffin_lim", {"unit_to_spec": {}}) == {}


# ------------------------------------------------------------------ blocks and extras


RVQ_BLOCKS = {
    "rvq": {"num_quantizers": 2, "codebook_size": 512, "codebook_dim": 4, "kmeans_init": False},
    "identity": {},
}


def test_blocks_select_only_the_chosen_plugin():
    # The rvq block is full of keys identity does not accept: they must not leak into it.
    q = build("quantizer", "identity", blocks=RVQ_BLOCKS, input_dim=8)
    assert q.registry_name == "identity" and q.input_dim == 8
    # A missing block means "no options", not an error.
    q = build("quantizer", "identity", blocks={"rvq": RVQ_BLOCKS["rvq"]}, input_dim=8)
    assert q.registry_name == "identity"
    q = build("quantizer", "rvq", blocks=RVQ_BLOCKS, input_dim=8)
    assert (q.num_quantizers, q.codebook_size, q.input_dim) == (2, 512, 8)


# ------------------------------------------------------------------ recorded options


def test_every_instance_records_its_spec_and_options(toy):
    built = build("speaker", "toy_test", {"dim": 3, "taps": [4]})
    direct = ToySpeaker(3, taps=[4])  # a direct call records exactly what build() records
    for obj in (built, direct):
        assert obj.build_spec == {"kind": "speaker", "name": "toy_test", "options": {"dim": 3, "taps": [4]}}
        assert obj.options == {"dim": 3, "scale": 1.0, "mode": "mean", "taps": [4]}
    rebuilt = build(**{k: v for k, v in direct.build_spec.items()})
    assert rebuilt.options == direct.options and rebuilt.build_spec == direct.build_spec


def test_resolve_options_is_the_one_hook_for_derived_values(toy):
    class Derived(ToySpeaker):
        def __init__(self, dim: int = 2, scale: float = None):
            super().__init__(dim, scale=float(dim) if scale is None else scale)

        def resolve_options(self, options):
            return dict(options, scale=self.scale)

    register("speaker", "toy_derived")(Derived)
    obj = build("speaker", "toy_derived", {"dim": 5})
    # Only the outermost registered __init__ records: the subclass's own options, once.
    assert obj.build_spec == {"kind": "speaker", "name": "toy_derived", "options": {"dim": 5}}
    assert obj.options == {"dim": 5, "scale": 5.0}
    assert build("speaker", "toy_derived", obj.options).options == obj.options


def test_unregistered_subclass_records_what_it_passed_to_its_plugin(toy):
    class Counting(ToySpeaker):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.calls = 0

    obj = Counting(dim=2, mode="max")
    assert obj.build_spec == {"kind": "speaker", "name": "toy_test", "options": {"dim": 2, "mode": "max"}}
    assert obj.options["mode"] == "max" and obj.options["scale"] == 1.0


def test_builtin_vocoders_record_resolved_options():
    from taste_toolkit.plugins.vocoder.unit_to_spec import UnitToSpecVocoder

    voc = build("vocoder", "griffin_lim", {"num_units": 4, "n_mels": 16, "n_fft": 256, "hop_length": 64})
    assert voc.build_spec["options"] == {"num_units": 4, "n_mels": 16, "n_fft": 256, "hop_length": 64}
    assert voc.options["win_length"] == 256 and voc.options["f_max"] == 8000.0  # derived, not None
    uts = UnitToSpecVocoder(num_units=4, dim=8, unit_dilations=(1, 2), frame_dilations=(1,), n_iter=2)
    assert uts.options["unit_dilations"] == [1, 2] and uts.options["units_fingerprint"] == ""
    assert uts.build_spec["options"] == {"num_units": 4, "dim": 8, "unit_dilations": (1, 2),
                                         "frame_dilations": (1,), "n_iter": 2}


def test_extras_passed_only_when_accepted(toy):
    # `vocab_size` is not an option of toy_test: dropped, not an error.
    obj = build("speaker", "toy_test", {}, dim=4, vocab_size=100)
    assert obj.dim == 4
    # The plugin's own block wins over a caller-wired size.
    obj = build("speaker", "toy_test", blocks={"toy_test": {"dim": 2}}, dim=4)
    assert obj.dim == 2
    # Wired extras are type-checked like options.
    with pytest.raises(ConfigError, match="'dim'"):
        build("speaker", "toy_test", dim="4")


# ------------------------------------------------------------------ registration rules


def test_duplicate_override_and_idempotent(toy):
    with pytest.raises(ConfigError) as info:
        register("speaker", "toy_test")(OtherSpeaker)
    message = str(info.value)
    assert "already registered" in message and "ToySpeaker" in message and "override=True" in message
    assert get("speaker", "toy_test") is ToySpeaker
    # Same class again (a module imported twice): no error.
    assert register("speaker", "toy_test")(ToySpeaker) is ToySpeaker
    register("speaker", "toy_test", override=True)(OtherSpeaker)
    assert get("speaker", "toy_test") is OtherSpeaker
    assert build("speaker", "toy_test").dim == 2


def test_non_subclass_rejected():
    with pytest.raises(ConfigError, match="must subclass taste_toolkit.interfaces.Quantizer"):
        register("quantizer", "toy_wrong_base")(ToySpeaker)
    with pytest.raises(ConfigError, match="must subclass"):
        register("speaker", "toy_not_a_class")(lambda dim: None)
    assert "toy_wrong_base" not in available("quantizer")


# ------------------------------------------------------------------ plugin loading


PLUGIN_SOURCE = textwrap.dedent(
    '''
    from taste_toolkit.interfaces import Speaker
    from taste_toolkit.registry import register

    @register("speaker", "{name}")
    class LoadedSpeaker(Speaker):
        """Registered by importing this module."""

        def __init__(self, dim: int = 3):
            super().__init__()
            self.dim = dim

        @property
        def embedding_dim(self):
            return self.dim

        def forward(self, wavs, wav_lengths):
            return wavs.new_zeros(wavs.shape[0], self.dim)
    '''
)


def _write_module(tmp_path, monkeypatch, module, body):
    (tmp_path / f"{module}.py").write_text(body, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))


def test_load_plugins_registers_module(tmp_path, monkeypatch):
    _write_module(tmp_path, monkeypatch, "taste_test_plugin_ok",
                  PLUGIN_SOURCE.format(name="loaded_test"))
    assert "loaded_test" not in available("speaker")
    assert load_plugins(["taste_test_plugin_ok"]) == ["taste_test_plugin_ok"]
    assert "loaded_test" in available("speaker")
    assert build("speaker", "loaded_test").dim == 3
    assert load_plugins([]) == [] and load_plugins(None) == []


def test_load_plugins_bad_module():
    with pytest.raises(ConfigError, match="taste_test_plugin_missing_xyz.*cannot be imported"):
        load_plugins(["taste_test_plugin_missing_xyz"])


class FakeEntryPoint:
    """Stands in for importlib.metadata.EntryPoint: name, value, load()."""

    def __init__(self, name, module):
        self.name, self.value = name, module

    def load(self):
        return importlib.import_module(self.value)


def _fake_entry_points(tmp_path, monkeypatch):
    _write_module(tmp_path, monkeypatch, "taste_test_plugin_broken",
                  "raise RuntimeError('plugin import exploded')\n")
    _write_module(tmp_path, monkeypatch, "taste_test_plugin_good",
                  PLUGIN_SOURCE.format(name="entry_point_test"))
    points = [FakeEntryPoint("broken", "taste_test_plugin_broken"),
              FakeEntryPoint("good", "taste_test_plugin_good")]
    seen_groups = []

    def entry_points(group=None):
        seen_groups.append(group)
        return points

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    monkeypatch.setattr(registry, "_loaded_entry_points", False)
    return seen_groups


def test_broken_entry_point_logged_and_skipped(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("TASTE_STRICT_PLUGINS", raising=False)
    groups = _fake_entry_points(tmp_path, monkeypatch)
    with caplog.at_level(logging.WARNING, logger="taste_toolkit.registry"):
        registry.load_entry_points()
    assert groups == ["taste_toolkit.plugins"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("broken" in m and "plugin import exploded" in m for m in warnings), warnings
    # The good plugin after the broken one still registered.
    assert "entry_point_test" in available("speaker")
    # Entry points are scanned once per process.
    registry.load_entry_points()
    assert groups == ["taste_toolkit.plugins"]


def test_broken_entry_point_strict(tmp_path, monkeypatch):
    monkeypatch.setenv("TASTE_STRICT_PLUGINS", "1")
    _fake_entry_points(tmp_path, monkeypatch)
    with pytest.raises(RuntimeError, match="plugin import exploded"):
        registry.load_entry_points()
