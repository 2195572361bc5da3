"""Systems under evaluation: anything that turns (audio, transcript) into audio.

A system type is a class registered here with :func:`register_system` and
chosen in the evaluation YAML by ``type``::

    systems:
      - {name: taste, type: tokenizer, options: {path: results/taste/1986/tokenizer}}

Interface (subclass :class:`System`):

``__init__(**options)``
    Plain-data options from the YAML, plus the harness's ``decoding`` block
    (``top_k``, ``temperature``, ``seed``, ``max_len_ratio``) passed as
    ``decoding=`` to types that accept it.
``reconstruct(wav, sample_rate, text, utt_id, words=None) -> (wav, sample_rate, extras)``
    ``words`` (optional parameter) is the reference ``[(word, start_s, end_s)]``
    when the evaluation set has word times, else ``None``.
    ``wav`` is the source ``(T,)`` float32 NumPy array; return the output
    waveform ``(T',)`` at *any* rate (the harness resamples it to the source's
    rate before scoring) and a JSON-able ``extras`` dict. Keys the built-in
    metrics read: ``speech_tokens`` (tokens used for this utterance),
    ``bits_per_token`` (float; ``None`` for continuous tokens), ``codes``
    (``[[code per layer] per token]``), ``tf_top1``/``tf_top5``/``tf_total``
    (teacher-forced unit accuracy counts). Raise a
    :class:`~taste_toolkit.errors.TasteError` for an utterance the system
    cannot handle (empty transcript, too long): it is reported as missing.
``info() -> dict``
    Static facts for the report (``token_rate_hz``, ``bitrate_bps`` when fixed,
    e.g. a 12.5 Hz codec; the plugins of a tokenizer).
``alignment(wav, sample_rate, text)`` (optional)
    ``(words, attention (N, T) numpy, frame_rate, token_labels)`` for the attention plot.
``close()``
    Free the model (the harness keeps one system in memory at a time).
``cacheable``
    ``False`` when the output is the input (``original``): nothing is written.

Built-in types: ``original`` (the source audio), ``tokenizer`` (an exported
TASTE tokenizer: encode -> decode -> vocoder), ``units_topline`` (the source's
ground-truth units through the tokenizer's vocoder), ``directory`` (wavs made
elsewhere, ``<folder>/<utt_id>.wav``). Types in their own modules: ``codec``
(EnCodec, Mimi, SpeechTokenizer; ``codec_system.py``), ``lmspt`` and
``mel_topline`` (``lmspt_system.py``). New types register with
``@register_system("<type>")``; a module named
``taste_toolkit/evaluation/<type>_system.py`` is imported on first use of ``type: <type>``.
A system that cannot be built (model not available, :class:`~taste_toolkit.errors.TasteError`)
is skipped with its reason; its utterances count as missing.
"""

import importlib
import math
import os
import zlib

import numpy as np

from taste_toolkit.bitrate import bits_per_token
from taste_toolkit.errors import ConfigError, InputError, MissingResourceError

# Greedy, for the default non-autoregressive duration_transformer; an autoregressive decoder
# (unit_transformer) wants top-k sampling (top_k 25: it loops when decoded greedily) and
# max_len_ratio 20 (25 Hz units). 40 units per text token is 0.8 s at 50 Hz: a safety net.
DEFAULT_DECODING = {"top_k": 0, "temperature": 1.0, "seed": 0, "max_len_ratio": 40.0}

_SYSTEMS = {}
#: Types registered by a module not named after them (taste_toolkit/evaluation/<module>_system.py).
_TYPE_MODULES = {"mel_topline": "lmspt"}


def register_system(type_name):
    """Class decorator registering a :class:`System` subclass as ``type: <type_name>``."""

    def decorator(cls):
        if not (isinstance(cls, type) and issubclass(cls, System)):
            raise ConfigError(f"System type {type_name!r} must subclass taste_toolkit.evaluation.systems.System.")
        _SYSTEMS[type_name] = cls
        cls.type_name = type_name
        return cls

    return decorator


