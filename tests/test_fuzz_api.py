"""Property-based input fuzzing of ``encode`` / ``decode`` / ``reconstruct`` and the ``taste`` CLI.

Inputs: audio of 0-40 s at 8-48 kHz, mono or stereo in both layouts, float and
integer dtypes, NaN / inf samples, silence, loud noise; texts that are empty,
whitespace, arbitrary unicode, digits, a few words or up to 1000 words; damaged
tokens and decoding options; unreadable files. Every case must return a result or
raise the toolkit's own :class:`~taste_toolkit.errors.TasteError` with a message
saying what to fix (the CLI: exit code 1 and ``error: ...``); no other exception
may escape, and a per-example deadline catches hangs.

Each run explores new inputs: the seed is fresh per pytest run unless the
environment variable ``TASTE_FUZZ_SEED`` is set (``tests/conftest.py``). It is
printed in the pytest header (``fuzz seed: N``) and again in the summary when a
fuzz test fails; ``TASTE_FUZZ_SEED=N python -m pytest tests/test_fuzz_api.py``
replays exactly the same inputs (no example database is used, so the seed alone
decides them). Modest ``max_examples`` keep the file under two minutes; the number of
inputs tried per entry point (1000 in all) is printed (``-s``) and checked.
"""

import copy
import csv
import json
import os
import sys
from collections import Counter
from datetime import timedelta

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from taste_toolkit import cli
from taste_toolkit.api import TasteTokenizer
from taste_toolkit.errors import TasteError
from taste_toolkit.registry import build
from taste_toolkit.tokens import TasteTokens

def _shield_lazy_modules():
    """Give SpeechBrain's not-yet-imported ``LazyModule`` proxies a ``__file__`` of None.

    Hypothesis scans ``sys.modules`` for constants, reading each module's ``__file__``;
    on a proxy of an optional dependency that is not installed (``k2``) that read
    imports it and raises ImportError, which would abort the whole pytest session.
    """
    for module in list(sys.modules.values()):
        if type(module).__name__ in ("LazyModule", "DeprecatedModuleRedirect") and "__file__" not in vars(module):
            vars(module)["__file__"] = None


def _install_shield():
    try:
        from hypothesis.internal.conjecture import providers
    except ImportError:  # another hypothesis layout: nothing to patch
        return
    original = getattr(providers, "_get_local_constants", None)
    if original is None or getattr(original, "_taste_shielded", False):
        return

    def shielded():
        _shield_lazy_modules()
        return original()

    shielded._taste_shielded = True
    providers._get_local_constants = shielded


_install_shield()

TRAIN_TEXTS = ["the cat sat on the mat", "a dog ran far away", "hello world again"]
WORDS = ["the", "cat", "sat", "on", "mat", "dog", "ran", "far", "away", "hello"]
#: Inputs per entry point: 1040 per run in all (the audit's floor is 1000), about 2 min on 2 shared cores.
EXAMPLES = {"encode": 300, "decode": 400, "reconstruct": 100, "cli": 200, "tiny_en_export": 40}
#: Inputs tried per entry point, and how many of them raised a TasteError.
TRIED, REFUSED = Counter(), Counter()
REASONS = Counter()  # (entry point, start of the error message): what the refusals were
#: This run's seed, set by tests/conftest.py (fresh, or $TASTE_FUZZ_SEED to replay a run).
FUZZ_SEED = int(os.environ.get("TASTE_FUZZ_SEED") or 0)
FUZZ = dict(
    derandomize=False,  # the seed below decides the inputs: new ones each run, replayable
    database=None,  # nothing replayed from earlier runs: the printed seed alone reproduces a run
    deadline=timedelta(seconds=30),  # generous on shared cores; a hang is minutes
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    print_blob=True,
)


@pytest.fixture(scope="module")
def tok(tiny_taste_model, tiny_whisper_dir, tmp_path_factory):
    model, text_tok = tiny_taste_model(tiny_whisper_dir, TRAIN_TEXTS * 5, tmp_path_factory.mktemp("sp"))
    voc = build("vocoder", "griffin_lim", {"num_units": 20, "n_mels": 16, "stack": 1, "n_fft": 256,
                                           "hop_length": 64, "n_iter": 2})
    voc.load_table(torch.linspace(-6, 0, 20 * 16).reshape(20, 1, 16))
    return TasteTokenizer(model, text_tok, vocoder=voc)


