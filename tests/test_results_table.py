"""RESULTS.md's generated tables equal what results_table.py prints from the JSON kept next to it."""

import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "recipes", "librispeech")
SCRIPT = os.path.join(RECIPE, "results_table.py")
#: ``<!-- results_table: ARGS -->`` ... ``<!-- /results_table -->`` blocks of RESULTS.md.
BLOCK = re.compile(r"<!-- results_table: (.+?) -->\n(.*?)\n<!-- /results_table -->", re.S)


def run_table(*args):
    proc = subprocess.run([sys.executable, SCRIPT, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_markdown_of_runs_with_missing_keys(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"test": {"unit_top5": 0.61234, "rvq_perplexity_l0": 40.5}}))
    (tmp_path / "b.json").write_text(json.dumps({"test": {"unit_top5": 0.6}}))
    table = run_table(str(tmp_path), "--keys", "unit_top5,rvq_perplexity_l0").splitlines()
    assert table[0] == "| run | unit_top5 | rvq_perplexity_l0 |"
    assert table[2] == "| a | 0.612 | 40.5 |" and table[3] == "| b | 0.600 | - |"


def test_results_md_tables_are_generated_from_the_kept_json():
    with open(os.path.join(RECIPE, "RESULTS.md"), encoding="utf-8") as f:
        text = f.read()
    blocks = BLOCK.findall(text)
    if not blocks:
        pytest.fail("RESULTS.md has no generated results_table block")
    for args, table in blocks:
        assert run_table(*args.split()) == table.strip(), f"RESULTS.md table for {args!r} is stale: rerun the script"