def system_types():
    """Registered system type names, the built-in ones in their own modules included."""
    for module in ("codec", "lmspt"):
        importlib.import_module(f"taste_toolkit.evaluation.{module}_system")
    return sorted(_SYSTEMS)


def build_system(spec, decoding=None):
    """Instantiate a system from its YAML entry ``{name, type, options}``."""
    import inspect

    kind = spec.get("type")
    if kind not in _SYSTEMS and isinstance(kind, str) and kind.isidentifier():
        # System types living in their own module of this package: taste_toolkit/evaluation/<type>_system.py
        try:
            importlib.import_module(f"taste_toolkit.evaluation.{_TYPE_MODULES.get(kind, kind)}_system")
        except ModuleNotFoundError:
            pass
    if kind not in _SYSTEMS:
        raise ConfigError(f"System {spec.get('name')!r}: unknown type {kind!r}. Types: {', '.join(system_types())}.")
    cls = _SYSTEMS[kind]
    options = dict(spec.get("options") or {})
    if "decoding" in inspect.signature(cls.__init__).parameters:
        options.setdefault("decoding", dict(decoding or {}))
    try:
        return cls(**options)
    except TypeError as exc:
        raise ConfigError(f"System {spec.get('name')!r} (type {kind}): bad options {options}: {exc}") from exc


class System:
    """Base class of a system under evaluation (see the module docstring)."""

    type_name = "system"
    cacheable = True

    def reconstruct(self, wav, sample_rate, text, utt_id, words=None):
        raise NotImplementedError

    def info(self):
        return {}

    def close(self):
        """Release models."""


@register_system("original")
class OriginalSystem(System):
    """The source audio itself: the reference point of every metric (MCD 0, ratio 1)."""

    cacheable = False

    def reconstruct(self, wav, sample_rate, text, utt_id, words=None):
        return wav, sample_rate, {}


def _load_tokenizer(path):
    from taste_toolkit.api import TasteTokenizer

    if not path or not os.path.isdir(path):
        raise MissingResourceError(f"Tokenizer folder {path!r} not found: export one (recipes/librispeech/export.py).")
    tok = TasteTokenizer.from_pretrained(path)
    if tok.vocoder is None or tok.units is None:
        raise MissingResourceError(f"Tokenizer {path!r} has no vocoder or unit extractor; export it with both.")
    return tok


def _source_units(tok, wav, sample_rate):
    """Ground-truth units ``(S,)`` of the source with the tokenizer's unit extractor."""
    import torch

    from taste_toolkit.audio import prepare_waveform

    x = prepare_waveform(wav, sample_rate, target_sr=tok.units.sample_rate)
    with torch.no_grad():
        units, lengths = tok.units(x[None], torch.tensor([x.numel()]))
    return units[0, : int(lengths[0])]


def _source_speaker(tok, wav, sample_rate):
    """``(1, D)`` speaker vector of the source for a speaker-conditioned vocoder, else None."""
    import torch

    from taste_toolkit.audio import prepare_waveform

    if not getattr(tok.vocoder, "speaker_dim", 0):
        return None
    x = prepare_waveform(wav, sample_rate, target_sr=tok.input_sample_rate)
    with torch.no_grad():
        return tok.speaker(x[None].to(tok.device), torch.tensor([x.numel()], device=tok.device)).cpu()


