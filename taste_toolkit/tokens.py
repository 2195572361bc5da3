"""``TasteTokens``: the text-aligned speech tokens of one utterance, as plain data.

They are what ``TasteTokenizer.encode`` returns and what ``decode`` / ``edit``
and the ``taste tokenize`` files consume. ``to_dict`` / ``from_dict`` give a
JSON-able form (one line per utterance in a tokens file); ``fingerprint`` names
the model that made them so tokens are never decoded by another model.
:func:`check_token_fields` refuses hand-made or damaged tokens (wrong dtypes or
shapes, ids outside the vocabulary, inconsistent word ids) with an InputError
before they reach a model.
"""

from dataclasses import dataclass, field
from typing import List, Optional

import torch

from taste_toolkit.errors import InputError


@dataclass
class TasteTokens:
    """Speech tokens of one utterance, aligned with its text.

    Attributes
    ----------
    text : str
        The transcript as given.
    words : list of str
        Normalized words.
    text_ids : torch.Tensor
        ``(N,)`` text token ids.
    word_ids : torch.Tensor
        ``(N,)`` word index of each text token.
    level : str
        ``"word"`` (one speech token per word), ``"token"`` (per text token),
        ``"frame"`` or ``"none"`` (text-only model).
    codes : torch.Tensor or None
        ``(M, R)`` code indices (``M`` = words or tokens); ``None`` without a quantizer.
    embeddings : torch.Tensor or None
        ``(M, D)`` continuous vectors (z_hat); kept when asked for, and always for
        models without a quantizer (they are the tokens then).
    speaker : torch.Tensor or None
        ``(D_s,)`` speaker vector for decoders with a speaker prefix.
    alignment : torch.Tensor or None
        ``(N, T)`` aggregator attention (text tokens x encoder frames), on request.
    frame_rate : float
        Encoder frames per second (time axis of ``alignment``).
    duration : float
        Seconds of input audio.
    fingerprint : str
        Identity of the model (config + codebooks) that made the tokens.
    """

    text: str
    words: List[str]
    text_ids: torch.Tensor
    word_ids: torch.Tensor
    level: str
    codes: Optional[torch.Tensor] = None
    embeddings: Optional[torch.Tensor] = None
    speaker: Optional[torch.Tensor] = None
    alignment: Optional[torch.Tensor] = None
    frame_rate: float = 0.0
    duration: float = 0.0
    fingerprint: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def num_speech_tokens(self) -> int:
        """Speech tokens (rows of ``codes`` or ``embeddings``)."""
        for t in (self.codes, self.embeddings):
            if t is not None:
                return int(t.shape[0])
        return 0

    @property
    def token_rate(self) -> float:
        """Speech tokens per second of audio (0 when unknown)."""
        return self.num_speech_tokens / self.duration if self.duration > 0 else 0.0

    def to_dict(self, include_embeddings=False):
        """JSON-able dict (codes as nested lists; no alignment)."""
        out = {
            "text": self.text,
            "words": list(self.words),
            "text_ids": self.text_ids.tolist(),
            "word_ids": self.word_ids.tolist(),
            "level": self.level,
            "codes": None if self.codes is None else self.codes.tolist(),
            "duration": round(float(self.duration), 4),
            "frame_rate": self.frame_rate,
            "fingerprint": self.fingerprint,
        }
        if self.speaker is not None:
            out["speaker"] = [round(float(v), 6) for v in self.speaker]
        if self.embeddings is not None and (include_embeddings or self.codes is None):
            out["embeddings"] = [[round(float(v), 6) for v in row] for row in self.embeddings]
        if self.extra:
            out["extra"] = dict(self.extra)
        return out

    @classmethod
    def from_dict(cls, data):
        """Inverse of :meth:`to_dict`; raises InputError on malformed records."""
        try:
            codes = data.get("codes")
            emb = data.get("embeddings")
            spk = data.get("speaker")
            tokens = cls(
                text=str(data["text"]),
                words=[str(w) for w in data["words"]],
                text_ids=torch.tensor(data["text_ids"], dtype=torch.long),
                word_ids=torch.tensor(data["word_ids"], dtype=torch.long),
                level=str(data["level"]),
                codes=None if codes is None else torch.tensor(codes, dtype=torch.long).reshape(len(codes), -1),
                embeddings=None if emb is None else torch.tensor(emb, dtype=torch.float32).reshape(len(emb), -1),
                speaker=None if spk is None else torch.tensor(spk, dtype=torch.float32),
                frame_rate=float(data.get("frame_rate", 0.0)),
                duration=float(data.get("duration", 0.0)),
                fingerprint=str(data.get("fingerprint", "")),
                extra=dict(data.get("extra", {})),
            )
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise InputError(f"Malformed tokens record ({type(exc).__name__}: {exc}); expected TasteTokens.to_dict() output.") from exc
        if tokens.text_ids.shape != tokens.word_ids.shape:
            raise InputError("Malformed tokens record: text_ids and word_ids differ in length.")
        return tokens


