"""Real recorded speech from Debian: the Asterisk prompts, as evaluation clips and as a training split.

``asterisk-core-sounds-en`` (transcripts, ``core-sounds-en.txt.gz``) and
``asterisk-core-sounds-en-g722`` (the audio, G.722 at 16 kHz) hold 568 prompts
read by one female voice (CC-BY-SA-3.0); ``scripts/install.sh`` installs them.

* :func:`asterisk_prompts` reads them in name order;
* the real-speech evaluation set (:mod:`taste_toolkit.evaluation.real_speech`)
  takes the first ``held_out`` prompts with at least 4 words;
* :func:`prepare_asterisk_split` writes every other prompt as a SpeechBrain
  manifest (``ID, duration, wav, spk_id, wrd``), so a recipe can train on a
  real voice without ever seeing the evaluation clips. The transcripts are the
  package's own (no ASR pass is needed); stage directions such as ``[pause]``
  are removed.

Usage::

    python -m taste_toolkit.data.asterisk results/asterisk_train --held_out 20
"""

import argparse
import csv
import gzip
import json
import os
import re
import sys

from taste_toolkit.errors import MissingResourceError

ASTERISK_DIR = "/usr/share/asterisk/sounds/en_US_f_Allison"
ASTERISK_TEXT = "/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz"
#: Prompts with fewer words are not used for evaluation (WER on one word says little).
EVAL_MIN_WORDS = 4


def _transcripts(text_file):
    texts = {}
    with gzip.open(text_file, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            name, sep, text = line.partition(":")
            # Stage directions such as "[pause]" are not spoken words.
            text = re.sub(r"\[[^\]]*\]", " ", text).strip()
            if sep and text and "/" not in name:
                texts[name.strip()] = " ".join(text.split())
    return texts


def _decode_g722(path):
    import av
    import numpy as np

    with av.open(path, format="g722") as container:
        wav = np.concatenate([fr.to_ndarray().reshape(-1) for fr in container.decode(audio=0)]).astype(np.float32)
    if np.abs(wav).max() > 1.0:  # integer PCM
        wav = wav / 32768.0
    return wav


def _select(limit, min_words, prompt_dir, text_file, exclude=()):
    """``[(id, path, text)]`` of the prompts in name order: audio present, >= ``min_words`` words."""
    if not (os.path.isdir(prompt_dir) and os.path.isfile(text_file)):
        raise MissingResourceError(
            f"Asterisk prompts not found ({prompt_dir}, {text_file}): "
            "apt-get install asterisk-core-sounds-en asterisk-core-sounds-en-g722 (scripts/install.sh does).")
    exclude = set(exclude)
    texts = _transcripts(text_file)
    out = []
    for name in sorted(texts):
        if limit is not None and len(out) >= limit:
            break
        path = os.path.join(prompt_dir, f"{name}.g722")
        utt_id = f"asterisk-{name}"
        if utt_id in exclude or not os.path.isfile(path) or len(re.findall(r"[A-Za-z']+", texts[name])) < min_words:
            continue
        out.append((utt_id, path, texts[name]))
    return out


def asterisk_prompts(limit=None, min_words=EVAL_MIN_WORDS, prompt_dir=ASTERISK_DIR, text_file=ASTERISK_TEXT,
                     exclude=()):
    """``[(id, waveform (N,) float32, 16000, text)]`` in name order.

    Arguments
    ---------
    limit : int, optional
        Stop after this many prompts (None: all).
    min_words : int
        Skip prompts with fewer words.
    prompt_dir, text_file : str
        The packages' audio folder and transcript file.
    exclude : iterable of str
        Prompt ids (``asterisk-<name>``) to leave out.
    """
    return [(utt_id, _decode_g722(path), 16000, text)
            for utt_id, path, text in _select(limit, min_words, prompt_dir, text_file, exclude)]


def evaluation_ids(held_out, prompt_dir=ASTERISK_DIR, text_file=ASTERISK_TEXT):
    """Ids of the prompts the real-speech evaluation set takes (the first ``held_out`` with >= 4 words)."""
    return [utt_id for utt_id, _, _ in _select(held_out, EVAL_MIN_WORDS, prompt_dir, text_file)]


def _normalize(text):
    """LibriSpeech-style words: upper case, letters, digits and apostrophes."""
    return " ".join(re.findall(r"[A-Z0-9']+", text.upper()))


def prepare_asterisk_split(folder, held_out=20, limit=None, prompt_dir=ASTERISK_DIR, text_file=ASTERISK_TEXT):
    """Write the prompts the evaluation set does not use as ``<folder>/train.csv`` + wavs (cached).

    Arguments
    ---------
    folder : str
        Output folder (``wav/<id>.wav`` at 16 kHz and ``train.csv``).
    held_out : int
        Size of the real-speech evaluation set's Asterisk part; those prompts are
        never written here.
    limit : int, optional
        Write at most this many prompts (tests).

    Returns
    -------
    str
        Path of ``train.csv``.
    """
    import soundfile as sf

    csv_path = os.path.join(folder, "train.csv")
    stamp = os.path.join(folder, "request.json")
    request = {"held_out": int(held_out), "limit": limit, "prompt_dir": prompt_dir}
    if os.path.isfile(csv_path) and os.path.isfile(stamp):
        with open(stamp, encoding="utf-8") as f:
            if json.load(f) == request:
                return csv_path
    held = evaluation_ids(held_out, prompt_dir, text_file)
    prompts = asterisk_prompts(limit, min_words=1, prompt_dir=prompt_dir, text_file=text_file, exclude=held)
    os.makedirs(os.path.join(folder, "wav"), exist_ok=True)
    rows = []
    for utt_id, wav, sr, text in prompts:
        words = _normalize(text)
        if not words:
            continue
        path = os.path.abspath(os.path.join(folder, "wav", f"{utt_id}.wav"))
        sf.write(path, wav, sr, subtype="PCM_16")
        rows.append([utt_id, f"{len(wav) / sr:.3f}", path, "asterisk-allison", words])
    tmp = csv_path + ".tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["ID", "duration", "wav", "spk_id", "wrd"])
        writer.writerows(rows)
    os.replace(tmp, csv_path)
    with open(stamp, "w", encoding="utf-8") as f:
        json.dump(request, f)
    return csv_path


def main(argv=None):
    p = argparse.ArgumentParser(description="Write the Asterisk prompts outside the evaluation set as a training split.")
    p.add_argument("folder", help="output folder, e.g. results/asterisk_train")
    p.add_argument("--held_out", type=int, default=20, help="prompts the real-speech evaluation set takes")
    args = p.parse_args(argv)
    print(prepare_asterisk_split(args.folder, args.held_out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
