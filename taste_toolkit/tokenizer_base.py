"""``TokenizerBase``: the front end shared by every exported speech tokenizer.

Two tokenizers sit on top of it and differ only in how their tokens are aligned:

* :class:`taste_toolkit.api.TasteTokenizer` -- **text-aligned** (``alignment = "text"``):
  one speech token per text token or word, so ``encode`` needs the transcript and
  decoding generates units for the words.
* :class:`taste_toolkit.lmspt.api.LmsptTokenizer` -- **frame-aligned**
  (``alignment = "frame"``): a fixed number of tokens per second, no transcript.

Everything else lives here, once:

* input validation: waveforms (through :func:`taste_toolkit.audio.prepare_waveform`:
  dtype, shape, NaN/inf, sample rate, the 30 s limit), per-utterance sample rates,
  list lengths, ``batch_size``, token records and their fingerprint;
* padding of variable-length rows into batches (:func:`pad_rows`) and the
  batching loop of ``encode``;
* the standalone folder: ``save_pretrained`` metadata, ``from_pretrained`` (tokenizer
  kind, ``allow_code`` / ``allow_external``, missing components, fingerprint check);
* vocoding (``vocode``) and the waveform part of decode results (:class:`DecodedAudio`);
* ``info`` (plugins, parameter counts, fingerprint) and ``reconstruct``.

A subclass sets :attr:`alignment`, :attr:`tokenizer_type`, :attr:`required_components`
and implements the hooks marked "subclass" below.
"""

import logging

import torch

from taste_toolkit import __version__
from taste_toolkit.audio import prepare_waveform
from taste_toolkit.errors import InputError, MissingResourceError
from taste_toolkit.pretrained.standalone import load_components, read_config, save_components
from taste_toolkit.tokens import TasteTokens

logger = logging.getLogger(__name__)

MAX_SECONDS = 30.0  # the Whisper window; longer audio is refused, never cut
#: ``metadata.tokenizer`` of folders that predate the field (all of them TASTE).
DEFAULT_TOKENIZER_TYPE = "taste"


def pad_rows(rows, value=0, dtype=None):
    """Right-pad variable-length rows into one batch.

    Arguments
    ---------
    rows : list of torch.Tensor
        ``B`` tensors ``(L_i, ...)`` with the same trailing shape.
    value : int or float
        Fill value of the padding.
    dtype : torch.dtype, optional
        Output dtype (default: that of ``rows[0]``).

    Returns
    -------
    padded : torch.Tensor
        ``(B, L_max, ...)``.
    lengths : torch.Tensor
        ``(B,)`` long, the valid length of each row.
    """
    lengths = torch.tensor([r.shape[0] for r in rows], dtype=torch.long)
    shape = (len(rows), int(lengths.max()) if len(rows) else 0) + tuple(rows[0].shape[1:])
    out = torch.full(shape, value, dtype=dtype or rows[0].dtype)
    for i, r in enumerate(rows):
        out[i, : r.shape[0]] = r
    return out, lengths


def describe(value):
    """Short ``"type repr"`` of a bad argument, for error messages."""
    return f"{type(value).__name__} {value!r}"[:80]


def tokenizer_type(folder):
    """The ``metadata.tokenizer`` of an exported folder (``"taste"`` when absent)."""
    meta = read_config(folder).get("metadata") or {}
    kind = meta.get("tokenizer", DEFAULT_TOKENIZER_TYPE) if isinstance(meta, dict) else None
    if not isinstance(kind, str):
        raise InputError(f"{str(folder)!r}: metadata.tokenizer must be a string such as 'taste' or 'lmspt', "
                         f"got {describe(kind)}; re-export the tokenizer.")
    return kind


class DecodedAudio:
    """What every decode result has: ``waveforms`` and their ``sample_rate``.

    ``waveforms`` is a list of ``(L,)`` tensors at ``sample_rate`` Hz, one per
    utterance; both are ``None`` when the tokenizer has no vocoder. Subclasses are
    dataclasses that add what their decoder predicts (units, or log-mel frames).
    """

    @property
    def seconds(self):
        """Duration of each waveform in seconds, or ``None`` without a vocoder."""
        if self.waveforms is None or not self.sample_rate:
            return None
        return [w.shape[-1] / self.sample_rate for w in self.waveforms]


