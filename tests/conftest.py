"""Shared fixtures: a tiny random Whisper saved to disk, thread pinning, test audio.

The tiny Whisper is built from a ``WhisperConfig``, saved with ``save_pretrained``
together with a ``WhisperFeatureExtractor`` config, and loaded back by the plugins
through the ordinary ``from_pretrained`` path, so no model hub is ever contacted.
"""

import os
import random

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: Environment variable holding the seed of the Hypothesis fuzz tests (tests/test_fuzz_api.py).
FUZZ_SEED_ENV = "TASTE_FUZZ_SEED"


def _fuzz_seed():
    """The fuzzing seed of this run: ``$TASTE_FUZZ_SEED`` if set, else a fresh random one.

    Returns
    -------
    int
        The seed, in ``[0, 2**32)``.

    Raises
    ------
    pytest.UsageError
        ``TASTE_FUZZ_SEED`` is set but is not a non-negative integer.
    """
    value = os.environ.get(FUZZ_SEED_ENV, "").strip()
    if not value:
        return random.SystemRandom().randrange(2**32)
    try:
        seed = int(value)
    except ValueError:
        seed = -1
    if seed < 0:
        raise pytest.UsageError(f"{FUZZ_SEED_ENV}={value!r} is not a fuzzing seed: give the non-negative integer "
                                "printed as 'fuzz seed' by a previous run, or unset it for a fresh seed.")
    return seed


def pytest_configure(config):
    """Fix the fuzzing seed once per run and export it, so the fuzz tests (and xdist workers) read it."""
    config._taste_fuzz_seed = _fuzz_seed()
    os.environ[FUZZ_SEED_ENV] = str(config._taste_fuzz_seed)


def _reproduce_line(config):
    return (f"fuzz seed: {config._taste_fuzz_seed} (reproduce with {FUZZ_SEED_ENV}={config._taste_fuzz_seed} "
            "python -m pytest tests/test_fuzz_api.py)")


def pytest_report_header(config):
    return _reproduce_line(config)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Print the seed at the end whenever fuzz tests ran (``-q`` hides the header)."""
    def fuzz(key):
        return any("test_fuzz" in getattr(report, "nodeid", "") for report in terminalreporter.stats.get(key, []))

    if fuzz("failed") or fuzz("error"):
        terminalreporter.write_sep("-", _reproduce_line(config), red=True)
    elif fuzz("passed"):
        terminalreporter.write_line(_reproduce_line(config))

#: Geometry of the tiny Whisper (see offline-resources.md section 5).
TINY_WHISPER = dict(
    vocab_size=1000,
    num_mel_bins=80,
    d_model=64,
    encoder_layers=4,
    decoder_layers=2,
    encoder_attention_heads=4,
    decoder_attention_heads=4,
    encoder_ffn_dim=128,
    decoder_ffn_dim=128,
    max_source_positions=1500,
    max_target_positions=64,
    # Whisper's defaults (50256/50257) are outside a 1000-token vocabulary.
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
    decoder_start_token_id=3,
)


@pytest.fixture(scope="session", autouse=True)
def set_threads():
    """Tiny models on shared cores run ~10x faster single-threaded (no contention)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_whisper_dir(tmp_path_factory):
    """Folder with a random-init tiny ``WhisperModel`` and its feature-extractor config.

    It has no tokenizer files (a Whisper BPE tokenizer cannot be built offline
    for a 1000-token vocabulary).
    """
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    folder = tmp_path_factory.mktemp("tiny_whisper")
    torch.manual_seed(1234)
    model = WhisperModel(WhisperConfig(**TINY_WHISPER))
    model.save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=80, sampling_rate=16000).save_pretrained(folder)
    return str(folder)


def _waveforms(lengths, seed=0, sample_rate=16000):
    """Right-padded batch of seeded noise + sines.

    Arguments
    ---------
    lengths : list of int
        Valid samples per utterance.
    seed : int
        Seed of the noise, frequencies and phases.

    Returns
    -------
    wavs : torch.Tensor
        ``(B, max(lengths))`` float32, zeros after each length.
    wav_lengths : torch.Tensor
        ``(B,)`` long.
    """
    g = torch.Generator().manual_seed(seed)
    wavs = torch.zeros(len(lengths), max(lengths))
    for i, n in enumerate(lengths):
        t = torch.arange(n) / sample_rate
        freqs = 100 + 2000 * torch.rand(3, generator=g)
        phases = 6.283 * torch.rand(3, generator=g)
        tone = (0.2 * torch.sin(6.283 * freqs[:, None] * t[None] + phases[:, None])).sum(0)
        # Slow amplitude modulation so frames differ from each other.
        envelope = 0.6 + 0.4 * torch.sin(6.283 * (1 + i) * t)
        wavs[i, :n] = envelope * tone + 0.05 * torch.randn(n, generator=g)
    return wavs, torch.tensor(lengths, dtype=torch.long)


@pytest.fixture(scope="session")
def make_wavs():
    """``make_wavs(lengths, seed=0) -> (wavs (B, S), wav_lengths (B,))``."""
    return _waveforms


def build_tiny_taste_model(whisper_dir, transcripts, sp_dir, seed=0, text_only=False, num_units=20,
                           sp_options=None, decoder_name="unit_transformer"):
    """A tiny random ``TasteModel`` and its fitted SentencePiece tokenizer, built through the registry.

    Every component is built by ``registry.build`` (so it can be saved standalone);
    the RVQ codebooks get their k-means initialisation from one training pass with
    quantizer dropout off, so every layer holds real codes.

    Returns
    -------
    (TasteModel, TextTokenizer)
    """
    from taste_toolkit.models.tokenizer import TasteModel
    from taste_toolkit.registry import build

    torch.manual_seed(seed)
    sp = {"vocab_size": 40, "byte_fallback": False, "model_type": "char", **(sp_options or {})}
    text_tok = build("text_tokenizer", "sentencepiece", sp)
    text_tok.fit(list(transcripts), str(sp_dir))
    vocab = text_tok.vocab_size
    encoder = build("encoder", "whisper", {"source": whisper_dir, "value_layer": 2})
    if text_only:
        agg = build("aggregator", "none", {})
        quantizer = build("quantizer", "identity", {"input_dim": 0})
    else:
        agg = build("aggregator", "cross_attention", {"d_model": 32, "num_layers": 1, "num_heads": 4, "ffn_dim": 64,
                                                      "max_positions": 64, "value_identity_init": False},
                    vocab_size=vocab, key_dim=64, value_dim=64)
        quantizer = build("quantizer", "rvq", {"num_quantizers": 2, "codebook_size": 16, "codebook_dim": 8,
                                               "kmeans_iters": 3, "quantize_dropout": False}, input_dim=32)
    decoder = build("decoder", decoder_name, {"d_model": 32, "num_layers": 1, "num_heads": 4, "ffn_dim": 64,
                                                    "dropout": 0.0}, vocab_size=vocab, num_units=num_units,
                    speech_dim=agg.output_dim)
    model = TasteModel(encoder, agg, quantizer, decoder, text_tokenizer=text_tok)
    if not text_only:
        torch.manual_seed(seed)
        quantizer.train()(torch.randn(1, 40, 32), torch.tensor([40]))
        assert quantizer.initialised
    return model, text_tok


@pytest.fixture(scope="session")
def tiny_taste_model():
    """Factory: :func:`build_tiny_taste_model` (tests call it with their own transcripts)."""
    return build_tiny_taste_model
