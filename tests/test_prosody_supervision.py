"""Prosody supervision: YIN frames, per-word descriptors, and the head's loss on the quantized tokens."""

import math

import numpy as np
import pytest
import torch

from taste_toolkit.errors import ConfigError, InputError
from taste_toolkit.models.tokenizer import SpeechTokens
from taste_toolkit.training.prosody_supervision import (
    DESCRIPTORS, ProsodySupervision, relative_to_utterance, word_prosody_targets, words_from_tokens, yin_frames)

SR, RATE = 16000, 50.0
HOP = int(SR / RATE)


def tone(f0, seconds, amplitude=0.5, harmonics=3):
    """A harmonic tone (not a pure sine, so the fundamental is not the only peak)."""
    t = torch.arange(int(seconds * SR)) / SR
    return sum(amplitude / k * torch.sin(2 * math.pi * k * f0 * t) for k in range(1, harmonics + 1))


def test_yin_finds_the_fundamental_of_a_glide_and_calls_noise_aperiodic():
    t = torch.arange(2 * SR) / SR
    f = 100.0 + 100.0 * t / 2.0  # 100 -> 200 Hz over 2 s
    wav = torch.sin(2 * math.pi * torch.cumsum(f, 0) / SR)[None]
    f0, aperiodicity, _ = yin_frames(wav, SR, HOP, 100)
    truth = 100.0 + 100.0 * (torch.arange(100) * HOP + HOP // 2) / SR / 2.0
    inner = slice(3, 97)  # the first and last frames read past the ends
    rel = (f0[0, inner] / truth[inner] - 1).abs()
    assert float(rel.max()) < 0.03
    assert float(aperiodicity[0, inner].max()) < 0.1
    noise = torch.randn(1, SR, generator=torch.Generator().manual_seed(0))
    _, ap_noise, _ = yin_frames(noise, SR, HOP, 50)
    assert float(ap_noise[0, 3:47].min()) > 0.3


def test_yin_of_a_padded_batch_equals_each_row_alone():
    a, b = tone(130, 0.7), tone(210, 1.1, amplitude=0.2)
    batch = torch.zeros(2, b.numel())
    batch[0, : a.numel()], batch[1] = a, b
    f0, ap, le = yin_frames(batch, SR, HOP, 55)
    alone = yin_frames(a[None], SR, HOP, 55)
    for x, y in zip((f0[0], ap[0], le[0]), alone):
        torch.testing.assert_close(x, y[0], atol=1e-4, rtol=1e-4)


def test_word_descriptors_follow_pitch_loudness_length_and_silence():
    # Word 0: 0.4 s at 120 Hz, loud; word 1: 0.6 s at 240 Hz, 20 dB softer; word 2: 0.3 s of silence.
    wav = torch.cat([tone(120, 0.4), tone(240, 0.6, amplitude=0.05), torch.zeros(int(0.3 * SR))])[None]
    words = torch.tensor([[0] * 20 + [1] * 30 + [2] * 15])
    targets, mask = word_prosody_targets(wav, torch.tensor([wav.shape[1]]), words, SR, RATE)
    assert targets.shape == mask.shape == (1, 3, len(DESCRIPTORS))
    dur, log_f0, voiced, energy = targets[0].unbind(-1)
    torch.testing.assert_close(dur, torch.log(torch.tensor([20.0, 30.0, 15.0])))
    # (the frames within 25 ms of the change read both tones)
    assert abs(float(log_f0[1] - log_f0[0]) - math.log(2)) < 0.03
    assert abs(math.exp(float(log_f0[0])) - 120) < 3
    assert float(voiced[0]) > 0.85 and float(voiced[1]) > 0.85 and float(voiced[2]) < 0.1  # its first frame hears the tone
    assert 4.0 < float(energy[0] - energy[1]) < 5.3  # 20 dB = ln(100) = 4.6 in log power
    assert mask[0, :, [0, 2, 3]].all()
    assert mask[0, :2, 1].all() and not bool(mask[0, 2, 1])  # no F0 for the silent word


def test_digital_silence_is_unvoiced_and_has_no_f0():
    wav = torch.zeros(1, SR // 2)
    _, aperiodicity, _ = yin_frames(wav, SR, HOP, 25)
    assert torch.equal(aperiodicity, torch.ones(1, 25))
    targets, mask = word_prosody_targets(wav, torch.tensor([wav.shape[1]]), torch.tensor([[0] * 10 + [1] * 15]),
                                         SR, RATE)
    assert torch.equal(targets[0, :, 2], torch.zeros(2)) and not mask[0, :, 1].any()
    assert torch.isfinite(targets).all() and mask[0, :, [0, 2, 3]].all()


def test_word_descriptors_ignore_unit_padding_and_refuse_a_fractional_hop():
    wav = tone(150, 0.5)[None]
    words = torch.tensor([[0] * 10 + [1] * 15])
    padded = torch.cat([words, torch.full((1, 7), -1)], 1)
    t1, m1 = word_prosody_targets(wav, torch.tensor([wav.shape[1]]), words, SR, RATE)
    t2, m2 = word_prosody_targets(wav, torch.tensor([wav.shape[1]]), padded, SR, RATE)
    torch.testing.assert_close(t1, t2)
    assert torch.equal(m1, m2)
    with pytest.raises(ConfigError, match="whole number of samples"):
        word_prosody_targets(wav, torch.tensor([wav.shape[1]]), words, SR, 30.0)


def test_words_from_tokens_averages_each_words_tokens_and_skips_padding():
    x = torch.arange(12.0).view(1, 6, 2)
    word_ids = torch.tensor([[0, 0, 1, 2, 2, 9]])  # the last token is padding
    out = words_from_tokens(x, word_ids, torch.tensor([5]), 3)
    torch.testing.assert_close(out[0], torch.tensor([[1.0, 2.0], [4.0, 5.0], [7.0, 8.0]]))


def _random_targets(n_words, generator):
    targets = torch.randn(1, n_words, len(DESCRIPTORS), generator=generator)
    return targets, torch.ones_like(targets, dtype=torch.bool)


def test_head_learns_descriptors_that_the_tokens_carry_and_not_ones_they_do_not():
    g = torch.Generator().manual_seed(0)
    targets, mask = _random_targets(64, g)
    carrying = torch.cat([targets, torch.randn(1, 64, 4, generator=g)], -1)  # tokens that carry them
    blind = torch.randn(1, 64, 8, generator=g)  # tokens that do not

    def fit(x):
        torch.manual_seed(0)
        sup = ProsodySupervision(weight=1.0, speech_dim=8)
        opt = torch.optim.Adam(sup.parameters(), lr=0.05)
        tokens = SpeechTokens(x, None, torch.tensor([64]), "word")
        for _ in range(300):
            opt.zero_grad()
            loss = sup(tokens, None, None, targets, mask)
            loss.backward()
            opt.step()
        return float(loss.detach())

    assert fit(carrying) < 0.01
    assert fit(blind) > 0.6  # near the variance of the standardized targets (1.0): nothing to read


def test_loss_is_weighted_masked_and_its_gradient_reaches_the_tokens():
    g = torch.Generator().manual_seed(1)
    targets, mask = _random_targets(5, g)
    x = torch.randn(1, 5, 6, generator=g, requires_grad=True)
    tokens = SpeechTokens(x, None, torch.tensor([5]), "word")
    one = ProsodySupervision(weight=1.0, speech_dim=6)
    three = ProsodySupervision(weight=3.0, speech_dim=6)
    three.load_state_dict(one.state_dict())
    torch.testing.assert_close(three(tokens, None, None, targets, mask), 3 * one(tokens, None, None, targets, mask))
    one(tokens, None, None, targets, mask).backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    # A masked-out entry changes nothing, whatever its value.
    mask2 = mask.clone()
    mask2[0, 2, 1] = False
    moved = targets.clone()
    moved[0, 2, 1] = 1e6
    base = one(tokens, None, None, targets, mask2)
    torch.testing.assert_close(one(tokens, None, None, moved, mask2), base)


def test_token_level_tokens_are_pooled_per_word_and_a_word_count_mismatch_is_refused():
    g = torch.Generator().manual_seed(2)
    targets, mask = _random_targets(3, g)
    sup = ProsodySupervision(weight=1.0, speech_dim=4)
    words = torch.randn(1, 3, 4, generator=g)
    word_ids = torch.tensor([[0, 1, 1, 2]])
    per_token = words[:, word_ids[0]]
    a = sup(SpeechTokens(words, None, torch.tensor([3]), "word"), None, None, targets, mask)
    b = sup(SpeechTokens(per_token, None, torch.tensor([4]), "token"), word_ids, torch.tensor([4]), targets, mask)
    torch.testing.assert_close(a, b)
    with pytest.raises(InputError, match="word times"):
        sup(SpeechTokens(words[:, :2], None, torch.tensor([2]), "word"), None, None, targets, mask)
    with pytest.raises(ConfigError, match="word or token"):
        sup(SpeechTokens(words, None, torch.tensor([3]), "frame"), None, None, targets, mask)


def test_weight_zero_and_text_only_models_are_inactive_and_a_negative_weight_is_refused():
    assert ProsodySupervision(weight=1.0, speech_dim=8).active
    assert not ProsodySupervision(weight=0.0, speech_dim=8).active
    assert not ProsodySupervision(weight=1.0, speech_dim=0).active
    with pytest.raises(ConfigError, match=">= 0"):
        ProsodySupervision(weight=-1.0, speech_dim=8)


def test_yin_agrees_with_pyin_on_a_jittered_buzzy_vowel():
    """The scorer's pitch tracker (librosa pYIN) and this YIN agree on a vowel-like source:
    a vibrato glottal buzz with jitter through a resonance (deterministic)."""
    from scipy.signal import lfilter

    from taste_toolkit.metrics.signal import pitch_track

    g = np.random.default_rng(0)
    f = 110 + 30 * np.sin(2 * np.pi * 1.5 * np.arange(SR) / SR) + g.normal(0, 0.5, SR)
    pulses = np.sin(2 * np.pi * np.cumsum(f) / SR)
    wav = np.sign(pulses) * np.abs(pulses) ** 3  # buzzy: many harmonics
    wav = lfilter([1.0], [1.0, -1.3, 0.6], wav).astype(np.float32)
    wav /= np.abs(wav).max()
    ref, ref_voiced = pitch_track(wav, SR)  # 10 ms frames
    f0, ap, _ = yin_frames(torch.from_numpy(wav)[None], SR, HOP, 48)
    ours = f0[0, 2:46].numpy()
    theirs = np.interp((np.arange(2, 46) * HOP + HOP // 2) / SR, np.arange(len(ref)) * 0.01, np.nan_to_num(ref))
    assert np.mean(np.abs(ours / theirs - 1) < 0.05) > 0.9


def test_relative_descriptors_remove_each_utterances_offset_and_skip_masked_words():
    g = torch.Generator().manual_seed(4)
    base = torch.randn(1, 5, 4, generator=g)
    shifted = torch.cat([base, base + torch.tensor([0.3, 0.7, -0.2, 2.0])])  # another voice, louder and higher
    mask = torch.ones(2, 5, 4, dtype=torch.bool)
    mask[1, 4] = False  # a padded word in the second row
    shifted[1, 4] = 1e6
    rel = relative_to_utterance(shifted, mask)
    torch.testing.assert_close(rel[1, :4], relative_to_utterance(shifted[1:, :4], mask[1:, :4])[0])
    assert torch.equal(rel[1, 4], torch.zeros(4))
    torch.testing.assert_close(rel.sum(1), torch.zeros(2, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(relative_to_utterance(base, mask[:1]), relative_to_utterance(base + 5.0, mask[:1]))
    sup = ProsodySupervision(weight=1.0, speech_dim=4, relative=True)
    wav = torch.cat([tone(120, 0.4), tone(180, 0.4)])[None]
    targets, m = sup.targets(wav, torch.tensor([wav.shape[1]]), torch.tensor([[0] * 20 + [1] * 20]))
    assert targets.shape == m.shape == (1, 2, 2 * len(DESCRIPTORS)) and sup.head.out_features == 8
    torch.testing.assert_close(targets[..., 4:], relative_to_utterance(targets[..., :4], m[..., :4]))


def test_speaker_head_adds_a_cosine_loss_and_needs_the_speaker_vectors():
    g = torch.Generator().manual_seed(5)
    targets, mask = _random_targets(6, g)
    mask[0, 5] = False  # a word that does not exist
    x = torch.randn(1, 6, 8, generator=g)
    tokens = SpeechTokens(x, None, torch.tensor([6]), "word")
    with_speaker = ProsodySupervision(weight=2.0, speech_dim=8, speaker_dim=3)
    without = ProsodySupervision(weight=2.0, speech_dim=8)
    without.head.load_state_dict(with_speaker.head.state_dict())
    speaker = torch.randn(1, 3, generator=g)
    cos = torch.nn.functional.cosine_similarity(with_speaker.speaker_head(x), speaker[:, None], dim=-1)[0, :5]
    torch.testing.assert_close(with_speaker(tokens, None, None, targets, mask, speaker),
                               without(tokens, None, None, targets, mask) + 2.0 * (1 - cos).mean())
    with torch.no_grad():  # a head that reads the voice exactly: no speaker loss left
        with_speaker.speaker_head.weight.zero_()
        with_speaker.speaker_head.bias.copy_(speaker[0])
    torch.testing.assert_close(with_speaker(tokens, None, None, targets, mask, speaker),
                               without(tokens, None, None, targets, mask))
    with pytest.raises(InputError, match="speaker vectors"):
        with_speaker(tokens, None, None, targets, mask)
    with pytest.raises(InputError, match="speaker vectors"):
        with_speaker(tokens, None, None, targets, mask, torch.randn(1, 4))
    with pytest.raises(ConfigError, match="speaker_dim"):
        ProsodySupervision(weight=1.0, speech_dim=8, speaker_dim=-1)
    assert ProsodySupervision(weight=1.0, speech_dim=0, speaker_dim=3).speaker_head is None