def teacher_forced_counts(tok, tokens, units, words=None):
    """Top-1/top-5 hits of the unit decoder fed the true previous units (EOS included).

    Arguments
    ---------
    words : list of (word, start_s, end_s), optional
        Reference word times. Decoders that walk the words (``needs_unit_word_ids``,
        e.g. ``word_pointer_transformer``) are teacher-forced on them, as in training;
        without them those decoders are not scored (empty dict).

    Returns
    -------
    dict
        ``tf_top1``, ``tf_top5``, ``tf_total`` (counts, so they pool over a corpus).
    """
    import torch

    from taste_toolkit.models.tokenizer import SpeechTokens

    model = tok.model
    extra = {}
    if model.decoder.needs_unit_word_ids:
        if not words:
            return {}
        from taste_toolkit.data.word_alignment import unit_word_ids

        starts = [float(start) for _, start, _ in words]
        extra = {"word_ids": tokens.word_ids[None].to(tok.device),
                 "unit_word_ids": unit_word_ids(starts, units.numel(), tok.units.frame_rate)[None].to(tok.device)}
    text = tokens.text_ids[None].to(tok.device)
    text_lengths = torch.tensor([text.shape[1]], device=tok.device)
    word_ids = tokens.word_ids[None].to(tok.device)
    rows = tok._speech_rows(tokens)
    speech, speech_lengths = None, None
    if rows is not None:
        st = SpeechTokens(rows[None], None, torch.tensor([rows.shape[0]], device=tok.device), tokens.level)
        speech, speech_lengths = model.speech_for_decoder(st, word_ids, text_lengths)
    speaker = tokens.speaker[None].to(tok.device) if model.decoder.speaker_dim else None
    with torch.no_grad():
        out = model.decoder(text, text_lengths, speech, speech_lengths, units[None].to(tok.device),
                            torch.tensor([units.numel()], device=tok.device), speaker, **extra)
    valid = out.targets != -100
    logits, targets = out.logits[valid], out.targets[valid]
    top = logits.topk(min(5, logits.shape[-1]), dim=-1).indices
    return {"tf_top1": int((top[:, :1] == targets[:, None]).any(-1).sum()),
            "tf_top5": int((top == targets[:, None]).any(-1).sum()), "tf_total": int(valid.sum())}


@register_system("tokenizer")
class TokenizerSystem(System):
    """An exported TASTE tokenizer: (audio, text) -> tokens -> units -> vocoder.

    Arguments
    ---------
    path : str
        Standalone tokenizer folder (``TasteTokenizer.save_pretrained``).
    decoding : dict
        ``top_k`` (0 = greedy), ``temperature``, ``seed``, ``max_len_ratio``;
        sampling is seeded per (seed, utterance), so reruns reproduce it. Any
        other key goes to the decoder's ``generate`` as it is (e.g.
        ``switch_penalty`` or ``duration_scale`` of ``duration_transformer``); a
        key the decoder does not take is refused when decoding.
    """

    def __init__(self, path, decoding=None):
        self.path = path
        self.decoding = {**DEFAULT_DECODING, **(decoding or {})}
        self.tok = _load_tokenizer(path)
        info = self.tok.info()
        # Continuous (no-VQ) tokens have no finite bit count: reported as such, not as 0.
        self.bits = info["bits_per_speech_token"] if self.tok.has_codes else (
            0.0 if self.tok.model.aggregator.output_dim == 0 else None)

    def info(self):
        return {"path": self.path, "fingerprint": self.tok.fingerprint, "bits_per_token": self.bits,
                "plugins": self.tok.info()["plugins"]}

    def reconstruct(self, wav, sample_rate, text, utt_id, words=None):
        import torch

        tokens = self.tok.encode(wav, sample_rate, text)
        d = self.decoding
        gen = torch.Generator().manual_seed(int(d["seed"]) + zlib.crc32(str(utt_id).encode()))
        extra = {k: v for k, v in d.items() if k not in DEFAULT_DECODING}
        decoded = self.tok.decode(tokens, top_k=int(d["top_k"]), temperature=float(d["temperature"]),
                                  generator=gen, max_len_ratio=float(d["max_len_ratio"]), **extra)
        units = decoded.units[0]
        out = decoded.waveforms[0].numpy().astype(np.float32)
        extras = {"speech_tokens": int(tokens.num_speech_tokens), "bits_per_token": self.bits,
                  "units": int(units.numel()),
                  "hit_max_len": int(decoded.capped[0]) if decoded.capped is not None else
                  int(units.numel() >= math.floor(float(d["max_len_ratio"]) * tokens.text_ids.numel()))}
        if decoded.word_spans is not None:  # decoders that walk the words: their own word timing
            extras["word_spans"] = [[round(a, 4), round(b, 4)] for a, b in decoded.word_spans[0]]
        if tokens.codes is not None:
            extras["codes"] = tokens.codes.tolist()
            extras["codebook_size"] = int(self.tok.model.quantizer.codebook_size)
        extras.update(teacher_forced_counts(self.tok, tokens, _source_units(self.tok, wav, sample_rate), words))
        return out, int(self.tok.vocoder.sample_rate), extras

    def alignment(self, wav, sample_rate, text):
        tokens = self.tok.encode(wav, sample_rate, text, return_alignment=True)
        if tokens.alignment is None:
            return None
        labels = [self.tok.text_tokenizer.decode([i]) for i in tokens.text_ids.tolist()]
        return tokens.words, tokens.alignment.float().numpy(), float(tokens.frame_rate), labels

    def close(self):
        self.tok = None


