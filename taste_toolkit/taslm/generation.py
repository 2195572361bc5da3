"""Joint text + TASTE generation with a KV cache, and speech continuation from an audio prompt.

One step = one LLM position. The text token is drawn from the LM's text head
(greedy, or repetition penalty -> temperature -> top-p); when it starts a new word
(or is EOS), the speech token entering with it -- the TASTE token of the word
``delay`` words back -- is taken from the prompt when that word is a prompt word,
otherwise predicted by the ``lm_head`` at the current position (greedy or top-p
codes in token mode; the mean, or a sample on request, in embedding mode). That
mirrors the training targets of :mod:`taste_toolkit.taslm.bridge` exactly.

With ``use_cache=True`` each step runs the LM on the new position only, reusing
the keys/values of the earlier ones (``past_key_values``); ``use_cache=False``
recomputes the whole sequence every step like the official loop, for comparison.
Stop rules: EOS (allowed after ``min_new_words``), ``max_new_words`` (the next word
start becomes EOS), ``max_new_tokens`` (hard cap).
"""

import time
from dataclasses import dataclass, field
from typing import List, Optional

import torch

from taste_toolkit.errors import ConfigError, InputError
from taste_toolkit.plugins.lm_head.taste_token import top_p_sample

TAIL = -1  # pseudo-token: a tail position (learned text pad) after EOS when delay > 1


@dataclass
class GenerationConfig:
    """Sampling and stopping options (official README defaults in brackets)."""

    max_new_words: int = 16
    min_new_words: int = 1
    max_new_tokens: int = 128
    temperature: float = 1.0          # text temperature [0.5]
    top_p: float = 0.0                # text top-p, 0 = greedy [0.3]
    repetition_penalty: float = 1.0   # CTRL-style, on generated ids [1.1]
    taste_sample: bool = False        # sample TASTE tokens instead of greedy / the mean [greedy]
    taste_top_p: float = 0.9          # token mode, when taste_sample
    taste_temperature: float = 1.0
    seed: int = 0

    def check(self):
        if self.max_new_words < 1 or self.max_new_tokens < 1 or self.min_new_words < 0:
            raise ConfigError("max_new_words and max_new_tokens must be >= 1, min_new_words >= 0.")
        if self.min_new_words > self.max_new_words:
            raise ConfigError(f"min_new_words={self.min_new_words} > max_new_words={self.max_new_words}.")
        if self.temperature < 0 or self.repetition_penalty <= 0 or not 0 <= self.top_p <= 1:
            raise ConfigError("temperature must be >= 0, repetition_penalty > 0 and top_p in [0, 1].")


@dataclass
class GenerationResult:
    """Words and word-level TASTE codes of prompt + continuation."""

    words: List[str]
    codes: torch.Tensor
    num_prompt_words: int
    new_token_ids: List[int] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    stop_reason: str = ""

    @property
    def new_words(self):
        return self.words[self.num_prompt_words:]

    @property
    def tokens_per_second(self):
        """LM positions generated per second (prefill included in the time)."""
        return self.steps / self.seconds if self.seconds > 0 else 0.0


def _sample_text(logits, history, cfg, generator):
    if cfg.top_p <= 0 or cfg.temperature <= 0:
        return int(logits.argmax())
    logits = logits.clone()
    if cfg.repetition_penalty != 1.0 and history:
        idx = torch.tensor(sorted(set(history)), device=logits.device)
        seen = logits[idx]
        logits[idx] = torch.where(seen > 0, seen / cfg.repetition_penalty, seen * cfg.repetition_penalty)
    return int(top_p_sample(logits, cfg.top_p, cfg.temperature, generator))


