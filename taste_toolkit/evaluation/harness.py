"""The evaluation run: reconstruct with each system, then score with each metric, one model at a time.

Configuration (plain YAML, no tags; see ``hparams/evaluate/reconstruction.yaml``)::

    output_folder: results/eval/reconstruction
    data: {metadata: results/synthetic_corpus/test, limit: 20}
    decoding: {top_k: 0, temperature: 1.0, seed: 0, max_len_ratio: 40.0}
    match_rms: true          # scale each output to the source's RMS (vocoders are uncalibrated)
    plot_utterance: null     # ID for the F0 / attention plots (default: the first)
    systems:
      - {name: original, type: original}
      - {name: taste, type: tokenizer, options: {path: results/taste/1986/tokenizer}}
    metrics:
      - {name: wer}                                        # registered metric plugin
      - {name: wer, label: wer_large, options: {model: openai/whisper-large-v3}}
    language: en             # references' language: WER or CER, normalizer, ASR language
    reference_system: text_only   # paired bootstrap of every other system vs this one
    bootstrap: {num_resamples: 10000, seed: 0, confidence: 0.95}

Run order (VERSA's "one metric at a time", so memory stays bounded): every
system in turn is loaded, reconstructs every utterance into
``<out>/outputs/<system>/<id>.wav`` (+ ``<id>.json`` extras) and is freed; then
every metric in turn is loaded, scores every (system, utterance) pair into
``<out>/scores/<label>.csv`` and is freed. A rerun skips cached outputs and
scored rows: a row remembers the output it scored (``output_id``, a hash), so
a regenerated output is scored again. A system or metric whose options changed
is refused (delete its folder / CSV, or use another ``output_folder``).

Bad input: outputs at another sample rate are resampled to the source's rate;
a system that fails on an utterance (or returns no audio) makes it *missing*
for that system, counted in the table and never averaged in; a metric that
needs the transcript does not score utterances with an empty one (counted);
a ``directory`` system's files whose IDs are not in the set are listed.

Paired bootstrap: for every metric column that is a (weighted) mean of
per-utterance values (WER, duration consistency, speaker similarity, ...), the
report gives each system's difference from ``reference_system`` with its
confidence interval, over the utterances both systems scored
(:mod:`taste_toolkit.evaluation.bootstrap`). Default reference: the first
system that is not ``type: original``.
"""

import csv
import hashlib
import inspect
import json
import logging
import os
import time

import numpy as np

from taste_toolkit.audio import read_audio, resample
from taste_toolkit.errors import ConfigError, InputError, TasteError
from taste_toolkit.evaluation.bootstrap import bootstrap_options
from taste_toolkit.evaluation.data import load_eval_set
from taste_toolkit.evaluation.systems import DEFAULT_DECODING, build_system

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------ config


def load_config(path, overrides=None):
    """Read the YAML (``yaml.safe_load``), apply ``{key: value}`` overrides, validate."""
    import yaml

    if not os.path.isfile(path):
        raise ConfigError(f"Evaluation config {path!r} not found.")
    with open(path, encoding="utf-8") as f:
        config = yaml.safe_load(f) or {}
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key == "limit":
            config.setdefault("data", {})["limit"] = int(value)
        elif key in ("systems", "metrics"):  # keep only the named entries
            wanted = list(value)
            entries = {e.get("label", e.get("name")): e for e in config.get(key, [])}
            unknown = [w for w in wanted if w not in entries]
            if unknown:
                raise ConfigError(f"--{key} names {unknown}, not in {path} (has {sorted(entries)}).")
            config[key] = [entries[w] for w in wanted]
            if key == "systems" and config.get("reference_system") not in (None, *wanted):
                logger.warning("reference_system %s is not among --systems %s; using the default reference.",
                               config["reference_system"], wanted)
                config.pop("reference_system")
        else:
            config[key] = value
    return validate_config(config)


