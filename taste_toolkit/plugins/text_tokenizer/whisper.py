"""Whisper's byte-level BPE, applied word by word (TASTE's text tokenizer)."""

import json
import unicodedata
from pathlib import Path

from taste_toolkit.errors import InputError, MissingResourceError
from taste_toolkit.interfaces import TextTokenizer, TokenizedText
from taste_toolkit.registry import register


def normalize_transcript(text, lowercase=True):
    """NFC-normalize, optionally lower-case, and split ``text`` into words.

    Raises
    ------
    InputError
        ``text`` is empty or whitespace only.
    """
    if not isinstance(text, str):
        raise InputError(f"A transcript must be a str, got {type(text).__name__}.")
    # NFC so that "é" typed as one or two code points tokenizes the same way.
    text = unicodedata.normalize("NFC", text)
    if lowercase:
        text = text.lower()
    words = text.split()
    if not words:
        raise InputError(f"empty transcript {text!r}: give at least one word (check the data manifest).")
    return words


@register("text_tokenizer", "whisper")
class WhisperTextTokenizer(TextTokenizer):
    """Whisper tokenizer encoding each word with a leading space, no special tokens.

    Every word (the first included) is encoded as ``" " + word``: OpenAI's code
    encodes the first word without the space at inference time but saw it with
    one in training; encoding all words alike makes a word's ids independent of
    its position, which word-level pooling relies on.

    Arguments
    ---------
    source : str
        ``"builtin:tiny.en"`` (bundled, offline), an HF Whisper folder, a
        CTranslate2 Whisper folder, or a hub id (needs the hub cache).
    lowercase : bool
        Lower-case transcripts first (LibriSpeech is upper case; Whisper was
        trained on cased text, where upper-case words split into many pieces).
    language : str
        Language of the transcripts (``en``, ``es``, ``cmn``, see
        :mod:`taste_toolkit.languages`): its normalizer and word segmenter make
        the words. ``""`` = the historical English path (NFC, whitespace words).
        Words of a language written without spaces are encoded without the
        leading space.
    segmenter : str
        Segmenter plugin overriding the language's (``character``); ``""`` = the language's.
    foreign_script : str
        ``error``, ``keep`` or ``drop`` letters of a script the language does not
        use (see :class:`taste_toolkit.languages.WordSplitter`).

    Example
    -------
    >>> tok = WhisperTextTokenizer()
    >>> out = tok.encode_words("HELLO WORLD")
    >>> tok.decode(out.ids)
    ' hello world'
    >>> out.word_ids
    [0, 1]
    """

    def __init__(self, source: str = "builtin:tiny.en", lowercase: bool = True, language: str = "",
                 segmenter: str = "", foreign_script: str = "error"):
        from taste_toolkit.languages import word_splitter
        from taste_toolkit.pretrained.ctranslate2_whisper import resolve_whisper_source

        self.source = source
        self.lowercase = lowercase
        self.language = language
        self.words = word_splitter(language, segmenter, foreign_script, lowercase)
        resolved = resolve_whisper_source(source)
        self._tokenizer = self._load(resolved)
        self._first_special_id = self.end_of_text_id  # every id from here on is special or a timestamp

    @staticmethod
    def _load(resolved):
        """Return a ``tokenizers.Tokenizer`` (no transformers import for local folders)."""
        tok_file = Path(resolved) / "tokenizer.json"
        if tok_file.is_file():
            from tokenizers import Tokenizer

            return Tokenizer.from_file(str(tok_file))
        try:
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(resolved).backend_tokenizer
        except (OSError, ValueError) as exc:
            raise MissingResourceError(
                f"Cannot load a Whisper tokenizer from {resolved!r} ({exc}). Use "
                "source='builtin:tiny.en' (offline) or a local Whisper folder."
            ) from exc

    def _id(self, token):
        idx = self._tokenizer.token_to_id(token)
        if idx is None:
            raise MissingResourceError(f"The Whisper tokenizer from {self.source!r} has no {token} token.")
        return idx

    # ------------------------------------------------------------------ ids
    @property
    def vocab_size(self) -> int:
        """Token ids including special and timestamp tokens (51864 for tiny.en)."""
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def start_of_transcript_id(self) -> int:
        """``<|startoftranscript|>``."""
        return self._id("<|startoftranscript|>")

    @property
    def end_of_text_id(self) -> int:
        """``<|endoftext|>`` (also Whisper's padding id)."""
        return self._id("<|endoftext|>")

    @property
    def no_timestamps_id(self) -> int:
        """``<|notimestamps|>``."""
        return self._id("<|notimestamps|>")

    @property
    def is_multilingual(self) -> bool:
        """English-only vocabularies put ``<|endoftext|>`` at 50256, multilingual at 50257."""
        return self.end_of_text_id >= 50257

    @property
    def prefix_ids(self):
        """Decoder prompt for English transcription without timestamps."""
        if self.is_multilingual:
            return [self.start_of_transcript_id, self._id("<|en|>"), self._id("<|transcribe|>"), self.no_timestamps_id]
        return [self.start_of_transcript_id, self.no_timestamps_id]

    # ------------------------------------------------------------- encoding
    def normalize(self, text):
        """Words of ``text``: the language's segmentation, or :func:`normalize_transcript`."""
        if self.words is not None:
            return self.words.split(text)
        return normalize_transcript(text, self.lowercase)

    def encode_words(self, text: str) -> TokenizedText:
        """Tokenize ``text`` word by word.

        Raises
        ------
        InputError
            Empty transcript, or a word that spells a Whisper special token.
        """
        words = self.normalize(text)
        space = " " if self.words is None or self.words.language.spaced else ""
        encodings = self._tokenizer.encode_batch([space + w for w in words], add_special_tokens=False)
        ids, word_ids = [], []
        for index, (word, enc) in enumerate(zip(words, encodings)):
            if not enc.ids:  # cannot happen with byte-level BPE; guard the no-dropping promise
                raise InputError(f"Word {word!r} produced no Whisper tokens.")
            if any(i >= self._first_special_id for i in enc.ids):
                raise InputError(
                    f"Word {word!r} contains Whisper special-token text (e.g. <|endoftext|>); "
                    "remove it from the transcript."
                )
            ids.extend(enc.ids)
            word_ids.extend([index] * len(enc.ids))
        return TokenizedText(ids=ids, word_ids=word_ids, words=words)

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        """Text of ``ids`` (special tokens dropped unless ``skip_special_tokens=False``).

        The text keeps the leading space of the first word.
        """
        return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def save(self, save_dir):
        """Write ``tokenizer.json`` into ``save_dir`` (loadable by ``source=save_dir``)."""
        save_dir = Path(save_dir)
        save_dir.mkdir(parents=True, exist_ok=True)
        self._tokenizer.save(str(save_dir / "tokenizer.json"))
        # So that transformers.AutoTokenizer.from_pretrained(save_dir) works too.
        eot = "<|endoftext|>"
        config = {"tokenizer_class": "WhisperTokenizer", "bos_token": eot, "eos_token": eot,
                  "unk_token": eot, "pad_token": eot, "clean_up_tokenization_spaces": False}
        (save_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
        return save_dir

    def export(self, folder):
        """Save the tokenizer files for a standalone checkpoint; options to reload them."""
        self.save(folder)
        return {"source": "./"}