class _RowState:
    """The decoding state of one utterance: its layout so far and the stop rules.

    :func:`generate` (one prompt) and :func:`generate_batch` (several) run the same
    decisions through this class, so a row of a batch follows exactly the rules of
    a single prompt; only the LM calls differ.
    """

    def __init__(self, model, prompt_words, prompt_codes, cfg, device, tables):
        if not prompt_words:
            raise InputError("Empty prompt: give at least one word (and its TASTE tokens) to continue.")
        bridge = model.bridge
        self.model, self.cfg, self.bridge = model, cfg, bridge
        self.word_start, self.banned = tables
        self.prompt_words = list(prompt_words)
        ex = bridge.build(self.prompt_words, prompt_codes, complete=False)
        self.ids, self.tails, self.audio = ex.input_ids.tolist(), ex.is_tail.tolist(), list(ex.audio_codes.to(device))
        self.codes = list(torch.as_tensor(prompt_codes).long().to(device))
        self.n_prompt = len(self.codes)
        # real words so far; (pseudo-)words laid out so far
        self.n_real, self.n_pos_words = self.n_prompt, self.n_prompt
        self.new_ids, self.new_words, self.finishing, self.reason = [], 0, False, ""
        self.done, self.steps = False, 0
        # One generator per row, seeded alike: a row samples as the same prompt alone would.
        self.generator = torch.Generator(device=device).manual_seed(cfg.seed)

    def step(self, logits, hidden):
        """Choose the next position from the LM outputs at the last one.

        ``logits (V,)`` text logits and ``hidden (1, 1, H)`` last hidden state.
        Appends the new position (id, tail flag, speech codes) and returns True, or
        sets ``done`` and returns False when every word has its TASTE token.
        """
        bridge, cfg, head, codebook = self.bridge, self.cfg, self.model.head, self.model.codebook
        l_last = logits.float()
        if self.finishing:
            x = TAIL
        else:
            l_last = l_last.masked_fill(self.banned, float("-inf"))
            if self.new_words < cfg.min_new_words:
                l_last[bridge.eos_id] = float("-inf")
            if not self.new_ids:  # the prompt ends on a whole word: continue with a new word (or EOS)
                l_last = l_last.masked_fill(~self.word_start, float("-inf"))
                if self.new_words >= cfg.min_new_words:
                    l_last[bridge.eos_id] = logits[bridge.eos_id].float()
            x = _sample_text(l_last, self.new_ids, cfg, self.generator)
            if x != bridge.eos_id and bool(self.word_start[x]) and self.new_words >= cfg.max_new_words:
                x, self.reason = bridge.eos_id, "max_new_words"
            elif x != bridge.eos_id and len(self.new_ids) >= cfg.max_new_tokens:
                x, self.reason = bridge.eos_id, "max_new_tokens"
            elif x == bridge.eos_id:
                self.reason = "eos"
        is_word = x not in (bridge.eos_id, TAIL) and bool(self.word_start[x])
        if is_word or x in (bridge.eos_id, TAIL):
            if is_word:
                self.n_real += 1
                self.new_words += 1
            src = self.n_pos_words - bridge.delay  # TASTE token entering with this (pseudo-)word
            self.n_pos_words += 1
            if 0 <= src < len(self.codes):
                row = self.codes[src]
            elif src == len(self.codes) and src < self.n_real:
                row = head.predict(head(hidden), codebook, sample=cfg.taste_sample, top_p=cfg.taste_top_p,
                                   temperature=cfg.taste_temperature, generator=self.generator)[0, 0]
                self.codes.append(row)
            else:
                row = torch.full_like(self.audio[0], -1)
        else:
            row = self.audio[-1]  # a word's later sub-words carry the same speech token
        if x not in (bridge.eos_id, TAIL):
            self.new_ids.append(x)
        if x in (bridge.eos_id, TAIL):
            self.finishing = True
            if len(self.codes) >= self.n_real:  # every word has its TASTE token: done
                self.done = True
                return False
        self.ids.append(x)
        self.tails.append(x == TAIL)
        self.audio.append(row)
        self.steps += 1
        return True

    def inputs(self, positions):
        """``(ids, tail flags, codes)`` of the given positions (TAIL -> the pad id)."""
        pad = self.bridge.pad_id
        ids = [self.ids[i] if self.ids[i] != TAIL else pad for i in positions]
        return ids, [self.tails[i] for i in positions], [self.audio[i] for i in positions]

    def result(self, seconds):
        words = self.prompt_words + _split_words(self.bridge, self.new_ids)
        if len(words) != len(self.codes):
            raise RuntimeError(f"generation produced {len(words)} words but {len(self.codes)} TASTE tokens")
        return GenerationResult(words, torch.stack(self.codes).cpu(), self.n_prompt, list(self.new_ids),
                                self.steps + 1, seconds, self.reason)


def _tables(model, device):
    bridge = model.bridge
    word_start = bridge.word_start.to(device)
    banned = torch.zeros(bridge.vocab_size, dtype=torch.bool, device=device)
    banned[[i for i in bridge.special_ids if i != bridge.eos_id]] = True
    return word_start, banned


