"""word_pointer_transformer: the interleaved unit/boundary stream, learning, walking generation, and its data."""

import json

import numpy as np
import pytest
import torch

from taste_toolkit import registry
from taste_toolkit.data.word_alignment import read_word_starts, split_word_starts, unit_word_ids
from taste_toolkit.errors import ConfigError, DataPreparationError, InputError

V = 6  # units; class 6 = end of speech, class 7 = word boundary
EOS, B = V, V + 1


def _decoder(seed=0, **options):
    torch.manual_seed(seed)
    opts = dict(d_model=16, num_layers=1, num_heads=2, ffn_dim=32, dropout=0.0, text_layers=0, speech_layers=0)
    opts.update(options)
    return registry.build("decoder", "word_pointer_transformer", opts, vocab_size=10, num_units=V, speech_dim=4)


def _batch():
    tokens = torch.tensor([[1, 2, 3, 4], [5, 6, 0, 0]])
    token_lengths = torch.tensor([4, 2])
    word_ids = torch.tensor([[0, 0, 1, 2], [0, 1, 0, 0]])  # 3 words (first has 2 tokens); 2 words
    speech = torch.randn(2, 4, 4, generator=torch.Generator().manual_seed(3))
    units = torch.tensor([[0, 5, 2, 1, 3, 3], [1, 1, 2, 0, 0, 0]])
    unit_lengths = torch.tensor([6, 3])
    # Utterance 0: word 1 gets no unit (two boundaries in a row); padding ids are ignored.
    unit_words = torch.tensor([[0, 0, 2, 2, 2, 2], [0, 1, 1, 9, 9, 9]])
    return tokens, token_lengths, speech, units, unit_lengths, word_ids, unit_words


def _forward(dec, batch):
    tokens, token_lengths, speech, units, unit_lengths, word_ids, unit_words = batch
    return dec(tokens, token_lengths, speech, token_lengths, units, unit_lengths,
               word_ids=word_ids, unit_word_ids=unit_words)


def test_stream_interleaves_one_boundary_per_word_change():
    out = _forward(_decoder(), _batch())
    assert out.targets.tolist() == [
        [0, 5, B, B, 2, 1, 3, 3, EOS],
        [1, B, 1, 2, EOS, -100, -100, -100, -100],
    ]
    assert out.logits.shape == (2, 9, V + 2)


def test_outputs_do_not_depend_on_the_rest_of_the_batch():
    dec = _decoder().eval()
    batch = _batch()
    both = _forward(dec, batch)
    tokens, token_lengths, speech, units, unit_lengths, word_ids, unit_words = batch
    alone = dec(tokens[1:, :2], token_lengths[1:], speech[1:, :2], token_lengths[1:], units[1:, :3],
                unit_lengths[1:], word_ids=word_ids[1:, :2], unit_word_ids=unit_words[1:, :3])
    torch.testing.assert_close(both.logits[1, :5], alone.logits[0], atol=1e-5, rtol=1e-5)


def test_accuracy_separates_units_from_boundaries():
    dec = _decoder()
    out = _forward(dec, _batch())
    counts = dec.accuracy(out)
    assert counts["total"] == 6 + 3 + 2  # units + one end of speech per utterance
    assert counts["boundary_total"] == 3
    assert counts["stream_total"] == counts["total"] + counts["boundary_total"]


def test_learns_and_generation_walks_the_words_with_and_without_cache():
    dec = _decoder()
    batch = _batch()
    opt = torch.optim.Adam(dec.parameters(), lr=1e-2)
    first = None
    for _ in range(150):
        loss = _forward(dec, batch).loss
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.05 * first
    tokens, token_lengths, speech, units, unit_lengths, word_ids, _ = batch
    for use_cache in (True, False):
        out, lengths = dec.generate(tokens, token_lengths, speech, token_lengths, word_ids=word_ids,
                                    min_len_ratio=0, use_cache=use_cache)
        assert lengths.tolist() == [6, 3]
        assert out[0].tolist() == units[0].tolist() and out[1, :3].tolist() == units[1, :3].tolist()
    # The decoder's own word starts: utterance 0 skips word 1 (two boundaries in a row);
    # utterance 1's third word is padding and starts at its end.
    *_, starts = dec.generate(tokens, token_lengths, speech, token_lengths, word_ids=word_ids, min_len_ratio=0,
                              return_word_starts=True)
    assert starts.tolist() == [[0, 2, 2], [0, 1, 3]]


def test_end_of_speech_only_on_the_last_word():
    dec = _decoder().eval()
    with torch.no_grad():  # make end of speech the favourite and boundaries unlikely
        dec.head.bias[EOS] = 1e4
        dec.head.bias[B] = -1e4
    tokens, token_lengths, speech, _, _, word_ids, _ = _batch()
    one_word = torch.zeros_like(word_ids)
    _, lengths = dec.generate(tokens, token_lengths, speech, token_lengths, word_ids=one_word,
                              min_len_ratio=1, max_len_ratio=3)
    assert lengths.tolist() == [4, 2]  # stops as soon as allowed (min_len = 1 x tokens)
    _, lengths, starts = dec.generate(tokens, token_lengths, speech, token_lengths, word_ids=word_ids,
                                      min_len_ratio=1, max_len_ratio=3, return_word_starts=True)
    assert lengths.tolist() == [12, 6]  # never reaches its last word: runs to max_len
    assert starts.tolist() == [[0, 12, 12], [0, 6, 6]]  # words never reached start at the end


