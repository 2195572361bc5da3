"""Shared helpers of the benchmark suite: machine description, timing, peak memory, rows.

Every measurement is a :class:`Row`: one setting, a slow (baseline) path and a fast
path, each with its wall time and peak memory, and their ratio. Timings take the
minimum of ``repeats`` runs after ``warmup`` runs: on a shared machine the minimum
is the least disturbed estimate of the cost itself.

Peak memory
-----------
CPU: peak resident set size (``VmHWM`` of ``/proc/self/status``), reset before each
measurement by writing ``5`` to ``/proc/self/clear_refs`` (Linux >= 4.0), so each
path gets its own peak. Reported as the peak and its growth over the resident size
at the start of the measurement (the model and inputs already in memory are in the
former, not the latter). Where the reset is impossible the peak is the process's
peak so far (marked ``*``). CUDA: ``torch.cuda.max_memory_allocated`` after
``reset_peak_memory_stats``.
"""

import json
import math
import os
import platform
import re
import socket
import time
from dataclasses import dataclass, field
from typing import Optional

import torch

#: Timed runs per path of the generation benchmarks (items 3, 4 and 4b); the minimum is
#: reported. Each path also gets one untimed warm-up run first.
GENERATION_REPEATS = 3


# --------------------------------------------------------------------- machine
def device():
    """``cuda`` when a GPU is present, else ``cpu``."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description():
    """``{name: value}`` describing where the numbers were measured."""
    import transformers

    desc = {
        "host": socket.gethostname(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cpu": cpu_model(),
        "logical cores": os.cpu_count(),
        "torch threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "(unset)"),
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": str(device()),
    }
    if torch.cuda.is_available():
        desc["gpu"] = torch.cuda.get_device_name(0)
    try:
        with open("/proc/meminfo") as f:
            total = int(re.search(r"MemTotal:\s+(\d+)", f.read()).group(1))
        desc["RAM"] = f"{total / 2**20:.1f} GiB"
    except (OSError, AttributeError):
        pass
    return desc


# ---------------------------------------------------------------------- memory
def _status_mb(key):
    try:
        with open("/proc/self/status") as f:
            return int(re.search(rf"{key}:\s+(\d+)", f.read()).group(1)) / 1024
    except (OSError, AttributeError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@dataclass
class Measurement:
    """Wall time (s) and peak memory (MB) of one path."""

    seconds: float
    peak_mb: float
    growth_mb: float
    exact_peak: bool = True

    def memory(self):
        star = "" if self.exact_peak else "*"
        return f"{self.peak_mb:.0f}{star} (+{self.growth_mb:.0f})"


def measure(fn, repeats=1, warmup=0):
    """Run ``fn()`` ``warmup`` then ``repeats`` times; min wall time and peak memory.

    Returns
    -------
    Measurement, object
        The measurement and the last return value of ``fn``.
    """
    result = None
    for _ in range(warmup):
        result = fn()
    cuda = torch.cuda.is_available()
    if cuda:
        sync()
        torch.cuda.reset_peak_memory_stats()
        start_mb = torch.cuda.memory_allocated() / 2**20
        exact = True
    else:
        exact = _reset_peak()
        start_mb = _status_mb("VmRSS")
    times = []
    for _ in range(max(1, repeats)):
        sync()
        t0 = time.perf_counter()
        result = fn()
        sync()
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else _status_mb("VmHWM")
    return Measurement(min(times), peak, max(0.0, peak - start_mb), exact), result


# ------------------------------------------------------------------------ rows
@dataclass
class Row:
    """One line of the results table.

    ``slow``/``fast`` are the baseline and the toolkit's path; ``unit`` says what
    the extra column ``metric`` is (e.g. real-time factors).
    """

    item: str
    setting: str
    slow_name: str
    fast_name: str
    slow: Optional[Measurement] = None
    fast: Optional[Measurement] = None
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def ratio(self):
        if self.slow is None or self.fast is None or self.fast.seconds <= 0:
            return None
        return self.slow.seconds / self.fast.seconds


def fmt_seconds(m):
    if m is None:
        return "skipped"
    s = m.seconds
    return f"{s:.3f}" if s < 10 else f"{s:.1f}"


def markdown_table(rows):
    """The results table (one line per row), Markdown."""
    head = ("| item | setting | slow path | s | fast path | s | ratio slow/fast "
            "| peak MB slow (+growth) | peak MB fast (+growth) | note |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        ratio = "n/a" if r.ratio is None else f"{r.ratio:.2f}x"
        lines.append(
            f"| {r.item} | {r.setting} | {r.slow_name} | {fmt_seconds(r.slow)} | {r.fast_name} | "
            f"{fmt_seconds(r.fast)} | {ratio} | {r.slow.memory() if r.slow else '-'} | "
            f"{r.fast.memory() if r.fast else '-'} | {r.note} |"
        )
    return "\n".join(lines)


def loglog_slope(xs, ys):
    """Least-squares slope of ``log y`` on ``log x`` (the growth exponent)."""
    if len(xs) < 2:
        return float("nan")
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    var = sum((x - mx) ** 2 for x in lx)
    if var == 0:
        return float("nan")
    return sum((x - mx) * (y - my) for x, y in zip(lx, ly)) / var


def report_json(result, output=None):
    """Print ``result`` as indented JSON and, if ``output`` is set, write it there too."""
    text = json.dumps(result, indent=1)
    print(text)
    if output:
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        with open(output, "w") as f:
            f.write(text + "\n")