@torch.no_grad()
def generate(model, prompt_words, prompt_codes, config: Optional[GenerationConfig] = None, use_cache=True):
    """Continue an utterance given as words + word-level TASTE codes.

    Arguments
    ---------
    model : TaslmModel
    prompt_words : list of str
        At least one word.
    prompt_codes : torch.Tensor
        ``(W_p, R)`` TASTE codes of the prompt words.
    config : GenerationConfig
    use_cache : bool
        Reuse past keys/values (True) or recompute every position each step.

    Returns
    -------
    GenerationResult
    """
    cfg = config or GenerationConfig()
    cfg.check()
    if not prompt_words:
        raise InputError("Empty prompt: give at least one word (and its TASTE tokens) to continue.")
    model.eval()
    device = next(model.parameters()).device
    start = time.time()
    state = _RowState(model, prompt_words, prompt_codes, cfg, device, _tables(model, device))

    def step_inputs(positions):
        ids, tails, audio = state.inputs(positions)
        return model.embed(torch.tensor(ids, device=device)[None], torch.tensor(tails, device=device)[None],
                           torch.stack(audio)[None])

    hidden, logits, cache = model.run(step_inputs(range(len(state.ids))), use_cache=use_cache)
    while state.step(logits[0, -1], hidden[:, -1:]):
        positions = [len(state.ids) - 1] if use_cache else range(len(state.ids))
        hidden, logits, cache = model.run(step_inputs(positions), past_key_values=cache, use_cache=use_cache)
    return state.result(time.time() - start)


@torch.no_grad()
def generate_batch(model, prompts, config: Optional[GenerationConfig] = None, use_cache=True):
    """Continue several utterances at once: one LM call per step for the whole batch.

    The prompts are left-padded to a common length (padding masked out of attention,
    position ids counted from each row's first real position), so every row appends
    at the same column and one cached step serves all rows. Each row stops on its
    own (EOS, ``max_new_words``, ``max_new_tokens``); a finished row rides along
    with masked pad positions until the last row is done. Under greedy decoding a
    row's output is the one :func:`generate` gives for its prompt alone (up to
    float rounding of the batched matrix products); with sampling each row has its
    own generator seeded with ``config.seed``, as a lone prompt would.

    Arguments
    ---------
    model : TaslmModel
    prompts : list of (list of str, torch.Tensor)
        ``(words, codes (W_p, R))`` per utterance.
    config : GenerationConfig
        Shared by all rows.
    use_cache : bool
        Reuse past keys/values (True) or recompute the whole batch every step.

    Returns
    -------
    list of GenerationResult
        One per prompt, in order; ``seconds`` is the wall time of the whole batch.
    """
    cfg = config or GenerationConfig()
    cfg.check()
    prompts = list(prompts)
    if not prompts:
        raise InputError("No prompts: give a list of (words, codes) pairs to continue.")
    model.eval()
    device = next(model.parameters()).device
    start = time.time()
    tables = _tables(model, device)
    rows = [_RowState(model, words, codes, cfg, device, tables) for words, codes in prompts]
    batch, pad = len(rows), model.bridge.pad_id
    width = max(len(r.ids) for r in rows)
    pad_codes = torch.full_like(rows[0].audio[0], -1)

    def embed(columns):
        """Fused inputs ``(B, C, H)`` from per-row lists of ``(ids, tails, codes)`` columns."""
        ids = torch.tensor([c[0] for c in columns], device=device)
        tails = torch.tensor([c[1] for c in columns], device=device)
        codes = torch.stack([torch.stack(c[2]) for c in columns])
        return model.embed(ids, tails, codes)

    # Prefill: left padding.
    columns, mask = [], torch.zeros(batch, width, dtype=torch.long, device=device)
    for b, r in enumerate(rows):
        n = len(r.ids)
        ids, tails, audio = r.inputs(range(n))
        k = width - n
        columns.append(([pad] * k + ids, [False] * k + tails, [pad_codes] * k + audio))
        mask[b, k:] = 1
    embeds = embed(columns)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    hidden, logits, cache = _run(model, embeds, mask, positions, None, use_cache)
    live = torch.ones(batch, dtype=torch.bool, device=device)
    while True:
        new_columns = []
        for b, r in enumerate(rows):
            if not r.done and r.step(logits[b, -1], hidden[b : b + 1, -1:]):
                ids, tails, audio = r.inputs([len(r.ids) - 1])
                new_columns.append((ids, tails, audio))
            else:
                new_columns.append(([pad], [False], [pad_codes]))
        if all(r.done for r in rows):
            break
        live = torch.tensor([not r.done for r in rows], device=device)
        new = embed(new_columns)
        next_position = positions[:, -1:] + 1
        mask = torch.cat([mask, live.long()[:, None]], dim=1)
        positions = torch.cat([positions, next_position], dim=1)
        if use_cache:
            hidden, logits, cache = _run(model, new, mask, next_position, cache, True)
        else:
            embeds = torch.cat([embeds, new], dim=1)
            hidden, logits, _ = _run(model, embeds, mask, positions, None, False)
    seconds = time.time() - start
    return [r.result(seconds) for r in rows]


