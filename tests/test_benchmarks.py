"""Smoke test of the benchmark suite (``benchmarks/run.py --quick``) and its growth fit.

Only the report's structure and the exactness checks it records are asserted;
timings and ratios are never asserted (they depend on the machine and its load).
"""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")


def table_rows(report, header_start):
    """Rows (lists of cells) of the Markdown table whose header starts with ``header_start``."""
    lines = report.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split(" | ")])
    return rows


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "report.md"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, os.path.join(BENCH, "run.py"), "--quick", "--output", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = out.read_text()
    assert text.strip() in proc.stdout  # the same report is printed
    return text


def test_quick_suite_reports_every_item(quick_report):
    for key in ("cpu:", "logical cores:", "torch:", "device:", "torch threads:"):
        assert f"- {key}" in quick_report
    rows = table_rows(quick_report, "| item |")
    items = [r[0] for r in rows]
    for item, count in [("1 encode", 4), ("1b taps", 1), ("2 aggregator", 2), ("3 unit decoder", 2),
                        ("4 TASLM generation", 1), ("5 stage-1 training", 2)]:
        assert items.count(item) == count, (item, items)
    assert all(len(r) == 10 for r in rows)
    number = re.compile(r"^\d+(\.\d+)?$")
    for r in rows:
        skipped = "padded skipped" in r[9]
        assert number.match(r[5]), r  # the fast path always runs
        assert number.match(r[3]) or (skipped and r[3] == "skipped"), r
        assert re.match(r"^\d+\*? \(\+\d+\)$", r[8]), r  # peak memory of the fast path
    assert sum("padded skipped" in r[9] for r in rows) == 1
    # Exactness recorded by the suite: both paths give the same outputs.
    notes = {r[0] + r[1]: r[9] for r in rows}
    assert all("identical units: yes" in v for k, v in notes.items() if k.startswith("3 "))
    assert all("identical tokens: yes" in v for k, v in notes.items() if k.startswith("4 "))
    for k, v in notes.items():
        if k.startswith("2 "):
            assert float(re.search(r"max \|eager - sdpa\| = (\S+)", v).group(1)) < 1e-5
    assert re.search(r"keys cos 0\.\d+ .*values cos", notes[next(k for k in notes if k.startswith("1b"))])


def test_quick_suite_reports_growth_and_targets(quick_report):
    growth = table_rows(quick_report, "| geometry |")
    kinds = {(g[1], g[2]) for g in growth}
    assert ("unpadded", "length (s)") in kinds and ("unpadded", "batch") in kinds
    assert all(re.match(r"^-?\d+\.\d\d$", g[5]) for g in growth)
    targets = table_rows(quick_report, "| target |")
    assert len(targets) == 4
    assert "## Errors" not in quick_report


def test_loglog_slope_recovers_exponents():
    sys.path.insert(0, BENCH)
    try:
        from bench_common import loglog_slope
        from bench_encoder import growth_rows
    finally:
        sys.path.remove(BENCH)
    xs = [2, 5, 10, 20, 30]
    assert loglog_slope(xs, [3 * x for x in xs]) == pytest.approx(1.0)
    assert loglog_slope(xs, [0.5 * x**2 for x in xs]) == pytest.approx(2.0)
    points = [dict(geometry="g", mode="unpadded", batch=b, seconds=s, time=0.1 * b * s**1.5) for b in (1, 4) for s in xs]
    fits = {(g["varies"], g["fixed"]): g["exponent"] for g in growth_rows(points)}
    assert fits[("length (s)", "batch 1")] == pytest.approx(1.5)
    assert fits[("batch", "5 s")] == pytest.approx(1.0)
    assert len(fits) == 2 + len(xs)