@pytest.fixture(scope="module")
def saved(tok, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz_model") / "tok"
    tok.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    yield
    print(f"\nfuzz seed {FUZZ_SEED}; fuzzed inputs per entry point (tried / refused with a TasteError): "
          + ", ".join(f"{k}: {TRIED[k]} / {REFUSED[k]}" for k in EXAMPLES))
    for (entry, reason), n in sorted(REASONS.items()):
        print(f"  {entry:12s} {n:4d}  {reason}")


def outcome(entry, fn):
    """Run ``fn``: a result, or a TasteError with a useful message; anything else fails the test."""
    TRIED[entry] += 1
    try:
        return fn()
    except TasteError as exc:
        REFUSED[entry] += 1
        REASONS[entry, str(exc)[:45]] += 1
        assert len(str(exc)) > 20, f"unhelpful message: {exc!r}"
        return exc


# ---------------------------------------------------------------- strategies

RATES = st.one_of(st.sampled_from([8000, 11025, 16000, 22050, 44100, 48000]), st.integers(8000, 48000))
DTYPES = ["float32", "float64", "float16", "int16", "int32", "int8", "uint8"]


@st.composite
def audio(draw):
    """``(array, sample_rate)``: 0-40 s, any rate, layout, dtype, content."""
    sr = draw(RATES)
    # mostly valid lengths (0.05-3 s), plus empty, too short, long and too long (> 30 s)
    # (hypothesis favours the first branches: the valid ones come first)
    seconds = draw(st.one_of(st.floats(0.05, 3.0), st.floats(3.0, 40.0), st.floats(0, 0.05), st.just(0.0)))
    n = int(seconds * sr)
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    kind = draw(st.sampled_from(["sine", "noise", "silence", "loud"]))
    t = np.arange(n) / sr
    x = {"noise": 0.1 * rng.standard_normal(n), "silence": np.zeros(n), "sine": 0.5 * np.sin(2 * np.pi * 220 * t),
         "loud": np.clip(3 * rng.standard_normal(n), -1, 1)}[kind]
    layout = draw(st.sampled_from(["mono", "mono", "SxC", "CxS"]))
    if layout != "mono":
        x = np.stack([x, x[::-1]], 1 if layout == "SxC" else 0)
    dtype = draw(st.sampled_from(DTYPES))
    if dtype.startswith("float"):
        special = draw(st.sampled_from([None] * 6 + ["nan", "inf", "-inf"]))
        if special and x.size:
            x.flat[rng.integers(x.size)] = float(special)
        return x.astype(dtype), sr
    info = np.iinfo(dtype)
    scaled = (x + 1) / 2 * (info.max - info.min) + info.min if dtype == "uint8" else x * info.max
    return scaled.astype(dtype), sr


WORD_LISTS = st.lists(st.sampled_from(WORDS), min_size=1, max_size=8).map(" ".join)
TEXTS = st.one_of(
    WORD_LISTS,
    st.text(min_size=1, max_size=20),  # arbitrary unicode (letters, symbols, controls, emoji)
    st.from_regex(r"[0-9][0-9 ,.]{0,12}", fullmatch=True),
    st.integers(13, 1000).map(lambda n: " ".join(WORDS[i % len(WORDS)] for i in range(n))),  # up to 1000 words
    st.sampled_from([" ", "\t\n", " \u3000 \u200b "]),
    st.just(""),
)


# ---------------------------------------------------------------- encode / reconstruct


@settings(max_examples=EXAMPLES["encode"], **FUZZ)
@seed(FUZZ_SEED)
@given(sample=audio(), text=TEXTS, embeddings=st.booleans())
def test_encode_never_crashes(tok, sample, text, embeddings):
    wav, sr = sample
    result = outcome("encode", lambda: tok.encode(wav, sr, text, return_embeddings=embeddings))
    if isinstance(result, TasteTokens):
        assert result.codes.shape == (len(result.words), 2)
        assert result.text_ids.shape == result.word_ids.shape and result.text_ids.numel() > 0
        assert 0 < result.duration <= 30.0


@settings(max_examples=EXAMPLES["reconstruct"], **FUZZ)
@seed(FUZZ_SEED)
@given(sample=audio(), text=TEXTS)
def test_reconstruct_never_crashes(tok, sample, text):
    wav, sr = sample
    result = outcome("reconstruct", lambda: tok.reconstruct(wav, sr, text))
    if not isinstance(result, TasteError):
        assert len(result.units) == 1 and result.units[0].dim() == 1
        assert torch.isfinite(result.waveforms[0]).all()


# ---------------------------------------------------------------- decode

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)
OPTIONS = st.fixed_dictionaries({}, optional={
    "top_k": st.integers(-3, 40),
    "temperature": st.floats(allow_nan=True, allow_infinity=True),
    "max_len_ratio": st.one_of(st.floats(-1, 1e6), st.just(float("nan"))),
    "min_len_ratio": st.floats(-1, 50),
})
FIELDS = ["codes", "text_ids", "word_ids", "level", "fingerprint", "speaker", "embeddings", "record"]


