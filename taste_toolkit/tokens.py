"""``TasteTokens``: the text-aligned speech tokens of one utterance, as plain data.

They are what ``TasteTokenizer.encode`` returns and what ``decode`` / ``edit``
and the ``taste tokenize`` files consume. ``to_dict`` / ``from_dict`` give a
JSON-able form (one line per utterance in a tokens file); ``fingerprint`` names
the model that made them so tokens are never decoded by another model.
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