def validate_config(config):
    """Check names and types; returns the config with defaults filled in."""
    if not isinstance(config, dict):
        raise ConfigError("The evaluation config must be a mapping.")
    for key in ("output_folder", "data", "systems", "metrics"):
        if not config.get(key):
            raise ConfigError(f"The evaluation config needs {key!r}.")
    config["decoding"] = {**DEFAULT_DECODING, **(config.get("decoding") or {})}
    config.setdefault("match_rms", True)
    # Language of the references: the ASR metric's language, normalizer and WER/CER.
    from taste_toolkit.languages import get_language

    config["language"] = get_language(config.get("language") or "en").code
    names = [s.get("name") for s in config["systems"]]
    if any(not isinstance(n, str) or not n or "/" in n for n in names) or len(set(names)) != len(names):
        raise ConfigError(f"System names must be unique non-empty strings without '/': {names}.")
    reference = config.get("reference_system")
    if reference is None:
        reference = next((s["name"] for s in config["systems"] if s.get("type") != "original"), names[0])
    if reference not in names:
        raise ConfigError(f"reference_system {reference!r} is not one of the systems {names}.")
    config["reference_system"] = reference
    config["bootstrap"] = bootstrap_options(config.get("bootstrap"))
    labels = [m.get("label", m.get("name")) for m in config["metrics"]]
    if any(not isinstance(n, str) or not n for n in labels) or len(set(labels)) != len(labels):
        raise ConfigError(f"Metric labels must be unique (give repeated metrics a 'label'): {labels}.")
    return config


# ------------------------------------------------------------------ helpers


def match_rms(ref, hyp):
    """Scale ``hyp`` to the RMS of ``ref`` (vocoder levels are not calibrated)."""
    r, h = float(np.sqrt(np.mean(ref.astype(np.float64) ** 2))), float(np.sqrt(np.mean(hyp.astype(np.float64) ** 2)))
    return (hyp * (r / h)).astype(np.float32) if h > 1e-8 else hyp


def _write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, default=str)
    os.replace(tmp, path)  # atomic: an interruption never leaves half a file


def _check_spec(path, spec, what, remedy):
    """Store ``spec`` at ``path`` or refuse if a different one is there."""
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
        if old.get("spec") != json.loads(json.dumps(spec)):
            raise InputError(f"{what} was evaluated with other options ({old.get('spec')} vs {spec}); {remedy}")
    else:
        _write_json(path, {"spec": spec})


