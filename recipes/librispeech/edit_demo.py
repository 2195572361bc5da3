#!/usr/bin/env python3
"""Text-aligned speech editing, measured (TASTE paper, section on editing).

For each sentence, espeak-ng speaks it twice with the same voice: ``A`` plainly and
``B`` with one word slowed down (SSML rate 55 %), so the true duration of that word
in both is known. The word's TASTE tokens are swapped from B into A
(``TasteTokenizer.edit``), and the edited tokens are decoded. If the tokens carry
the word's duration, the decoded edit is longer than the decoded A by about the
difference of the word's durations in B and A, and that word gets longer. Decoders that walk the
words (``word_pointer_transformer``) also report each word's exact span in the
decoded audio (``DecodedSpeech.word_spans``): the edited word's own duration, with
no ASR in the way::

    python recipes/librispeech/edit_demo.py results/taste/1986/tokenizer --num 20

Writes ``edit_demo.json`` (per sentence and means) and the first edits as wavs.
"""

import argparse
import json
import os

import numpy as np
import soundfile as sf
import torch
from tqdm import tqdm

from taste_toolkit.api import TasteTokenizer
from taste_toolkit.data.synthetic_corpus import SPEAKER_VOICES, make_sentence, synthesize_utterance
from taste_toolkit.metrics.asr import OfflineASR
from taste_toolkit.metrics.durations import normalize_word


def word_duration(asr, wav, sr, words, index):
    """Duration (s) of ``words[index]`` in ``wav`` from ASR word timestamps, or None."""
    hyp = asr.transcribe_words(wav, sr)
    norm = [normalize_word(w) for w, _, _ in hyp]
    target = normalize_word(words[index])
    # The same word at the same rank among its occurrences (sentences may repeat words).
    rank = [normalize_word(w) for w in words[: index + 1]].count(target) - 1
    hits = [i for i, w in enumerate(norm) if w == target]
    if len(hits) <= rank:
        return None
    _, start, end = hyp[hits[rank]]
    return end - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("tokenizer", help="standalone tokenizer folder (with a vocoder)")
    parser.add_argument("--num", type=int, default=20, help="sentences (default: 20)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="output folder (default: <tokenizer>/edit_demo)")
    parser.add_argument("--top-k", type=int, default=25,
                        help="top-k sampling of the units, seeded per sentence (0 = greedy, which tends to loop; "
                             "default 25, as the evaluation harness)")
    args = parser.parse_args(argv)
    out_dir = args.output or os.path.join(args.tokenizer, "edit_demo")
    os.makedirs(out_dir, exist_ok=True)
    tok = TasteTokenizer.from_pretrained(args.tokenizer)
    asr = OfflineASR(compute_type="int8")
    rng = np.random.default_rng(args.seed)
    rows = []
    for n in tqdm(range(args.num), desc="edits"):
        words = make_sentence(rng)
        k = int(rng.integers(1, len(words) - 1))
        voice, _, pitch, rate = SPEAKER_VOICES[n % 4]
        plain = [None] * len(words)
        slow = list(plain)
        slow[k] = "slow"
        audio_a, start_a, end_a = synthesize_utterance(words, plain, voice, rate, pitch)
        audio_b, start_b, end_b = synthesize_utterance(words, slow, voice, rate, pitch)
        text = " ".join(words)
        ta, tb = tok.encode(audio_a, 16000, text), tok.encode(audio_b, 16000, text)
        edited = tok.edit(ta, tb, [k])
        # A, the edit and B decoded as one batch with a per-sentence seed: reproducible.
        dec = tok.decode([ta, edited, tb], top_k=args.top_k, generator=torch.Generator().manual_seed(args.seed + n))
        sr = dec.sample_rate
        lens = [w.numel() / sr for w in dec.waveforms]
        row = {
            "text": text, "word": words[k], "index": k,
            "source_word_duration": {"A": end_a[k] - start_a[k], "B": end_b[k] - start_b[k]},
            "decoded_duration": {"A": lens[0], "edited": lens[1], "B": lens[2]},
            "decoded_word_duration": {
                name: word_duration(asr, w.numpy(), sr, words, k) for name, w in zip(("A", "edited", "B"), dec.waveforms)
            },
        }
        if dec.word_spans is not None:  # the decoder's own word timing (start to next start)
            row["decoded_word_slot"] = {name: spans[k][1] - spans[k][0]
                                        for name, spans in zip(("A", "edited", "B"), dec.word_spans)}
        rows.append(row)
        if n < 3:
            for name, w in zip(("A", "edited", "B"), dec.waveforms):
                sf.write(os.path.join(out_dir, f"{n:02d}_{name}.wav"), (w / max(1.0, float(w.abs().max()))).numpy(), sr)
    src_gain = np.mean([r["source_word_duration"]["B"] - r["source_word_duration"]["A"] for r in rows])
    edit_gain = np.mean([r["decoded_duration"]["edited"] - r["decoded_duration"]["A"] for r in rows])
    donor_gain = np.mean([r["decoded_duration"]["B"] - r["decoded_duration"]["A"] for r in rows])
    measured = [r for r in rows if all(v is not None for v in r["decoded_word_duration"].values())]
    word = {name: float(np.mean([r["decoded_word_duration"][name] for r in measured])) if measured else None
            for name in ("A", "edited", "B")}
    summary = {
        "sentences": len(rows),
        "source: slowed word longer by (s)": float(src_gain),
        "decoded edit longer than decoded A by (s)": float(edit_gain),
        "decoded B longer than decoded A by (s)": float(donor_gain),
        "edited word duration in decoded audio (ASR-timed, s)": word,
        "sentences with the word found by ASR in all three": len(measured),
    }
    if all("decoded_word_slot" in r for r in rows):
        slot = {name: float(np.mean([r["decoded_word_slot"][name] for r in rows])) for name in ("A", "edited", "B")}
        summary["edited word slot in decoded audio (decoder boundaries, s)"] = slot
        summary["edited word longer than in decoded A by (decoder boundaries, s)"] = slot["edited"] - slot["A"]
    with open(os.path.join(out_dir, "edit_demo.json"), "w") as f:
        json.dump({"summary": summary, "rows": rows}, f, indent=1)
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
