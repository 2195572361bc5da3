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
    bridge, head, codebook = model.bridge, model.head, model.codebook
    model.eval()
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    start = time.time()
    ex = bridge.build(list(prompt_words), prompt_codes, complete=False)
    ids, tails, audio = ex.input_ids.tolist(), ex.is_tail.tolist(), list(ex.audio_codes.to(device))
    codes = list(torch.as_tensor(prompt_codes).long().to(device))
    n_prompt = len(codes)
    n_real, n_pos_words = n_prompt, n_prompt  # real words so far; (pseudo-)words laid out so far
    word_start = bridge.word_start.to(device)
    banned = torch.zeros(bridge.vocab_size, dtype=torch.bool, device=device)
    banned[[i for i in bridge.special_ids if i != bridge.eos_id]] = True

    def step_inputs(rows):
        t = torch.tensor([ids[i] if ids[i] != TAIL else bridge.pad_id for i in rows], device=device)[None]
        tl = torch.tensor([tails[i] for i in rows], device=device)[None]
        return model.embed(t, tl, torch.stack([audio[i] for i in rows])[None])

    hidden, logits, cache = model.run(step_inputs(range(len(ids))), use_cache=use_cache)
    steps, new_ids, new_words, finishing, reason = 0, [], 0, False, ""
    while True:
        h_last, l_last = hidden[:, -1:], logits[0, -1].float()
        if finishing:
            x = TAIL
        else:
            l_last = l_last.masked_fill(banned, float("-inf"))
            if new_words < cfg.min_new_words:
                l_last[bridge.eos_id] = float("-inf")
            if not new_ids:  # the prompt ends on a whole word: continue with a new word (or EOS)
                l_last = l_last.masked_fill(~word_start, float("-inf"))
                if new_words >= cfg.min_new_words:
                    l_last[bridge.eos_id] = logits[0, -1, bridge.eos_id].float()
            x = _sample_text(l_last, new_ids, cfg, gen)
            if x != bridge.eos_id and bool(word_start[x]) and new_words >= cfg.max_new_words:
                x, reason = bridge.eos_id, "max_new_words"
            elif x != bridge.eos_id and len(new_ids) >= cfg.max_new_tokens:
                x, reason = bridge.eos_id, "max_new_tokens"
            elif x == bridge.eos_id:
                reason = "eos"
        is_word = x not in (bridge.eos_id, TAIL) and bool(word_start[x])
        if is_word or x in (bridge.eos_id, TAIL):
            if is_word:
                n_real += 1
                new_words += 1
            src = n_pos_words - bridge.delay  # TASTE token entering with this (pseudo-)word
            n_pos_words += 1
            if 0 <= src < len(codes):
                row = codes[src]
            elif src == len(codes) and src < n_real:
                row = head.predict(head(h_last), codebook, sample=cfg.taste_sample, top_p=cfg.taste_top_p,
                                   temperature=cfg.taste_temperature, generator=gen)[0, 0]
                codes.append(row)
            else:
                row = torch.full_like(audio[0], -1)
        else:
            row = audio[-1]  # a word's later sub-words carry the same speech token
        if x not in (bridge.eos_id, TAIL):
            new_ids.append(x)
        if x in (bridge.eos_id, TAIL):
            finishing = True
            if len(codes) >= n_real:  # every word has its TASTE token: done
                break
        ids.append(x)
        tails.append(x == TAIL)
        audio.append(row)
        rows = [len(ids) - 1] if use_cache else range(len(ids))
        hidden, logits, cache = model.run(step_inputs(rows), past_key_values=cache, use_cache=use_cache)
        steps += 1
    words = list(prompt_words) + _split_words(bridge, new_ids)
    if len(words) != len(codes):
        raise RuntimeError(f"generation produced {len(words)} words but {len(codes)} TASTE tokens")
    return GenerationResult(words, torch.stack(codes).cpu(), n_prompt, new_ids, steps + 1, time.time() - start, reason)


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