@register_system("units_topline")
class UnitsToplineSystem(System):
    """Ground-truth units of the source through a tokenizer's vocoder: what a perfect unit decoder gives.

    Arguments
    ---------
    tokenizer : str
        Tokenizer folder whose unit extractor and vocoder are used.
    """

    def __init__(self, tokenizer):
        self.path = tokenizer
        self.tok = _load_tokenizer(tokenizer)
        self.bits = bits_per_token(1, int(self.tok.units.num_units))  # one unit = one code

    def info(self):
        return {"path": self.path, "token_rate_hz": float(self.tok.units.frame_rate), "bits_per_token": self.bits}

    def reconstruct(self, wav, sample_rate, text, utt_id, words=None):
        units = _source_units(self.tok, wav, sample_rate)
        # A speaker-conditioned vocoder gets the source's voice, as decode gives it from the tokens.
        out = self.tok.vocode([units], _source_speaker(self.tok, wav, sample_rate))[0].numpy().astype(np.float32)
        return out, int(self.tok.vocoder.sample_rate), {"speech_tokens": int(units.numel()),
                                                          "bits_per_token": self.bits,
                                                          "codes": [[int(u)] for u in units.tolist()],
                                                          "codebook_size": int(self.tok.units.num_units)}

    def close(self):
        self.tok = None


@register_system("directory")
class DirectorySystem(System):
    """Outputs made elsewhere: ``<folder>/<utt_id>.wav`` (or ``.flac``), any sample rate.

    Arguments
    ---------
    folder : str
        Folder of reconstructions named by utterance ID. IDs there that are not
        in the evaluation set are listed in the report (``unmatched_ids``);
        utterances without a file are reported as missing.
    """

    def __init__(self, folder):
        if not os.path.isdir(folder):
            raise MissingResourceError(f"Output folder {folder!r} of a directory system does not exist.")
        self.folder = folder
        self.files = {}
        for name in sorted(os.listdir(folder)):
            stem, ext = os.path.splitext(name)
            if ext.lower() in (".wav", ".flac"):
                self.files[stem] = os.path.join(folder, name)

    def unmatched_ids(self, ids):
        """IDs of files that are not in ``ids`` (mismatched naming, another split)."""
        return sorted(set(self.files) - set(ids))

    def reconstruct(self, wav, sample_rate, text, utt_id, words=None):
        from taste_toolkit.audio import read_audio

        if utt_id not in self.files:
            raise InputError(f"no file {utt_id}.wav in {self.folder}")
        out, sr = read_audio(self.files[utt_id])  # an unreadable file: InputError, the utterance is missing
        return out, sr, {}
