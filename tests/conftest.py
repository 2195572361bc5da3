"""Shared fixtures: a tiny random Whisper saved to disk, thread pinning, test audio.

The tiny Whisper is built from a ``WhisperConfig``, saved with ``save_pretrained``
together with a ``WhisperFeatureExtractor`` config, and loaded back by the plugins
through the ordinary ``from_pretrained`` path, so no model hub is ever contacted.
"""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

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
