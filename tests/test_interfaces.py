"""Tests of the plugin base classes: declared capabilities and abstract methods."""

import inspect

import pytest

from taste_toolkit import interfaces
from taste_toolkit.registry import available, get

CAPABILITIES = {
    interfaces.Aggregator: {"needs_audio": True, "needs_unit_word_ids": False},
    interfaces.UnitDecoder: {"needs_word_ids": False, "needs_unit_word_ids": False},
    interfaces.UnitExtractor: {"needs_fit": False},
    interfaces.TextTokenizer: {"needs_fit": False},
    interfaces.Metric: {"needs": frozenset()},
}


@pytest.mark.parametrize("base", list(CAPABILITIES), ids=lambda b: b.__name__)
def test_capabilities_declared_with_defaults_and_docs(base):
    source = inspect.getsource(base)
    for name, default in CAPABILITIES[base].items():
        assert getattr(base, name) == default
        # Each one is documented (``#:`` line) right above its declaration.
        lines = source.splitlines()
        index = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{name}:"))
        assert lines[index - 1].strip().startswith("#:"), f"{base.__name__}.{name} has no doc line"


def test_builtin_plugins_override_capabilities():
    assert get("aggregator", "oracle_spans").needs_unit_word_ids
    assert get("aggregator", "none").needs_audio is False
    assert get("aggregator", "cross_attention").needs_unit_word_ids is False
    decoder = get("decoder", "word_pointer_transformer")
    assert decoder.needs_word_ids and decoder.needs_unit_word_ids
    assert get("decoder", "unit_transformer").needs_word_ids is False
    assert get("units", "mel_kmeans").needs_fit and get("text_tokenizer", "sentencepiece").needs_fit


def test_every_registered_plugin_implements_its_base():
    for kind, names in available().items():
        for name in names:
            cls = get(kind, name)
            assert not inspect.isabstract(cls), f"{kind} {name!r} misses {sorted(cls.__abstractmethods__)}"


def test_speaker_without_forward_cannot_be_built():
    class Incomplete(interfaces.Speaker):
        @property
        def embedding_dim(self):
            return 3

    with pytest.raises(TypeError, match="forward"):
        Incomplete()
    assert interfaces.Speaker.__abstractmethods__ == {"embedding_dim", "forward"}


def test_metric_without_score_cannot_be_built():
    class Incomplete(interfaces.Metric):
        def summarize(self, rows):
            return {}

    with pytest.raises(TypeError, match="score"):
        Incomplete()
    assert interfaces.Metric.__abstractmethods__ == {"score", "summarize"}

    class Complete(Incomplete):
        def score(self, sample):
            return {"x": 1.0}

    metric = Complete()
    assert metric.unavailable() is None and metric.score(None) == {"x": 1.0} and metric.close() is None
