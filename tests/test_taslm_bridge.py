"""The text -> LLM bridge: word starts, one-word delay, labels, padding (off-by-one cases)."""

import pytest
import torch

from _taslm_fixtures import SENTENCES
from taste_toolkit.errors import InputError
from taste_toolkit.taslm.bridge import IGNORE, WordBridge


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from taste_toolkit.training.text_lm import train_bpe_tokenizer

    # A small vocabulary so long words split into several sub-words.
    return train_bpe_tokenizer(SENTENCES * 5, 60, str(tmp_path_factory.mktemp("bpe")))


WORDS = "the photographer waited near a river".split()


def codes_for(n, r=2):
    return torch.arange(n * r).reshape(n, r) + 100 * torch.arange(1, r + 1)[None] % 7  # distinct rows


def test_multi_subword_words_and_word_starts(tokenizer):
    bridge = WordBridge(tokenizer, num_quantizers=2)
    ids, word_ids = bridge.encode_words(WORDS)
    assert len(bridge.word_tokens("photographer")) > 1  # the case we want to exercise
    starts = [i == 0 or word_ids[i] != word_ids[i - 1] for i in range(len(ids))]
    assert [bool(bridge.word_start[t]) for t in ids] == starts
    assert not bridge.word_start[bridge.eos_id] and not bridge.word_start[bridge.bos_id]


def test_delay_one_layout(tokenizer):
    bridge = WordBridge(tokenizer, num_quantizers=2, delay=1)
    codes = codes_for(len(WORDS))
    ex = bridge.build(WORDS, codes)
    ids, word_ids = bridge.encode_words(WORDS)
    n = len(ids) + 2  # BOS + tokens + EOS (delay 1: no tail)
    assert ex.input_ids.tolist() == [bridge.bos_id] + ids + [bridge.eos_id]
    assert ex.word_pos.tolist() == [-1] + word_ids + [len(WORDS)]
    assert not ex.is_tail.any()
    # BOS and every sub-word of the first word get the speech pad (-1).
    first = [p for p in range(n) if ex.word_pos[p] in (-1, 0)]
    assert (ex.audio_codes[first] == -1).all()
    # Every sub-word of word w carries the TASTE token of word w - 1; EOS the last word's.
    for p in range(n):
        w = int(ex.word_pos[p])
        if w >= 1:
            assert torch.equal(ex.audio_codes[p], codes[w - 1]), p
    # Text labels: the next input id; none after EOS.
    assert ex.text_labels[:-1].tolist() == ex.input_ids[1:].tolist() and ex.text_labels[-1] == IGNORE
    # TASTE labels only where the next position starts word w >= 1 (label = word w - 1), incl. EOS.
    labelled = [p for p in range(n) if ex.taste_labels[p, 0] >= 0]
    expected = [p for p in range(n - 1) if ex.word_pos[p + 1] >= 1 and ex.word_pos[p + 1] != ex.word_pos[p]]
    assert labelled == expected and len(labelled) == len(WORDS)
    for p in labelled:
        assert torch.equal(ex.taste_labels[p], codes[int(ex.word_pos[p + 1]) - 1])
    # The last word's token is predicted at the last text token, right before EOS.
    assert labelled[-1] == n - 2


def test_delay_two_has_tail_and_delay_zero_has_none(tokenizer):
    codes = codes_for(len(WORDS))
    ex2 = WordBridge(tokenizer, 2, delay=2).build(WORDS, codes)
    W = len(WORDS)
    assert ex2.word_pos.tolist()[-2:] == [W, W + 1] and ex2.is_tail.tolist()[-2:] == [False, True]
    assert torch.equal(ex2.audio_codes[-1], codes[W - 1]) and torch.equal(ex2.audio_codes[-2], codes[W - 2])
    assert ex2.text_labels[-2] == IGNORE  # nothing to predict into the tail
    assert int((ex2.taste_labels[:, 0] >= 0).sum()) == W
    ex0 = WordBridge(tokenizer, 2, delay=0).build(WORDS, codes)
    assert not ex0.is_tail.any() and (ex0.audio_codes[-1] == -1).all()  # EOS has no word of its own
    # Delay 0: the label before word w's first token is word w itself.
    p = int((ex0.word_pos == 0).nonzero()[0]) - 1
    assert p == 0 and torch.equal(ex0.taste_labels[0], codes[0])
    assert int((ex0.taste_labels[:, 0] >= 0).sum()) == W


def test_prefix_collate_and_bad_input(tokenizer):
    bridge = WordBridge(tokenizer, 2)
    prefix = bridge.build(WORDS[:2], codes_for(2), complete=False)
    assert prefix.input_ids[-1] != bridge.eos_id and prefix.word_pos[-1] == 1
    batch = bridge.collate([bridge.build(WORDS, codes_for(6)), bridge.build(WORDS[:1], codes_for(1))])
    assert batch.lengths.tolist() == [batch.input_ids.shape[1], 3]
    assert (batch.text_labels[1, 3:] == IGNORE).all() and (batch.audio_codes[1, 3:] == -1).all()
    with pytest.raises(InputError, match="at least one word"):
        bridge.build([], None)
    with pytest.raises(InputError, match="codes must be"):
        bridge.build(WORDS, codes_for(5))
    text_only = bridge.build(WORDS, None)
    assert (text_only.audio_codes == -1).all() and (text_only.taste_labels == -1).all()
