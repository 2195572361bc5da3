"""The text -> LLM bridge: words of the TASTE tokenizer laid onto the LLM's tokens.

Layout of one utterance of ``W`` words with delay ``d`` (reference-taste.md
sections 2 and 8; the official ``delay_level="word"``, ``delay=1``)::

    position p      0     1..T (text tokens)        T+1    T+2 .. (tail)
    input text      BOS   tokens of words 0..W-1     EOS    learned text pad
    word_pos[p]     -1    word of the token          W      W+1, W+2, ...
    input speech    pad   TASTE of word word_pos-d   (same rule; pad when out of range)

* Each word is tokenized on its own as ``" " + word`` (the LLM's word-start
  form), so a word's tokens never depend on its neighbours and the same test
  (does the token start with a space marker?) finds word starts at generation time.
* The speech stream carries, at every token of word ``w``, the TASTE token of word
  ``w - d`` (filled forward across the word's sub-words); where no such word exists
  (the first ``d`` words, BOS) a learned speech pad vector is used.
* EOS is a pseudo-word ``W`` and ``max(d - 1, 0)`` tail positions (learned text pad)
  follow it, so the TASTE tokens of the last ``d`` words are all predicted and fed.
* Targets: text label at p = input token p+1 (none into the tail). TASTE label at p
  = the speech input at p+1 when p+1 starts a (pseudo-)word and carries a real
  TASTE token: the model predicts the next speech input, having read all of word
  ``word_pos[p+1] - 1``.

The official release (``end="pad"``, ``first_word_space=False``, ``bos_id`` = its
``sos_id``) lays an utterance out as ``[sos, tokens of words 0..W-1, d x text pad]``:
no EOS (the text side ends with ``d`` learned pads, the pseudo-words ``W..W+d-1``),
and the first word is encoded without its leading space, as its data pipeline does.
"""

from dataclasses import dataclass, fields
from typing import List

import torch

from taste_toolkit.errors import ConfigError, InputError

IGNORE = -100


@dataclass
class BridgeExample:
    """One utterance laid out for the LLM (shapes for ``N`` positions, ``R`` RVQ layers).

    Attributes
    ----------
    input_ids : (N,) long        LLM input ids (tail positions hold the pad id).
    is_tail : (N,) bool           positions whose text input is the learned text pad.
    audio_codes : (N, R) long     TASTE codes entering at each position, -1 = speech pad.
    text_labels : (N,) long       next LLM token, -100 where none.
    taste_labels : (N, R) long    next TASTE token at word starts, -1 where none.
    word_pos : (N,) long          word of each input position (-1 BOS, W = EOS, W+k tail).
    """

    input_ids: torch.Tensor
    is_tail: torch.Tensor
    audio_codes: torch.Tensor
    text_labels: torch.Tensor
    taste_labels: torch.Tensor
    word_pos: torch.Tensor


@dataclass
class BridgeBatch(BridgeExample):
    """Right-padded :class:`BridgeExample` batch; every tensor gains a leading ``B`` and
    ``lengths (B,)`` counts the valid positions. Padding: pad id, -1 codes, -100 labels."""

    lengths: torch.Tensor = None
    ids: list = None

    def to(self, device):
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                setattr(self, f.name, value.to(device))
        return self


