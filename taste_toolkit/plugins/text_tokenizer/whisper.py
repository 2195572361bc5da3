"""Whisper's byte-level BPE, applied word by word (TASTE's text tokenizer)."""

import json
import logging
import unicodedata
from pathlib import Path

from taste_toolkit.errors import ConfigError, InputError, MissingResourceError
from taste_toolkit.interfaces import TextTokenizer, TokenizedText
from taste_toolkit.registry import register

logger = logging.getLogger(__name__)

#: Whisper decoder tasks (the task token of a multilingual prompt).
TASKS = ("transcribe", "translate")


def whisper_language_token(language=""):
    """Whisper's language token for a toolkit language code or a Whisper code.

    ``""`` is English (the historical prompt); toolkit codes map to Whisper's
    (``cmn`` -> ``<|zh|>``); any other code is taken as Whisper's own (``ja``).

    Returns
    -------
    str
        e.g. ``"<|en|>"``.
    """
    if not language:
        return "<|en|>"
    from taste_toolkit.languages import get_language

    try:
        code = get_language(language).whisper_language
    except ConfigError:
        code = str(language)  # a Whisper code the toolkit has no language record for
    return f"<|{code}|>"


def whisper_prompt_tokens(multilingual, language="", task="transcribe"):
    """Whisper's transcription prompt without timestamps, as token strings.

    Multilingual: ``<|startoftranscript|> <|lang|> <|task|> <|notimestamps|>``
    (the paper's ``[50258, 50259, 50360, 50364]`` for English transcription);
    English-only models (``*.en``) were trained without language and task
    tokens: ``<|startoftranscript|> <|notimestamps|>``.

    Raises
    ------
    ConfigError
        ``task`` is not one of :data:`TASKS`.
    """
    if task not in TASKS:
        raise ConfigError(f"task must be one of {TASKS} (Whisper's decoder tasks), got {task!r}.")
    if not multilingual:
        return ["<|startoftranscript|>", "<|notimestamps|>"]
    return ["<|startoftranscript|>", whisper_language_token(language), f"<|{task}|>", "<|notimestamps|>"]


def is_multilingual_vocabulary(end_of_text_id):
    """English-only Whisper vocabularies put ``<|endoftext|>`` at 50256, multilingual ones at 50257."""
    return int(end_of_text_id) >= 50257


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

    By default every word (the first included) is encoded as ``" " + word``:
    OpenAI's code encodes the first word without the space at inference time
    but saw it with one in training; encoding all words alike makes a word's ids
    independent of its position, which word-level pooling relies on. The
    official TASTE release encodes the first word without the space and keeps
    case (``lowercase=False, first_word_space=False``; what ``taste
    import-official`` selects).

    Arguments
    ---------
    source : str
        ``"builtin:tiny.en"`` (bundled, offline), an HF Whisper folder, a
        CTranslate2 Whisper folder, or a hub id (needs the hub cache).
    lowercase : bool
        Lower-case transcripts first (LibriSpeech is upper case; Whisper was
        trained on cased text, where upper-case words split into many pieces).
        The official release keeps case (False).
    first_word_space : bool
        Encode the first word with a leading space too (True, position-independent
        ids) or without it (False, the official release: ``"Hello"``, then
        ``" world"``). Words of unspaced languages never get a space.
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
    task : str
        ``transcribe`` or ``translate``: the task token of a multilingual
        Whisper's prompt (:attr:`prefix_ids`). The prompt's language token is
        ``language``'s (``""`` = English). English-only vocabularies (tiny.en)
        have neither token in their prompt.

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
                 segmenter: str = "", foreign_script: str = "error", first_word_space: bool = True,
                 task: str = "transcribe"):
        from taste_toolkit.languages import word_splitter
        from taste_toolkit.pretrained.ctranslate2_whisper import resolve_whisper_source

        self.source = source
        self.lowercase = lowercase
        self.language = language
        self.words = word_splitter(language, segmenter, foreign_script, lowercase)
        resolved = resolve_whisper_source(source)
        self.first_word_space = bool(first_word_space)
        self.task = task
        whisper_prompt_tokens(True, language, task)  # checks the task
        self._tokenizer = self._load(resolved)
        self._first_special_id = self.end_of_text_id  # every id from here on is special or a timestamp
        if self.is_multilingual:
            self.prefix_ids  # noqa: B018 -- fails now, naming the token, if the language has none
        elif language and self.words is not None and self.words.language.whisper_language != "en":
            logger.info("Whisper %r is English-only: its prompt has no language token; %s text is tokenized with "
                        "its byte-level BPE (any script).", source, self.words.language.name)

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
        return is_multilingual_vocabulary(self.end_of_text_id)

    @property
    def prefix_ids(self):
        """Decoder prompt without timestamps: ``[sot, <|lang|>, <|task|>, notimestamps]``
        (multilingual; ``language`` and ``task``), ``[sot, notimestamps]`` (English-only).

        Raises
        ------
        ConfigError
            The vocabulary has no token for the language.
        """
        ids = []
        for token in whisper_prompt_tokens(self.is_multilingual, self.language, self.task):
            idx = self._tokenizer.token_to_id(token)
            if idx is None:
                raise ConfigError(f"The Whisper tokenizer from {self.source!r} has no {token} token for language "
                                  f"{self.language!r}: Whisper cannot be prompted with it. Choose a language "
                                  "Whisper knows, or an English-only Whisper (acoustic front end, no prompt).")
            ids.append(idx)
        return ids

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
        first = space if self.first_word_space else ""
        encodings = self._tokenizer.encode_batch([(first if i == 0 else space) + w for i, w in enumerate(words)],
                                                 add_special_tokens=False)
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

        The text keeps the leading space of the first word (``first_word_space``).
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