def _describe(value):
    return f"{type(value).__name__} {value!r}"[:80]


#: Speech-token levels a model can produce (see :class:`~taste_toolkit.tokens.TasteTokens`).
LEVELS = ("word", "token", "frame", "none")


def check_token_fields(tokens, vocab_size):
    """Raise InputError unless ``tokens`` is structurally valid for a model with ``vocab_size`` text tokens.

    Tokens from ``encode`` or ``TasteTokens.from_dict`` of its output always pass;
    this catches hand-made or damaged records before they reach the model.
    """
    def fail(msg):
        raise InputError(f"Invalid tokens: {msg}. Use tokens made by TasteTokenizer.encode (or from_dict of them).")

    for name in ("text_ids", "word_ids"):
        t = getattr(tokens, name)
        if not isinstance(t, torch.Tensor) or t.dim() != 1 or t.dtype.is_floating_point or t.dtype == torch.bool:
            fail(f"{name} must be a 1-D integer tensor, got {_describe(t)}")
    n = tokens.text_ids.numel()
    if n == 0:
        fail("the text has no tokens")
    if tokens.word_ids.numel() != n:
        fail(f"text_ids ({n}) and word_ids ({tokens.word_ids.numel()}) differ in length")
    if int(tokens.text_ids.min()) < 0 or int(tokens.text_ids.max()) >= vocab_size:
        fail(f"text token ids must lie in [0, {vocab_size})")
    w = tokens.word_ids
    if int(w[0]) != 0 or bool(((w[1:] - w[:-1]) < 0).any()) or bool(((w[1:] - w[:-1]) > 1).any()):
        fail("word_ids must start at 0 and grow by 0 or 1 from one text token to the next")
    if tokens.level not in LEVELS:
        fail(f"level must be one of {LEVELS}, got {tokens.level!r}")
    if tokens.codes is not None:
        c = tokens.codes
        if not isinstance(c, torch.Tensor) or c.dim() != 2:
            fail(f"codes must be a 2-D (M, R) tensor, got {_describe(c)}")
        if c.dtype.is_floating_point and (not bool(torch.isfinite(c).all()) or not torch.equal(c, c.round())):
            fail("codes must be whole numbers")
    for name in ("embeddings", "speaker"):
        t = getattr(tokens, name)
        if t is None:
            continue
        if not isinstance(t, torch.Tensor) or not t.dtype.is_floating_point:
            fail(f"{name} must be a float tensor, got {_describe(t)}")
        if not bool(torch.isfinite(t).all()):
            fail(f"{name} contain NaN or inf")
    if tokens.embeddings is not None and tokens.embeddings.dim() != 2:
        fail(f"embeddings must be (M, D), got shape {tuple(tokens.embeddings.shape)}")
    if tokens.speaker is not None and tokens.speaker.dim() != 1:
        fail(f"speaker must be (D,), got shape {tuple(tokens.speaker.shape)}")