@pytest.fixture(scope="module")
def base_tokens(tok):
    g = torch.Generator().manual_seed(0)
    return [tok.encode((0.1 * torch.randn(int(16000 * s), generator=g)).numpy(), 16000, text)
            for s, text in ((1.0, TRAIN_TEXTS[0]), (2.0, TRAIN_TEXTS[1]), (0.5, "cat"))]


def _tensor(data, dtype_name):
    """A random tensor of random shape and dtype (drawn with hypothesis)."""
    shape = data.draw(st.lists(st.integers(0, 5), min_size=0, max_size=3))
    values = data.draw(st.lists(st.integers(-5, 60), min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
    return torch.tensor(values, dtype=getattr(torch, dtype_name)).reshape(shape)


@settings(max_examples=EXAMPLES["decode"], **FUZZ)
@seed(FUZZ_SEED)
@given(data=st.data())
def test_decode_never_crashes(tok, base_tokens, data):
    tokens = copy.deepcopy(data.draw(st.sampled_from(base_tokens)))
    field = data.draw(st.one_of(st.none(), st.sampled_from(FIELDS)))
    if field in ("codes", "text_ids", "word_ids", "speaker", "embeddings"):
        dtype = data.draw(st.sampled_from(["long", "int32", "float32", "bool"]))
        setattr(tokens, field, _tensor(data, dtype))
    elif field == "level":
        tokens.level = data.draw(st.sampled_from(["word", "token", "frame", "none", "", "WORD"]))
    elif field == "fingerprint":
        tokens.fingerprint = data.draw(st.sampled_from(["", "0123456789abcdef"]))
    elif field == "record":  # a damaged JSON line of a tokens file
        record = json.loads(json.dumps(tokens.to_dict()))
        key = data.draw(st.sampled_from(sorted(record) + ["speaker", "embeddings"]))
        if data.draw(st.booleans()):
            record.pop(key, None)
        else:
            record[key] = data.draw(JSON)
        parsed = outcome("decode", lambda: TasteTokens.from_dict(record))
        if isinstance(parsed, TasteError):
            return
        TRIED["decode"] -= 1  # the decode below is the same input
        tokens = parsed
    options = data.draw(st.one_of(st.just({}), st.just({"top_k": 3}), OPTIONS, st.just({"beam": 4})))
    result = outcome("decode", lambda: tok.decode(tokens, **options))
    if not isinstance(result, TasteError):
        assert len(result.units) == 1 and result.units[0].dtype == torch.long
        assert result.units[0].numel() == 0 or int(result.units[0].min()) >= 0


# ---------------------------------------------------------------- CLI

SUBTYPES = [("wav", "PCM_16"), ("wav", "PCM_24"), ("wav", "FLOAT"), ("wav", "PCM_U8"), ("flac", "PCM_16")]


@st.composite
def audio_file(draw, folder):
    """Path of an audio file (any rate/channels/subtype, possibly NaN, empty or not audio at all)."""
    name = folder / f"in{TRIED['cli']}"
    kind = draw(st.one_of(st.just("audio"), st.sampled_from(["junk", "empty", "missing"])))
    if kind == "missing":
        return str(name) + ".wav"
    if kind in ("junk", "empty"):
        path = str(name) + ".wav"
        with open(path, "wb") as f:
            f.write(b"" if kind == "empty" else bytes(draw(st.binary(min_size=1, max_size=200))))
        return path
    wav, sr = draw(audio())
    if wav.dtype.kind in "iu":
        info = np.iinfo(wav.dtype)
        wav = (wav.astype(np.float64) - (info.min + info.max + 1) / 2) / (info.max + 1)
    wav = wav.astype(np.float32)
    if wav.ndim == 2 and wav.shape[0] == 2 and wav.shape[1] != 2:  # (C, S) -> soundfile's (S, C)
        wav = wav.T
    ext, subtype = draw(st.sampled_from(SUBTYPES))
    if subtype != "FLOAT":
        wav = np.nan_to_num(wav, posinf=1.0, neginf=-1.0)
    path = f"{name}.{ext}"
    sf.write(path, wav, sr, subtype=subtype)
    return path


@settings(max_examples=EXAMPLES["cli"], **{**FUZZ, "suppress_health_check": FUZZ["suppress_health_check"]
                                           + [HealthCheck.function_scoped_fixture]})
@seed(FUZZ_SEED)
@given(data=st.data())
def test_cli_never_crashes(saved, tmp_path_factory, data, capsys):
    folder = tmp_path_factory.mktemp("cli")
    verb = data.draw(st.sampled_from(["resynthesize", "tokenize", "info", "align", "edit"]))
    path = data.draw(audio_file(folder))
    text = data.draw(TEXTS)
    if verb == "tokenize":
        manifest = folder / "m.csv"
        with open(manifest, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["ID", "duration", "wav", "spk_id", "wrd"])
            w.writerow(["u0", "1.0", path, "1", text])
        argv = ["tokenize", "--model", saved, "--manifest", str(manifest), "--output", str(folder / "t.jsonl"),
                "--no-progress"]
    elif verb == "edit":
        # --text=VALUE: argparse reads a separate value that starts with "-" as an option
        # (a usage error, exit 2); the joined form passes any transcript.
        argv = ["edit", "--model", saved, "--audio-a", path, "--audio-b", path, f"--text={text}",
                "--words", data.draw(st.sampled_from(["0", "0,1", "cat", "-1", "99", ","])),
                "--output", str(folder / "out.wav")]
    else:
        argv = [verb, "--model", saved, "--audio", path, f"--text={text}"]
        argv += ["--output", str(folder / "out.wav")] if verb == "resynthesize" else []
    TRIED["cli"] += 1
    code = cli.main(argv)  # anything but a TasteError propagates and fails the test
    _, err = capsys.readouterr()
    assert code in (0, 1), (argv, code, err)
    if code == 1:
        REFUSED["cli"] += 1
        REASONS["cli", err.strip().splitlines()[-1].split("pytest-of-root")[-1][-70:]] += 1
        assert err.startswith("error: ") and len(err) > 25, err


@pytest.fixture(scope="module")
def tiny_en_export(tmp_path_factory):
    """A tokenizer on the REAL pretrained Whisper tiny.en (encoder and text tokenizer), exported
    with ``save_pretrained`` and loaded back with ``from_pretrained`` as a user would; the
    aggregator, RVQ and decoder are small and random (their weights do not matter for crashes)."""
    from taste_toolkit.models.tokenizer import TasteModel

    torch.manual_seed(0)
    text_tok = build("text_tokenizer", "whisper", {"source": "builtin:tiny.en"})
    encoder = build("encoder", "whisper", {"source": "builtin:tiny.en", "value_layer": 1})
    agg = build("aggregator", "cross_attention", {"d_model": 32, "num_layers": 1, "num_heads": 4, "ffn_dim": 64,
                                                  "max_positions": 448, "value_identity_init": False},
                vocab_size=text_tok.vocab_size, key_dim=384, value_dim=384)
    quantizer = build("quantizer", "rvq", {"num_quantizers": 2, "codebook_size": 16, "codebook_dim": 8,
                                           "kmeans_iters": 3, "quantize_dropout": False}, input_dim=32)
    decoder = build("decoder", "unit_transformer", {"d_model": 32, "num_layers": 1, "num_heads": 4, "ffn_dim": 64,
                                                    "dropout": 0.0}, vocab_size=text_tok.vocab_size, num_units=20,
                    speech_dim=agg.output_dim)
    quantizer.init_codebooks(torch.randn(64, 32))
    folder = tmp_path_factory.mktemp("tiny_en_export") / "tok"
    TasteTokenizer(TasteModel(encoder, agg, quantizer, decoder, text_tokenizer=text_tok), text_tok).save_pretrained(folder)
    return TasteTokenizer.from_pretrained(folder)


@settings(max_examples=EXAMPLES["tiny_en_export"], **FUZZ)
@seed(FUZZ_SEED)
@given(sample=audio(), text=TEXTS)
def test_exported_tiny_en_tokenizer_encode_decode_never_crash(tiny_en_export, sample, text):
    wav, sr = sample
    result = outcome("tiny_en_export", lambda: tiny_en_export.encode(wav, sr, text))
    if isinstance(result, TasteTokens):
        assert result.codes.shape == (len(result.words), 2) and 0 < result.duration <= 30.0
        decoded = tiny_en_export.decode(result, max_len_ratio=2.0)
        assert len(decoded.units) == 1 and decoded.units[0].dim() == 1


def test_every_entry_point_was_fuzzed():
    """Runs last in the file: each entry point tried its full quota of inputs."""
    for entry, n in EXAMPLES.items():
        assert TRIED[entry] >= n, (entry, TRIED[entry])


def test_unusual_sample_rates_resample_fast_and_correctly():
    """Found by the fuzzer: 25337 Hz -> 16 kHz (gcd 1) took ~30 s through a 400 M-tap polyphase filter."""
    import time

    from taste_toolkit.audio import prepare_waveform

    t = np.arange(25337 * 3) / 25337
    start = time.time()
    out = prepare_waveform(np.sin(2 * np.pi * 440 * t).astype(np.float32), 25337)
    assert time.time() - start < 2.0 and out.shape == (48000,)
    ref = np.sin(2 * np.pi * 440 * np.arange(48000) / 16000)
    assert np.abs(out.numpy()[100:-100] - ref[100:-100]).max() < 1e-3
