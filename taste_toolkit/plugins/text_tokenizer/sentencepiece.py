"""SentencePiece (BPE/unigram) trained on the training transcripts, applied word by word."""

import logging
import shutil
from pathlib import Path

from taste_toolkit.errors import ConfigError, InputError, MissingResourceError
from taste_toolkit.interfaces import TextTokenizer, TokenizedText
from taste_toolkit.plugins.text_tokenizer.whisper import normalize_transcript
from taste_toolkit.registry import register

logger = logging.getLogger(__name__)

MODEL_FILE = "sentencepiece.model"
#: Byte fallback needs one piece per byte value on top of the characters.
_BYTE_PIECES = 256


@register("text_tokenizer", "sentencepiece")
class SentencePieceTextTokenizer(TextTokenizer):
    """SentencePiece model encoding every word separately.

    Each word is encoded on its own, so SentencePiece marks its start with
    U+2581 and a word's ids do not depend on its neighbours.

    Arguments
    ---------
    model_path : str
        A trained ``.model`` file; empty = call :meth:`fit` first.
    vocab_size : int
        Target pieces for :meth:`fit` (a soft limit: small corpora give fewer).
    model_type : str
        ``"bpe"``, ``"unigram"``, ``"char"`` or ``"word"``.
    lowercase : bool
        Lower-case transcripts first.
    byte_fallback : bool
        Train with byte pieces so characters unseen in training still
        round-trip through ``decode``; needs ``vocab_size`` >= 256 + the number
        of distinct characters. Without it such characters become ``<unk>``.
    language, segmenter, foreign_script : str
        Word segmentation of the transcripts, as for the ``whisper`` text
        tokenizer (:func:`taste_toolkit.languages.word_splitter`); ``language=""``
        keeps the historical whitespace words.

    Example
    -------
    >>> import tempfile
    >>> tok = SentencePieceTextTokenizer(vocab_size=300)
    >>> tok.fit(["THE CAT SAT ON THE MAT"] * 20, tempfile.mkdtemp())
    >>> tok.decode(tok.encode_words("the mat").ids)
    'the mat'
    """

    needs_fit = True

    def __init__(
        self,
        model_path: str = "",
        vocab_size: int = 500,
        model_type: str = "bpe",
        lowercase: bool = True,
        byte_fallback: bool = True,
        language: str = "",
        segmenter: str = "",
        foreign_script: str = "error",
    ):
        from taste_toolkit.languages import word_splitter

        if model_type not in ("bpe", "unigram", "char", "word"):
            raise ConfigError(f"model_type must be bpe, unigram, char or word; got {model_type!r}.")
        if vocab_size < 8:
            raise ConfigError(f"vocab_size must be at least 8, got {vocab_size}.")
        self.vocab_size_target = vocab_size
        self.model_type = model_type
        self.lowercase = lowercase
        self.byte_fallback = byte_fallback
        self.language = language
        self.words = word_splitter(language, segmenter, foreign_script, lowercase)
        self.model_path = ""
        self._sp = None
        if model_path:
            self.load(model_path)

    # ------------------------------------------------------------ training
    def load(self, model_path):
        """Load a trained SentencePiece ``.model`` file."""
        import sentencepiece as spm

        path = Path(model_path)
        if not path.is_file():
            raise MissingResourceError(
                f"SentencePiece model {path} not found: fit the tokenizer or fix model_path."
            )
        self._sp = spm.SentencePieceProcessor(model_file=str(path))
        self.model_path = str(path)

    def export(self, folder):
        """Copy the trained model for a standalone checkpoint; options to reload it."""
        import shutil

        self._require_model()
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.model_path, Path(folder) / MODEL_FILE)
        return {"model_path": "./" + MODEL_FILE}

    def fit(self, transcripts, save_dir):
        """Train on ``transcripts`` and load the result from ``save_dir/sentencepiece.model``.

        Raises
        ------
        InputError
            No non-empty transcript.
        ConfigError
            ``vocab_size`` too small for byte fallback.
        """
        import sentencepiece as spm

        # Same normalization as at encoding time; empty lines carry no text to learn.
        sentences = [" ".join(self.normalize(t)) for t in transcripts if t and t.strip()]
        if not sentences:
            raise InputError("No non-empty transcript to fit the SentencePiece tokenizer on.")
        n_chars = len(set("".join(sentences)) - {" "})
        if self.byte_fallback and self.vocab_size_target < _BYTE_PIECES + n_chars + 4:
            raise ConfigError(
                f"vocab_size={self.vocab_size_target} is too small for byte_fallback with "
                f"{n_chars} distinct characters: use vocab_size >= {_BYTE_PIECES + n_chars + 4} "
                "or byte_fallback: false."
            )
        save_dir = Path(save_dir)
        save_dir.mkdir(parents=True, exist_ok=True)
        prefix = save_dir / Path(MODEL_FILE).stem
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_prefix=str(prefix),
            vocab_size=self.vocab_size_target,
            model_type=self.model_type,
            character_coverage=1.0,
            minloglevel=2,
            hard_vocab_limit=False,
            byte_fallback=self.byte_fallback,
            # identity: our own NFC normalization only, so decode() gives back the text.
            normalization_rule_name="identity",
            # The default (4192 bytes) would silently skip long transcripts.
            max_sentence_length=max(4192, max(len(s.encode("utf-8")) for s in sentences) + 1),
            num_threads=1,  # deterministic
        )
        self.load(save_dir / MODEL_FILE)

    def _require_model(self):
        if self._sp is None:
            raise ConfigError(
                "The sentencepiece text tokenizer has no model: call fit(transcripts, save_dir) "
                "first or give model_path to a trained .model file."
            )
        return self._sp

    # ------------------------------------------------------------ encoding
    @property
    def vocab_size(self) -> int:
        """Pieces of the trained model (``<unk>``, ``<s>``, ``</s>`` included)."""
        return self._require_model().get_piece_size()

    def normalize(self, text):
        """Words of ``text``: the language's segmentation, or :func:`normalize_transcript`."""
        if self.words is not None:
            return self.words.split(text)
        return normalize_transcript(text, self.lowercase)

    def encode_words(self, text: str) -> TokenizedText:
        """Tokenize ``text`` word by word (every word yields >= 1 token)."""
        sp = self._require_model()
        words = self.normalize(text)
        ids, word_ids = [], []
        for index, pieces in enumerate(sp.encode(words)):
            if not pieces:
                raise InputError(f"Word {words[index]!r} produced no SentencePiece tokens.")
            if sp.unk_id() in pieces:
                logger.warning("Word %r has characters unknown to %s; they become <unk>.", words[index], self.model_path)
            ids.extend(pieces)
            word_ids.extend([index] * len(pieces))
        return TokenizedText(ids=ids, word_ids=word_ids, words=words)

    def decode(self, ids) -> str:
        """Text of ``ids`` (words separated by single spaces, no leading space)."""
        return self._require_model().decode([int(i) for i in ids])

    def save(self, save_dir):
        """Copy the model file into ``save_dir``; returns its new path."""
        self._require_model()
        target = Path(save_dir) / MODEL_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        if Path(self.model_path).resolve() != target.resolve():
            shutil.copyfile(self.model_path, target)
        return target