def test_bad_inputs_are_clear_errors():
    dec = _decoder()
    tokens, token_lengths, speech, units, unit_lengths, word_ids, unit_words = _batch()
    with pytest.raises(InputError, match="unit_word_ids"):
        dec(tokens, token_lengths, speech, token_lengths, units, unit_lengths, word_ids=word_ids)
    with pytest.raises(InputError, match="word_ids"):
        dec.generate(tokens, token_lengths, speech, token_lengths)
    with pytest.raises(InputError, match="grow by 0 or 1"):
        dec.generate(tokens, token_lengths, speech, token_lengths, word_ids=torch.tensor([[0, 2, 2, 3], [0, 1, 0, 0]]))
    with pytest.raises(ConfigError, match="weighted_sum"):
        _decoder(fusion="concat")
    with pytest.raises(ConfigError, match="Unknown option"):
        _decoder(word_pointer=True)


def test_unit_word_ids_from_word_times(tmp_path):
    assert unit_word_ids([0.0, 0.1, 0.35], 10, 25.0).tolist() == [0, 0, 1, 1, 1, 1, 1, 1, 1, 2]
    assert unit_word_ids([0.2, 0.3], 3, 10.0).tolist() == [0, 0, 0]  # leading silence: first word
    for split, rows in {"a": [{"id": "u1", "word_start": [0.0, 0.5]}], "b": [{"id": "u2", "word_start": [0.1]}]}.items():
        (tmp_path / split).mkdir()
        (tmp_path / split / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    merged = split_word_starts(str(tmp_path), ["a+b"])
    assert merged == {"a+b": {"u1": [0.0, 0.5], "u2": [0.1]}}
    with pytest.raises(DataPreparationError, match="forced aligner"):
        read_word_starts(str(tmp_path / "missing" / "metadata.jsonl"))
    (tmp_path / "bad.jsonl").write_text(json.dumps({"id": "x"}) + "\n")
    with pytest.raises(DataPreparationError, match="word_start"):
        read_word_starts(str(tmp_path / "bad.jsonl"))


def test_tokenizer_api_decodes_with_the_word_pointer_decoder(tiny_taste_model, tiny_whisper_dir, tmp_path):
    from taste_toolkit.api import TasteTokenizer

    texts = ["the cat sat on the mat", "a dog ran far away"]
    model, text_tok = tiny_taste_model(tiny_whisper_dir, texts * 5, tmp_path / "sp",
                                       decoder_name="word_pointer_transformer")
    TasteTokenizer(model, text_tok).save_pretrained(tmp_path / "tok")
    tok = TasteTokenizer.from_pretrained(tmp_path / "tok")  # rebuilt from plain registry data
    wav = np.random.default_rng(0).standard_normal(16000).astype("float32") * 0.1
    tokens = tok.encode(wav, 16000, texts[0])
    units = tok.decode_units(tokens, max_len_ratio=3.0, min_len_ratio=0.0)
    assert units[0].numel() <= 3 * tokens.text_ids.numel()
    assert ((units[0] >= 0) & (units[0] < 20)).all()


def test_decode_gives_word_spans_from_the_decoders_own_boundaries(tiny_taste_model, tiny_whisper_dir, tmp_path):
    from taste_toolkit.api import TasteTokenizer
    from taste_toolkit.plugins.vocoder.griffin_lim import GriffinLimVocoder

    texts = ["the cat sat on the mat", "a dog ran far away"]
    model, text_tok = tiny_taste_model(tiny_whisper_dir, texts * 5, tmp_path / "sp",
                                       decoder_name="word_pointer_transformer")
    ext = registry.build("units", "mel_kmeans", {"num_units": 20, "kmeans_iters": 2})
    rng = np.random.default_rng(0)
    ext.fit([torch.from_numpy(rng.standard_normal(16000).astype("float32")) for _ in range(2)])
    tok = TasteTokenizer(model, text_tok, units=ext, vocoder=GriffinLimVocoder.from_units_extractor(ext, n_iter=2))
    assert tok.walks_words
    wav = rng.standard_normal(16000).astype("float32") * 0.1
    tokens = [tok.encode(wav, 16000, t) for t in texts]
    out = tok.decode(tokens, max_len_ratio=3.0, min_len_ratio=1.0, top_k=5,
                     generator=torch.Generator().manual_seed(0))
    for spans, units, wave, t in zip(out.word_spans, out.units, out.waveforms, tokens):
        assert len(spans) == len(t.words)
        starts = [a for a, _ in spans]
        assert starts[0] == 0 and starts == sorted(starts)
        assert all(abs(spans[w][1] - spans[w + 1][0]) < 1e-9 for w in range(len(spans) - 1))  # contiguous
        assert spans[-1][1] == pytest.approx(wave.numel() / out.sample_rate)  # the last word ends the audio
        assert sum(b - a for a, b in spans) == pytest.approx(units.numel() / ext.frame_rate)
    with pytest.raises(InputError, match="word_spans"):
        tok.decode(tokens, return_word_starts=True)
