"""Report of an evaluation run: summary table (paper layout), JSON, wide CSV and PNG plots.

Files written in the output folder:

* ``summary.md``: one row per system, columns in the order of the YAML's
  metrics (the default YAML follows the paper's reconstruction table: Hz, bps,
  WER, DNSMOS, duration consistency, speaker similarity, then the toolkit's
  extra columns); ``utts`` is the number of utterances with an output and
  ``missing`` those without (never averaged in); skipped metrics and their
  reasons, rows a metric could not score, and unmatched IDs follow the table.
* ``summary.json``: the same numbers (NaN -> null) plus every reason, and
  ``paired_bootstrap``: ``{metric: {column: {system: result}}}``, each system
  minus ``reference_system`` on the utterances both scored, with its CI
  (:func:`taste_toolkit.evaluation.bootstrap.paired_bootstrap`); the table of
  these differences closes ``summary.md``.
* ``per_utterance.csv``: one row per (system, utterance), ``<label>.<field>`` columns.
* ``plots/durations.png``: per-word durations, source vs reconstruction, per system;
  ``plots/f0_<utt>.png``: F0 contours of one utterance; ``plots/attention_<system>.png``.
"""

import csv
import json
import math
import os

import numpy as np

from taste_toolkit.audio import read_audio
from taste_toolkit.evaluation.harness import read_rows


def _plain(obj):
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _fmt(value, digits=3):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if isinstance(value, str):
        return value
    return f"{value:.{digits}f}"


def summarize(ev):
    """``{system: {"utts", "missing", "<label>": {column: value}, ...}}`` plus row errors."""
    systems = [s["name"] for s in ev.config["systems"]]
    out = {s: {"utterances": len(ev.ids) - len(ev.missing[s]), "missing": len(ev.missing[s])} for s in systems}
    errors = {}
    ids = set(ev.ids)
    for label, metric in ev.metrics.items():
        rows = [r for r in read_rows(os.path.join(ev.out, "scores", f"{label}.csv")) if r["id"] in ids]
        for s in systems:
            mine = [r for r in rows if r["system"] == s]
            good = [r for r in mine if not r.get("error")]
            bad = [r for r in mine if r.get("error")]
            if bad:
                errors.setdefault(label, {})[s] = {r["id"]: r["error"] for r in bad}
            out[s][label] = metric.summarize(good) if good else {k: float("nan") for k in metric.columns}
            out[s][label]["scored"] = len(good)
    return out, errors


def paired_comparisons(ev):
    """Every system minus the reference system, per metric column, with paired bootstrap CIs.

    Returns
    -------
    dict
        ``{label: {column: {system: paired_bootstrap result}}}`` over the
        utterances both systems scored (finite value, positive weight). Columns
        of metrics without per-utterance values (``paired_values``) are absent.
    """
    from taste_toolkit.evaluation.bootstrap import paired_bootstrap

    reference, options = ev.config["reference_system"], ev.config["bootstrap"]
    ids = set(ev.ids)
    out = {}
    for label, metric in ev.metrics.items():
        if not hasattr(metric, "paired_values"):
            continue
        values = {}  # system -> column -> id -> (value, weight)
        for r in read_rows(os.path.join(ev.out, "scores", f"{label}.csv")):
            if r["id"] not in ids or r.get("error"):
                continue
            for column, (v, w) in metric.paired_values(r).items():
                if math.isfinite(v) and math.isfinite(w) and w > 0:
                    values.setdefault(r["system"], {}).setdefault(column, {})[r["id"]] = (v, w)
        ref = values.get(reference, {})
        for column, ref_values in ref.items():
            for spec in ev.config["systems"]:
                name = spec["name"]
                mine = values.get(name, {}).get(column, {})
                common = [i for i in ev.ids if i in mine and i in ref_values]
                if name == reference or not common:
                    continue
                result = paired_bootstrap([mine[i][0] for i in common], [ref_values[i][0] for i in common],
                                          weights=[ref_values[i][1] for i in common], **options)
                out.setdefault(label, {}).setdefault(column, {})[name] = result
    return out