def _run(model, embeds, mask, position_ids, cache, use_cache):
    """The backbone on ``embeds`` with an explicit padding mask and position ids (left padding)."""
    out = model.backbone(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids,
                         past_key_values=cache, use_cache=use_cache, output_hidden_states=True)
    return out.hidden_states[-1], out.logits, out.past_key_values if use_cache else None


def _split_words(bridge, ids):
    """Decode generated ids into words, splitting at word-start tokens."""
    groups = []
    for i in ids:
        if bool(bridge.word_start[i]) or not groups:
            groups.append([i])
        else:
            groups[-1].append(i)
    return [bridge.tokenizer.decode(g).strip() or "<unk>" for g in groups]


def continue_speech(model, tokenizer, audio, sample_rate, transcript=None, asr=None, config=None, output=None,
                    generated_only=False):
    """Audio prompt -> transcript -> TASTE tokens -> continuation -> unit decoder -> vocoder -> wav.

    Arguments
    ---------
    model : TaslmModel
    tokenizer : TasteTokenizer
        The stage-1 tokenizer TASLM was trained on (same codebooks).
    audio, sample_rate
        The prompt audio.
    transcript : str, optional
        What the prompt says; without it ``asr`` (an object with
        ``transcribe(wav, sample_rate) -> str``, e.g.
        :class:`taste_toolkit.metrics.asr.OfflineASR`) transcribes it.
    output : str, optional
        Write the waveform there (soundfile).
    generated_only : bool
        Decode only the continuation (default: prompt + continuation).

    Returns
    -------
    (GenerationResult, DecodedSpeech)
    """
    from taste_toolkit.taslm.data import word_level_codes
    from taste_toolkit.tokens import TasteTokens

    if transcript is None or not str(transcript).strip():
        if transcript is not None:
            raise InputError("Empty transcript for the prompt audio: give the words spoken or leave it unset to use ASR.")
        if asr is None:
            raise InputError("The prompt audio has no transcript and no ASR is configured: TASTE tokens are "
                             "aligned to text, so pass transcript=... (--text) or an ASR (--asr).")
        transcript = asr.transcribe(audio, sample_rate)
        if not transcript.strip():
            raise InputError("The ASR heard no words in the prompt audio; give its transcript instead.")
    if not torch.equal(tokenizer.model.quantizer.codebooks.detach().float().cpu(), model.codebook.codebooks.cpu()):
        raise ConfigError("This TASLM was trained on another tokenizer (its RVQ codebooks differ); load the "
                          "tokenizer recorded in its taslm_config.json.")
    prompt = tokenizer.encode(audio, sample_rate, transcript)
    result = generate(model, prompt.words, word_level_codes(prompt), config)
    words = result.new_words if generated_only else result.words
    codes = result.codes[result.num_prompt_words:] if generated_only else result.codes
    if not words:
        raise InputError("Nothing was generated to decode.")
    text = tokenizer.text_tokenizer.encode_words(" ".join(words))
    if len(text.words) != len(words):
        raise InputError(f"The generated words {words} re-tokenize into {len(text.words)} words.")
    tokens = TasteTokens(text=" ".join(words), words=text.words, text_ids=torch.tensor(text.ids),
                         word_ids=torch.tensor(text.word_ids), level="word", codes=codes, speaker=prompt.speaker,
                         fingerprint=tokenizer.fingerprint)
    speech = tokenizer.decode(tokens)
    if output and speech.waveforms is not None:
        import soundfile as sf

        sf.write(output, speech.waveforms[0].numpy(), speech.sample_rate)
    return result, speech
