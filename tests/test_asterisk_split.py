"""The Asterisk prompts as a real-voice training split that never holds an evaluation clip."""

import csv
import os

import pytest
import soundfile as sf

from taste_toolkit.data import asterisk
from taste_toolkit.errors import MissingResourceError

needs_prompts = pytest.mark.skipif(
    not (os.path.isdir(asterisk.ASTERISK_DIR) and os.path.isfile(asterisk.ASTERISK_TEXT)),
    reason="asterisk-core-sounds-en(-g722) not installed (scripts/install.sh installs them)",
)


@needs_prompts
def test_split_leaves_out_the_evaluation_prompts(tmp_path):
    held = asterisk.evaluation_ids(20)
    assert len(held) == 20 and asterisk.evaluation_ids(0) == []
    # the evaluation set's own reader takes exactly these prompts
    assert [p[0] for p in asterisk.asterisk_prompts(20)] == held
    path = asterisk.prepare_asterisk_split(str(tmp_path / "ast"), held_out=20, limit=12)
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 and not {r["ID"] for r in rows} & set(held)
    for row in rows:
        wav, sr = sf.read(row["wav"])
        assert sr == 16000 and abs(len(wav) / sr - float(row["duration"])) < 1e-3 and len(wav) > 1600
        assert row["wrd"] and row["wrd"] == row["wrd"].upper() and "[" not in row["wrd"]
        assert row["spk_id"] == "asterisk-allison"
    # cached: the same request does not rewrite
    mtime = os.path.getmtime(path)
    assert asterisk.prepare_asterisk_split(str(tmp_path / "ast"), held_out=20, limit=12) == path
    assert os.path.getmtime(path) == mtime


def test_normalize_and_missing_packages(tmp_path):
    assert asterisk._normalize("Please hold, [pause] we're 2 minutes away!") == "PLEASE HOLD PAUSE WE'RE 2 MINUTES AWAY"
    with pytest.raises(MissingResourceError, match="apt-get install asterisk-core-sounds-en"):
        asterisk.asterisk_prompts(prompt_dir=str(tmp_path / "none"), text_file=str(tmp_path / "none.txt.gz"))