def paired_markdown(ev, paired):
    """The paired-bootstrap table (system minus reference) as Markdown lines."""
    from taste_toolkit.evaluation.bootstrap import format_ci

    if not paired:
        return []
    opts = ev.config["bootstrap"]
    lines = ["", f"Paired bootstrap vs `{ev.config['reference_system']}` (system minus reference, "
             f"{opts['confidence']:.0%} CI, {opts['num_resamples']} resamples of the utterances both scored, "
             f"seed {opts['seed']}; `P(<=0)` = share of resampled differences <= 0):", "",
             "| metric | column | system | difference [CI] | P(<=0) | utts |", "|---|---|---|---|---|---|"]
    for label, columns in paired.items():
        metric = ev.metrics[label]
        for column, per_system in columns.items():
            digits = metric.precision.get(column, 3)
            for name, r in per_system.items():
                lines.append(f"| {label} | {metric.columns.get(column, column)} | {name} | "
                             f"{format_ci(r, digits)} | {r['p_le_zero']:.3f} | {r['n']} |")
    return lines


def markdown(ev, summary, errors, wall_seconds, paired=None):
    """The summary table and its notes as Markdown text."""
    header, keys = ["System", "utts", "missing"], []
    for label, metric in ev.metrics.items():
        for key, title in metric.columns.items():
            header.append(title if label == getattr(metric, "registry_name", label) else f"{title} [{label}]")
            keys.append((label, key, metric.precision.get(key, 3)))
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for s, res in summary.items():
        cells = [s, str(res["utterances"]), str(res["missing"])]
        cells += [_fmt(res.get(label, {}).get(key), d) for label, key, d in keys]
        lines.append("| " + " | ".join(cells) + " |")
    notes = ["", f"{len(ev.ids)} utterances; decoding {ev.config['decoding']}; outputs resampled to the source "
             f"rate{' and RMS-matched to the source' if ev.config['match_rms'] else ''}. `—` = not applicable or "
             "nothing scored. Metrics:"]
    for label, metric in ev.metrics.items():
        notes.append(f"- `{label}`: {metric.describe()}")
    if ev.skipped_metrics:
        notes += ["", "Skipped metrics (model or package not available):"]
        notes += [f"- `{label}`: {reason}" for label, reason in ev.skipped_metrics.items()]
    if ev.skipped_systems:
        notes += ["", "Skipped systems (could not be built here):"]
        notes += [f"- `{name}`: {reason}" for name, reason in ev.skipped_systems.items()]
    missing = {s: m for s, m in ev.missing.items() if m}
    if missing:
        notes += ["", "Missing outputs (not in any average):"]
        for s, m in missing.items():
            first = next(iter(m.items()))
            notes.append(f"- `{s}`: {len(m)} utterance(s), e.g. {first[0]}: {first[1]}")
    if errors:
        notes += ["", "Utterances a metric could not score (excluded from its columns):"]
        for label, per_sys in errors.items():
            for s, m in per_sys.items():
                first = next(iter(m.items()))
                notes.append(f"- `{label}` / `{s}`: {len(m)}, e.g. {first[0]}: {first[1]}")
    for s, extra in ev.unmatched.items():
        if extra:
            notes.append(f"- `{s}`: {len(extra)} output file(s) whose IDs are not in the evaluation set: "
                         f"{', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}")
    notes += paired_markdown(ev, paired or {})
    notes += ["", f"Wall time of this run: {wall_seconds:.0f} s (reruns reuse cached outputs and scores)."]
    return "\n".join(lines + notes) + "\n"


def write_wide_csv(ev, path):
    """``per_utterance.csv``: one row per (system, id) with every metric's fields."""
    table, columns = {}, ["system", "id"]
    for label, metric in ev.metrics.items():
        columns += [f"{label}.{f}" for f in ("error", *metric.fields)]
        for r in read_rows(os.path.join(ev.out, "scores", f"{label}.csv")):
            row = table.setdefault((r["system"], r["id"]), {"system": r["system"], "id": r["id"]})
            row.update({f"{label}.{f}": r.get(f, "") for f in ("error", *metric.fields)})
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        order = {s["name"]: k for k, s in enumerate(ev.config["systems"])}
        for key in sorted(table, key=lambda k: (order.get(k[0], 99), k[1])):
            writer.writerow(table[key])


# ------------------------------------------------------------------ plots