def model_signature(spec):
    """SHA-256 over the ``*.safetensors`` files of the folders a system's options name.

    Part of the system's cached spec, so outputs made by an earlier model at the
    same path (retrained, re-exported) are never reused: the rerun is refused.
    """
    digest, found = hashlib.sha256(), False
    for key, value in sorted((spec.get("options") or {}).items()):
        if not isinstance(value, str) or not os.path.isdir(value):
            continue
        for name in sorted(os.listdir(value)):
            if name.endswith(".safetensors"):
                found = True
                digest.update(f"{key}/{name}".encode())
                with open(os.path.join(value, name), "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        digest.update(block)
    return digest.hexdigest()[:16] if found else None


def read_rows(csv_path):
    """Rows of a scores CSV; a last line cut by an interruption is dropped first."""
    if not os.path.isfile(csv_path):
        return []
    with open(csv_path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)
    with open(csv_path, newline="", encoding="utf-8") as f:
        return [r for r in csv.DictReader(f) if None not in r and None not in r.values()]


# ------------------------------------------------------------------ the run


class Evaluation:
    """One configured evaluation (see the module docstring).

    Arguments
    ---------
    config : dict
        Validated config (:func:`load_config` / :func:`validate_config`).
    progress : bool
        Show tqdm progress bars.
    """

    def __init__(self, config, progress=True):
        self.config = validate_config(dict(config))
        self.out = self.config["output_folder"]
        self.progress = progress
        data = dict(self.config["data"])
        self.utts = load_eval_set(data.get("metadata"), data.get("manifest"), data.get("limit", 0), data.get("ids"))
        self.ids = [u.id for u in self.utts]
        self.missing = {s["name"]: {} for s in self.config["systems"]}
        self.unmatched = {}
        self.skipped_metrics = {}
        self.skipped_systems = {}
        self.system_info = {}
        plot_utt = self.config.get("plot_utterance") or self.ids[0]
        if plot_utt not in self.ids:
            raise ConfigError(f"plot_utterance {plot_utt!r} is not in the evaluation set.")
        self.plot_utt = plot_utt

    # ---------------------------------------------------------- stage 1
    def _out_dir(self, name):
        return os.path.join(self.out, "outputs", name)

    def _cached(self, name, utt_id):
        meta = os.path.join(self._out_dir(name), f"{utt_id}.json")
        if os.path.isfile(meta) and os.path.isfile(meta[:-5] + ".wav"):
            with open(meta, encoding="utf-8") as f:
                return json.load(f)
        return None

    def reconstruct_all(self):
        """Stage 1: every system, every utterance (cached outputs are kept)."""
        import soundfile as sf
        from tqdm import tqdm

        for spec in self.config["systems"]:
            name = spec["name"]
            folder = self._out_dir(name)
            os.makedirs(folder, exist_ok=True)
            signature = model_signature(spec)
            checked = {**spec, "model_signature": signature} if signature else spec
            _check_spec(os.path.join(folder, "system.json"), checked, f"System {name!r}",
                        f"delete {folder} (and {os.path.join(self.out, 'scores')}) or use another output_folder.")
            todo = [u for u in self.utts if self._cached(name, u.id) is None]
            if spec.get("type") == "original":
                self.system_info[name] = {"type": "original"}
                continue
            info_path = os.path.join(folder, "info.json")
            needs_plot = not os.path.isfile(os.path.join(folder, f"{self.plot_utt}.attention.npz")) \
                and not os.path.isfile(os.path.join(folder, "no_attention"))
            if not todo and os.path.isfile(info_path) and not needs_plot:
                with open(info_path, encoding="utf-8") as f:
                    self.system_info[name] = json.load(f)
                continue
            try:
                system = build_system(spec, self.config["decoding"])
            except TasteError as exc:  # model not available here: reported, the other systems still run
                self.skipped_systems[name] = str(exc)
                logger.warning("Skipping system %s: %s", name, exc)
                self.missing[name].update({u.id: "system not available" for u in todo})
                continue
            try:
                self.system_info[name] = {"type": spec["type"], **system.info()}
                _write_json(info_path, self.system_info[name])
                if hasattr(system, "unmatched_ids"):
                    self.unmatched[name] = system.unmatched_ids(self.ids)
                if needs_plot:
                    self._save_attention(system, folder)
                # Reference word times go to systems that take them (teacher forcing of
                # word-walking decoders); older third-party systems keep their signature.
                takes_words = "words" in inspect.signature(system.reconstruct).parameters
                bar = tqdm(todo, desc=f"reconstruct {name}", disable=not self.progress, dynamic_ncols=True)
                for utt in bar:
                    wav, sr = read_audio(utt.path)
                    start = time.time()
                    try:
                        word_times = {"words": utt.words} if takes_words else {}
                        out, out_sr, extras = system.reconstruct(wav, sr, utt.text, utt.id, **word_times)
                        out = np.asarray(out, dtype=np.float32).reshape(-1)
                        if out.size == 0 or not np.isfinite(out).all():
                            raise InputError("the system returned no audio" if out.size == 0 else "NaN/inf samples")
                    except TasteError as exc:
                        self.missing[name][utt.id] = str(exc)
                        logger.warning("%s failed on %s: %s", name, utt.id, exc)
                        continue
                    sf.write(os.path.join(folder, f"{utt.id}.wav"), out, int(out_sr), subtype="FLOAT")
                    extras = {**extras, "output_sample_rate": int(out_sr), "seconds": round(time.time() - start, 3),
                              "output_id": hashlib.sha1(out.tobytes()).hexdigest()[:16]}
                    _write_json(os.path.join(folder, f"{utt.id}.json"), extras)
            finally:
                system.close()
        for spec in self.config["systems"]:  # outputs missing from the cache (e.g. a directory system)
            if spec.get("type") != "original":
                for utt in self.utts:
                    if self._cached(spec["name"], utt.id) is None and utt.id not in self.missing[spec["name"]]:
                        self.missing[spec["name"]][utt.id] = "no output"

    def _save_attention(self, system, folder):
        """Attention map of the plot utterance, if the system has one (tokenizers)."""
        path = os.path.join(folder, f"{self.plot_utt}.attention.npz")
        result = None
        if hasattr(system, "alignment"):
            utt = self.utts[self.ids.index(self.plot_utt)]
            wav, sr = read_audio(utt.path)
            try:
                result = system.alignment(wav, sr, utt.text)
            except TasteError as exc:
                logger.warning("No attention map for %s: %s", folder, exc)
        if result is None:
            open(os.path.join(folder, "no_attention"), "w").close()
            return
        words, attention, frame_rate, labels = result
        np.savez(path, attention=attention, frame_rate=frame_rate, labels=np.array(labels), words=np.array(words))

    # ---------------------------------------------------------- stage 2
    def sample(self, name, utt, ref, sr):
        """The :class:`~taste_toolkit.metrics.base.Sample` of one system output (None if missing)."""
        from taste_toolkit.metrics.base import Sample

        if self.system_info.get(name, {}).get("type") == "original":
            return Sample(utt.id, name, ref, ref, sr, utt.text, utt.words, {"output_id": "source"})
        extras = self._cached(name, utt.id)
        if extras is None:
            return None
        hyp, hyp_sr = read_audio(os.path.join(self._out_dir(name), f"{utt.id}.wav"))
        hyp = resample(hyp, hyp_sr, sr)
        if self.config["match_rms"]:
            hyp = match_rms(ref, hyp)
        return Sample(utt.id, name, ref, hyp, sr, utt.text, utt.words, extras)

    def score_all(self):
        """Stage 2: every metric, every (system, utterance) not scored yet."""
        from tqdm import tqdm

        from taste_toolkit.registry import build

        os.makedirs(os.path.join(self.out, "scores"), exist_ok=True)
        self.metrics = {}
        for entry in self.config["metrics"]:
            label = entry.get("label", entry["name"])
            try:
                metric = build("metric", entry["name"], entry.get("options") or {}, language=self.config["language"])
            except TasteError as exc:
                self.skipped_metrics[label] = str(exc)
                continue
            reason = metric.unavailable()
            if reason:
                self.skipped_metrics[label] = reason
                logger.warning("Skipping metric %s: %s", label, reason)
                metric.close()
                continue
            csv_path = os.path.join(self.out, "scores", f"{label}.csv")
            spec = {k: entry.get(k) for k in ("name", "options")}
            if self.config["language"] != "en":  # English specs stay as before, so their scores are reused
                spec["language"] = self.config["language"]
            _check_spec(csv_path[:-4] + ".json", spec, f"Metric {label!r}",
                        f"delete {csv_path} or use another output_folder.")
            self.metrics[label] = metric
            fields = ["system", "id", "output_id", "error", *metric.fields]
            done = {(r["system"], r["id"]): r["output_id"] for r in read_rows(csv_path)}
            new_file = not os.path.isfile(csv_path) or os.path.getsize(csv_path) == 0
            try:
                with open(csv_path, "a", newline="", encoding="utf-8") as f:
                    writer = csv.DictWriter(f, fieldnames=fields)
                    if new_file:
                        writer.writeheader()
                    bar = tqdm(self.utts, desc=f"score {label}", disable=not self.progress, dynamic_ncols=True)
                    for utt in bar:
                        ref = None
                        for spec in self.config["systems"]:
                            name = spec["name"]
                            if utt.id in self.missing[name]:
                                continue
                            cached = self._cached(name, utt.id) or {}
                            out_id = "source" if spec.get("type") == "original" else cached.get("output_id")
                            if done.get((name, utt.id)) == out_id:
                                continue
                            if ref is None:
                                ref, sr = read_audio(utt.path)
                            row = self._score_one(metric, self.sample(name, utt, ref, sr))
                            writer.writerow({"system": name, "id": utt.id, "output_id": out_id, **row})
                            f.flush()
            finally:
                metric.close()

    @staticmethod
    def _score_one(metric, sample):
        if "reference_text" in metric.needs and not sample.text.strip():
            return {"error": "empty reference transcript"}
        try:
            values = metric.score(sample)
        except InputError as exc:  # bad sample: recorded on its row, the run goes on
            return {"error": str(exc)}
        return {k: values.get(k, float("nan")) for k in metric.fields}

    # ---------------------------------------------------------- all
    def run(self):
        """Both stages, then the summary, Markdown table and plots. Returns the summary dict."""
        from taste_toolkit.evaluation import report

        start = time.time()
        os.makedirs(self.out, exist_ok=True)
        _write_json(os.path.join(self.out, "config.json"), self.config)
        self.reconstruct_all()
        self.score_all()
        return report.write_report(self, wall_seconds=time.time() - start)