class TokenizerBase:
    """Validation, batching, folder handling and vocoding shared by the tokenizers.

    Arguments
    ---------
    model : torch.nn.Module
        The trained model; it has an ``encoder`` attribute (``None`` for text-only
        TASTE ablations) whose ``sample_rate`` is the rate audio is resampled to.
    vocoder : Vocoder, optional
        Decoder output -> waveform; without it ``decode`` returns no audio.
    device : str
        Torch device of the modules.
    """

    #: ``"text"`` (one token per text token / word) or ``"frame"`` (fixed token rate). Subclass.
    alignment = None
    #: ``metadata.tokenizer`` of the folders this class reads and writes. Subclass.
    tokenizer_type = None
    #: Name used in error messages. Subclass.
    display_name = None
    #: Components a folder must hold for :meth:`from_pretrained`. Subclass.
    required_components = ()
    #: Vocoder plugins to suggest when one is missing. Subclass.
    vocoder_hint = "a vocoder plugin"
    #: Longest accepted input, in seconds (longer audio is refused, never cut).
    max_seconds = MAX_SECONDS

    def __init__(self, model, vocoder=None, device="cpu"):
        self.device = torch.device(device)
        self.model = model.to(device).eval()
        self.vocoder = self._on_device(vocoder)
        self.fingerprint = self._fingerprint()

    def _on_device(self, module):
        """``module`` on this tokenizer's device in eval mode (``None`` stays ``None``)."""
        return module.to(self.device).eval() if module is not None else None

    # ------------------------------------------------------------ identity (subclass: _components, _fingerprint)
    def _components(self):
        """``{role: plugin or None}``: what ``save_pretrained`` writes. Subclass."""
        raise NotImplementedError

    def _fingerprint(self):
        """Hash of what gives the tokens their meaning (16 hex digits). Subclass."""
        raise NotImplementedError

    @staticmethod
    def _hash_weights(h, modules):
        """Feed the sorted state dicts of ``modules`` (``None`` skipped) into hash ``h``."""
        for module in modules:
            if module is None:
                continue
            for key, value in sorted(module.state_dict().items()):
                h.update(key.encode())
                h.update(value.detach().cpu().contiguous().numpy().tobytes())

    @property
    def input_sample_rate(self):
        """Rate ``encode`` resamples audio to: the encoder's (16 kHz without one)."""
        encoder = self.model.encoder
        return int(encoder.sample_rate) if encoder is not None else 16000

    def _info(self):
        """Tokenizer-specific entries of :meth:`info` (token geometry, rates). Subclass."""
        return {}

    def info(self):
        """Plain-data summary: kind, alignment, plugins, parameter counts, fingerprint, token geometry."""
        comps = self._components()
        return {
            "tokenizer": self.tokenizer_type,
            "alignment": self.alignment,
            **self._info(),
            "plugins": {r: getattr(o, "build_spec", {}).get("name", type(o).__name__)
                        for r, o in comps.items() if o is not None},
            "parameters": {r: sum(p.numel() for p in o.parameters())
                           for r, o in comps.items() if isinstance(o, torch.nn.Module)},
            "fingerprint": self.fingerprint,
            "vocoder_sample_rate": self.vocoder.sample_rate if self.vocoder is not None else None,
            "toolkit_version": __version__,
        }

    # ------------------------------------------------------------ save / load (subclass: _metadata, _from_components)
    def _metadata(self):
        """Model settings ``_from_components`` needs back (plain data). Subclass."""
        return {}

    def save_pretrained(self, folder):
        """Write a standalone folder (JSON config + safetensors + the components' files)."""
        save_components(folder, self._components(), metadata={
            "tokenizer": self.tokenizer_type,
            "alignment": self.alignment,
            **self._metadata(),
            "fingerprint": self.fingerprint,
            "toolkit_version": __version__,
        })
        return folder

    @classmethod
    def _from_components(cls, components, metadata, device):
        """Build the tokenizer from loaded components and the folder's metadata. Subclass."""
        raise NotImplementedError

    @classmethod
    def from_pretrained(cls, folder, device="cpu", allow_external=False):
        """Load a folder written by :meth:`save_pretrained` (no code is run from it).

        Parameters
        ----------
        folder : str or Path
            The tokenizer folder.
        device : str
            Torch device of the modules.
        allow_external : bool
            Follow component options that name files or models outside the folder
            (absolute paths, hub ids). Refused by default; the folder's own
            ``"./..."`` files and ``builtin:`` sources are always allowed.
        """
        return cls._load_pretrained(folder, device, allow_external=allow_external)

    @classmethod
    def _load_pretrained(cls, folder, device="cpu", allow_code=False, allow_external=False):
        """The shared body of ``from_pretrained``.

        Refuses a folder of another tokenizer kind, loads the components
        (:func:`~taste_toolkit.pretrained.standalone.load_components` applies
        ``allow_code`` / ``allow_external``), checks the required ones are there,
        builds the tokenizer and checks the saved fingerprint against its weights.
        """
        kind = tokenizer_type(folder)
        if kind != cls.tokenizer_type:
            raise InputError(f"{str(folder)!r} holds a {kind!r} tokenizer, not {cls.display_name}; load it with "
                             "taste_toolkit.lmspt.load_tokenizer, which picks the class from the folder.")
        comps, config = load_components(folder, device=device, allow_code=allow_code, allow_external=allow_external)
        for role in cls.required_components:
            if comps.get(role) is None:
                raise MissingResourceError(f"Checkpoint {folder!r} has no {role!r} component; re-export it.")
        meta = config.get("metadata") or {}
        tok = cls._from_components(comps, meta, device)
        saved = meta.get("fingerprint")
        if saved and saved != tok.fingerprint:
            raise InputError(f"Checkpoint {folder!r} is inconsistent: fingerprint {saved} in the config, "
                             f"{tok.fingerprint} from its weights. Re-export it.")
        return tok

    # ------------------------------------------------------------ encode (subclass: _split_inputs, _encode_batch)
    def _split_inputs(self, audio, text):
        """``(single, audios, texts)`` from the caller's audio and text, text rules checked. Subclass."""
        raise NotImplementedError

    def _encode_batch(self, audios, rates, texts, **options):
        """Tokens for one batch of at most ``batch_size`` utterances. Subclass."""
        raise NotImplementedError

    def _encode(self, audio, sample_rate, text, batch_size, **options):
        """Validate the inputs, run ``_encode_batch`` over batches; one result or a list."""
        single, audios, texts = self._split_inputs(audio, text)
        if len(texts) != len(audios):
            raise InputError(f"Got {len(audios)} audio inputs but {len(texts)} transcripts.")
        rates = list(sample_rate) if isinstance(sample_rate, (list, tuple)) else [sample_rate] * len(audios)
        if len(rates) != len(audios):
            raise InputError(f"Got {len(rates)} sample rates for {len(audios)} audio inputs.")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be an integer >= 1, got {batch_size!r}.")
        if not audios:
            raise InputError("Nothing to encode: got an empty list of audio inputs.")
        out = []
        for s in range(0, len(audios), batch_size):
            out += self._encode_batch(audios[s:s + batch_size], rates[s:s + batch_size], texts[s:s + batch_size],
                                      **options)
        return out[0] if single else out

    def _waveforms(self, audios, rates):
        """Validated, resampled, mono waveforms, and the padded batch on the device.

        Returns
        -------
        wavs : list of torch.Tensor
            ``(S_i,)`` at :attr:`input_sample_rate`, on the CPU.
        wav : torch.Tensor
            ``(B, S_max)`` zero-padded, on the device.
        wav_lengths : torch.Tensor
            ``(B,)`` valid samples, on the device.
        """
        sr = self.input_sample_rate
        wavs = [prepare_waveform(a, r, target_sr=sr, max_seconds=self.max_seconds) for a, r in zip(audios, rates)]
        wav, wav_lengths = pad_rows(wavs, 0.0)
        return wavs, wav.to(self.device), wav_lengths.to(self.device)

    # ------------------------------------------------------------ decode (subclass: _check_token_fields/_codes)
    def _check_token_fields(self, tokens):
        """Raise InputError unless ``tokens`` is well-formed for this kind of tokenizer. Subclass."""

    def _check_token_codes(self, tokens):
        """Raise InputError unless the codes (or embeddings) fit this model. Subclass."""

    def _check_tokens(self, tokens):
        """Type, structure, fingerprint (this model made them), then codes against this model."""
        if not isinstance(tokens, TasteTokens):
            raise InputError(f"Expected TasteTokens, got {type(tokens).__name__}.")
        self._check_token_fields(tokens)
        if tokens.fingerprint and tokens.fingerprint != self.fingerprint:
            raise InputError(
                f"These tokens were made by another model or config (fingerprint {tokens.fingerprint}, "
                f"this model {self.fingerprint}); re-tokenize the audio with this model."
            )
        self._check_token_codes(tokens)

    def _token_batch(self, tokens):
        """One :class:`TasteTokens` or a non-empty list of them -> checked list."""
        if not isinstance(tokens, (TasteTokens, list, tuple)):
            raise InputError(f"Expected TasteTokens or a list of them, got {describe(tokens)}.")
        batch = [tokens] if isinstance(tokens, TasteTokens) else list(tokens)
        if not batch:
            raise InputError("Nothing to decode: got an empty list of tokens.")
        for t in batch:
            self._check_tokens(t)
        return batch

    def _vocoder_input(self, row):
        """One decoder output row as the vocoder takes it (dtype). Subclass."""
        return row

    def encode(self, audio, sample_rate, text=None, **options):
        """Audio (+ transcript) -> :class:`TasteTokens`. Subclass (calls :meth:`_encode`)."""
        raise NotImplementedError

    def decode(self, tokens, **options):
        """Tokens -> a :class:`DecodedAudio` result. Subclass (vocodes with :meth:`_audio`)."""
        raise NotImplementedError

    def vocode(self, rows):
        """Waveforms ``[(L,)]`` at ``self.vocoder.sample_rate`` from decoder outputs ``[(F, ...)]``."""
        return self._vocode(rows)

    def _vocode(self, rows, speaker=None):
        """Pad ``rows`` into ``(B, F_max, ...)``, run the vocoder, cut each waveform to its length.

        ``speaker`` ``(B, D)`` goes to a vocoder conditioned on speaker vectors (``speaker_dim > 0``).
        """
        if self.vocoder is None:
            raise MissingResourceError(f"This tokenizer has no vocoder; attach one ({self.vocoder_hint}) to get audio.")
        if not rows:
            return []
        batch, lengths = pad_rows([self._vocoder_input(r) for r in rows], 0)
        args = (batch.to(self.device), lengths.to(self.device))
        if getattr(self.vocoder, "speaker_dim", 0):  # the vocoder checks the vectors (and their absence) itself
            wavs, wav_lengths = self.vocoder(*args, speaker=None if speaker is None else speaker.to(self.device))
        else:
            wavs, wav_lengths = self.vocoder(*args)
        return [wavs[i, : int(wav_lengths[i])].cpu() for i in range(len(rows))]

    def _audio(self, rows, speaker=None):
        """``(waveforms, sample_rate)`` for a decode result: vocoded, or ``(None, None)`` without a vocoder."""
        if self.vocoder is None:
            return None, None
        return self._vocode(rows, speaker), self.vocoder.sample_rate

    def reconstruct(self, audio, sample_rate, text=None, **options):
        """``decode(encode(audio, sample_rate, text), **options)``."""
        return self.decode(self.encode(audio, sample_rate, text), **options)