def plot_durations(ev, path):
    """Per-word duration scatter (source vs reconstruction), one panel per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [label for label, m in ev.metrics.items() if "word_durations" in m.fields]
    if not labels:
        return None
    rows = read_rows(os.path.join(ev.out, "scores", f"{labels[0]}.csv"))
    systems = [s["name"] for s in ev.config["systems"]]
    tol = getattr(ev.metrics[labels[0]], "tolerance", 0.025)
    fig, axes = plt.subplots(1, len(systems), figsize=(3.6 * len(systems), 3.6), squeeze=False)
    for ax, s in zip(axes[0], systems):
        pairs = [p for r in rows if r["system"] == s and not r.get("error") and r["id"] in ev.ids
                 for p in json.loads(r["word_durations"] or "[]")]
        if pairs:
            x, y = np.array(pairs, dtype=float).T
            top = float(max(x.max(), y.max(), 0.1)) * 1.05
            ax.fill_between([0, top], [-tol, top - tol], [tol, top + tol], color="k", alpha=0.12, label="±25 ms")
            ax.plot([0, top], [0, top], "k-", lw=0.7)
            ax.scatter(x, y, s=7, alpha=0.6)
            ax.set_xlim(0, top)
            ax.set_ylim(0, top)
            ax.legend(loc="upper left", fontsize=7)
        ax.set_title(f"{s} ({len(pairs)} words)", fontsize=9)
        ax.set_xlabel("source word (s)")
    axes[0][0].set_ylabel("reconstructed word (s)")
    fig.suptitle(f"per-word durations [{labels[0]}]", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_f0(ev, path):
    """F0 contours (pYIN) of the plot utterance: source and every system output."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from taste_toolkit.metrics.signal import HOP_SECONDS, pitch_track

    utt = ev.utts[ev.ids.index(ev.plot_utt)]
    ref, sr = read_audio(utt.path)
    fig, ax = plt.subplots(figsize=(9, 3.6))
    for spec in ev.config["systems"]:
        s = spec["name"]
        sample = ev.sample(s, utt, ref, sr) if utt.id not in ev.missing[s] else None
        if sample is None:
            continue
        f0, _ = pitch_track(sample.hyp, sr)
        t = np.arange(len(f0)) * HOP_SECONDS
        style = {"lw": 2.2, "color": "k"} if spec.get("type") == "original" else {"lw": 1.0}
        ax.plot(t, f0, label=s, **style)
    for w, start, _ in utt.words or []:
        ax.axvline(start, color="0.7", lw=0.5)
        ax.text(start, ax.get_ylim()[1], w.lower(), fontsize=6, rotation=90, va="top")
    ax.set(xlabel="time (s)", ylabel="F0 (Hz)", title=f"F0 contours — {utt.id}: {utt.text.lower()}")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_attentions(ev, folder):
    """Aggregator attention map of the plot utterance for every system that saved one."""
    from taste_toolkit.training.plots import plot_attention

    paths = []
    for spec in ev.config["systems"]:
        npz = os.path.join(ev.out, "outputs", spec["name"], f"{ev.plot_utt}.attention.npz")
        if os.path.isfile(npz):
            import torch

            data = np.load(npz)
            path = os.path.join(folder, f"attention_{spec['name']}.png")
            plot_attention(torch.from_numpy(data["attention"]), path, list(data["labels"]),
                           float(data["frame_rate"]), title=f"({spec['name']}, {ev.plot_utt})")
            paths.append(path)
    return paths


def write_report(ev, wall_seconds=0.0):
    """Write every report file; returns the summary as JSON-able data."""
    summary, errors = summarize(ev)
    paired = paired_comparisons(ev)
    with open(os.path.join(ev.out, "summary.md"), "w", encoding="utf-8") as f:
        f.write(markdown(ev, summary, errors, wall_seconds, paired))
    write_wide_csv(ev, os.path.join(ev.out, "per_utterance.csv"))
    plots = os.path.join(ev.out, "plots")
    os.makedirs(plots, exist_ok=True)
    made = [plot_durations(ev, os.path.join(plots, "durations.png")),
            plot_f0(ev, os.path.join(plots, f"f0_{ev.plot_utt}.png")), *plot_attentions(ev, plots)]
    result = _plain({
        "utterances": len(ev.ids), "systems": summary, "skipped_metrics": ev.skipped_metrics,
        "skipped_systems": ev.skipped_systems,
        "missing": ev.missing, "metric_errors": errors, "unmatched_ids": ev.unmatched,
        "system_info": ev.system_info, "plots": [p for p in made if p], "wall_seconds": wall_seconds,
        "reference_system": ev.config["reference_system"], "bootstrap": ev.config["bootstrap"],
        "paired_bootstrap": paired,
    })
    with open(os.path.join(ev.out, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    return result