class WordBridge:
    """Maps words (+ their TASTE codes) onto an LLM tokenizer's tokens.

    Arguments
    ---------
    tokenizer : transformers tokenizer
        The LLM's tokenizer; needs BOS and EOS ids and word-start markers
        (a leading ``Ġ``/``▁``/space on word-initial tokens, as Llama's have).
    num_quantizers : int
        RVQ layers ``R`` of the TASTE tokens.
    delay : int
        Word delay ``d`` of the speech stream (official: 1).
    end : str
        ``"eos"``: EOS then ``d - 1`` text pads (toolkit); ``"pad"``: ``d`` text pads and
        no EOS (the official release, which never feeds or predicts EOS).
    first_word_space : bool
        Encode the first word as ``" " + word`` like the others (toolkit) or without
        the space (False, the official data pipeline).
    bos_id : int, optional
        Id of the first input (default: the tokenizer's BOS; the official ``sos_id``).
    """

    ENDS = ("eos", "pad")

    def __init__(self, tokenizer, num_quantizers, delay=1, end="eos", first_word_space=True, bos_id=None):
        if delay < 0:
            raise ConfigError(f"delay must be >= 0 words, got {delay}.")
        if end not in self.ENDS:
            raise ConfigError(f"bridge end must be one of {self.ENDS}, got {end!r}.")
        if end == "pad" and delay < 1:
            raise ConfigError("bridge end 'pad' (official layout) needs delay >= 1: the pads carry the last words' "
                              "TASTE tokens.")
        self.tokenizer = tokenizer
        self.num_quantizers = num_quantizers
        self.delay = delay
        self.end, self.first_word_space = end, bool(first_word_space)
        self.bos_id = tokenizer.bos_token_id if bos_id is None else int(bos_id)
        self.eos_id = tokenizer.eos_token_id
        if self.bos_id is None or self.eos_id is None:
            raise ConfigError("The LLM tokenizer has no BOS or EOS token; TASLM needs both (set bos_token/eos_token).")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        self._cache = {}
        self._word_start = None

    @property
    def vocab_size(self):
        return len(self.tokenizer)

    @property
    def word_start(self):
        """``(V,)`` bool table: True for ids that begin a new word (computed once, cached)."""
        if self._word_start is None:
            pieces = self.tokenizer.convert_ids_to_tokens(list(range(self.vocab_size)))
            table = torch.tensor([bool(p) and p[0] in ("Ġ", "▁", " ") for p in pieces])
            table[list(self.special_ids)] = False
            self._word_start = table
        return self._word_start

    @property
    def special_ids(self):
        ids = set(getattr(self.tokenizer, "all_special_ids", []) or [])
        return ids | {self.bos_id, self.eos_id, self.pad_id}

    def word_tokens(self, word, first=False):
        """LLM ids of one word (encoded as ``" " + word``; without the space when ``first``
        and not ``first_word_space``), cached."""
        bare = first and not self.first_word_space
        ids = self._cache.get((word, bare))
        if ids is None:
            if not word or any(c.isspace() for c in word):
                raise InputError(f"A word must be non-empty without spaces, got {word!r}.")
            ids = list(self.tokenizer.encode(word if bare else " " + word, add_special_tokens=False))
            if not ids:
                raise InputError(f"The LLM tokenizer gives no token for word {word!r}.")
            if not bare and not bool(self.word_start[ids[0]]):
                raise ConfigError(
                    f"The LLM tokenizer does not mark the start of word {word!r} "
                    f"(first token {self.tokenizer.convert_ids_to_tokens(ids[:1])}); the bridge needs "
                    "word-initial tokens with a leading space marker (Ġ or ▁), as Llama tokenizers have."
                )
            self._cache[(word, bare)] = ids
        return ids

    def encode_words(self, words):
        """``(ids, word_ids)`` of ``words`` (lists of int, same length)."""
        ids, word_ids = [], []
        for w, word in enumerate(words):
            t = self.word_tokens(word, first=w == 0)
            ids += t
            word_ids += [w] * len(t)
        return ids, word_ids

    def build(self, words: List[str], codes=None, complete=True):
        """Lay out one utterance.

        Arguments
        ---------
        words : list of str
            The utterance's words (as the TASTE tokenizer normalized them).
        codes : torch.Tensor, optional
            ``(W, R)`` TASTE codes, one row per word; ``None`` = text only (speech
            pads everywhere, no TASTE labels).
        complete : bool
            Append EOS and the tail (training, scoring); False gives a generation
            prefix that ends with the last word's tokens.

        Returns
        -------
        BridgeExample
        """
        if not words:
            raise InputError("Empty utterance: TASLM needs at least one word.")
        W, R = len(words), self.num_quantizers
        if codes is not None:
            codes = torch.as_tensor(codes).long()
            if codes.dim() != 2 or codes.shape != (W, R):
                raise InputError(f"codes must be (words={W}, R={R}), got {tuple(codes.shape)}; "
                                 "one TASTE token per word from a tokenizer with this RVQ.")
        ids, word_ids = self.encode_words(words)
        ids, word_pos, tail = [self.bos_id] + ids, [-1] + word_ids, [False] * (len(ids) + 1)
        if complete:
            extra = max(self.delay, 1)  # EOS, then delay - 1 tail pads ("pad": delay tail pads)
            for k in range(extra):
                eos = k == 0 and self.end == "eos"
                ids.append(self.eos_id if eos else self.pad_id)
                word_pos.append(W + k)
                tail.append(not eos)
        n = len(ids)
        word_pos_t = torch.tensor(word_pos)
        audio = torch.full((n, R), -1, dtype=torch.long)
        if codes is not None:
            src = word_pos_t - self.delay
            real = (word_pos_t >= 0) & (src >= 0) & (src < W)
            audio[real] = codes[src[real]]
        starts = torch.zeros(n, dtype=torch.bool)
        starts[1:] = word_pos_t[1:] != word_pos_t[:-1]
        text_labels = torch.full((n,), IGNORE, dtype=torch.long)
        taste_labels = torch.full((n, R), -1, dtype=torch.long)
        ids_t, tail_t = torch.tensor(ids), torch.tensor(tail)
        if n > 1:
            nxt_text = ~tail_t[1:]
            text_labels[:-1] = torch.where(nxt_text, ids_t[1:], torch.full_like(ids_t[1:], IGNORE))
            nxt = starts[1:] & (audio[1:, 0] >= 0)
            taste_labels[:-1][nxt] = audio[1:][nxt]
        return BridgeExample(ids_t, tail_t, audio, text_labels, taste_labels, word_pos_t)

    def collate(self, examples, ids=None):
        """Right-pad a list of :class:`BridgeExample` into a :class:`BridgeBatch`."""
        if not examples:
            raise InputError("Cannot collate an empty list of examples.")
        lengths = torch.tensor([e.input_ids.shape[0] for e in examples])
        B, N, R = len(examples), int(lengths.max()), self.num_quantizers
        batch = BridgeBatch(
            input_ids=torch.full((B, N), self.pad_id, dtype=torch.long),
            is_tail=torch.zeros(B, N, dtype=torch.bool),
            audio_codes=torch.full((B, N, R), -1, dtype=torch.long),
            text_labels=torch.full((B, N), IGNORE, dtype=torch.long),
            taste_labels=torch.full((B, N, R), -1, dtype=torch.long),
            word_pos=torch.full((B, N), -2, dtype=torch.long),
            lengths=lengths,
            ids=list(ids) if ids is not None else None,
        )
        for b, e in enumerate(examples):
            n = e.input_ids.shape[0]
            for f in fields(BridgeExample):
                getattr(batch, f.name)[b, :n] = getattr(e, f.name)
        return batch
