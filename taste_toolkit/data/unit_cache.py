"""Target units computed once per data set and cached on disk.

:func:`prepare_units` reads SpeechBrain-style CSV manifests (``ID, duration,
wav, spk_id, wrd``; ``wav`` an absolute path), fits the unit extractor on one
split if it needs fitting, and writes the units of every split to
``cache_dir``:

* ``extractor-<fit_key>.safetensors``: fitted state of the extractor, with its
  registry name and options in the metadata; ``extractor.json`` points at the
  last one written (see :func:`load_fitted_extractor`).
* ``units-<split>-<key>.safetensors``: ``units`` (all utterances concatenated,
  int16 or int32), ``offsets`` (int64, N + 1) and, in the metadata, the JSON
  list of IDs and a SHA-256 of the tensors.

Cache keys
----------
``fit_key`` hashes the plugin name, its options, the content of the fit
manifest and the size/mtime of its audio files, and ``max_fit_utterances``.
The key of a split hashes the plugin name, its options, the SHA-256 of the
fitted state and the split's manifest (content + audio size/mtime). Unchanged
inputs reuse the files; any change recomputes. A model file named in the options
(``s3``'s ``model_path``) enters every key by size and mtime. Files are written to a
temporary name and renamed (atomic); a file that fails to load or whose
checksum does not match is rebuilt with a warning.
"""

import hashlib
import json
import logging
import os
import tempfile

import torch

from taste_toolkit.audio import load_audio
from taste_toolkit.data.manifest import read_manifest
from taste_toolkit.errors import ConfigError, DataPreparationError, InputError

logger = logging.getLogger(__name__)

FORMAT_VERSION = "1"


# --------------------------------------------------------------------------
# Manifests and audio
# --------------------------------------------------------------------------


def _manifest_digest(path, rows):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        digest.update(f.read())
    # The audio may change behind an unchanged CSV: include size and mtime.
    for row in rows:
        try:
            stat = os.stat(row["wav"])
            digest.update(f"{row['wav']}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{row['wav']}|missing\n".encode())
    return digest.hexdigest()


def _key(*parts):
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------
# Extractor identity and state
# --------------------------------------------------------------------------


def _identity(extractor):
    """``(registry name, options)`` of an extractor, as plain data."""
    name = getattr(extractor, "registry_name", None)
    if name is None:
        raise ConfigError(
            f"{type(extractor).__name__} is not a registered units plugin; register it with "
            "@register('units', name) so its cache can be identified."
        )
    options = getattr(extractor, "options", None)
    if options is None:
        from taste_toolkit.registry import plugin_options

        options = {k: getattr(extractor, k, None) for k in plugin_options(type(extractor))}
    options = dict(options)
    # A model file named in the options (s3's model_path) is part of the identity.
    files = {
        k: f"{os.path.getsize(v)}|{os.stat(v).st_mtime_ns}"
        for k, v in options.items()
        if isinstance(v, str) and v and os.path.isfile(v)
    }
    return name, options, files


def _tensors_digest(tensors):
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _state(extractor):
    return {k: v.detach().cpu().contiguous() for k, v in extractor.state_dict().items()}


def extractor_fingerprint(extractor):
    """Short hash of what gives a fitted extractor's units their meaning.

    Hashes the registry name, the options (a model file named in them by its
    size, not its path or mtime, so a copied model keeps its fingerprint) and
    the SHA-256 of the fitted state. Models trained on units (vocoders) record
    it and refuse other units.

    Returns
    -------
    str
        16 hex digits.
    """
    name, options, _ = _identity(extractor)
    options = {
        k: (f"file|{os.path.getsize(v)}" if isinstance(v, str) and v and os.path.isfile(v) else v)
        for k, v in options.items()
    }
    return _key(FORMAT_VERSION, name, options, _tensors_digest(_state(extractor)))


def _atomic_save(tensors, path, metadata):
    from safetensors.torch import save_file

    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".safetensors")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _load_checked(path):
    """``(tensors, metadata)`` of a safetensors file whose checksum matches."""
    from safetensors import safe_open

    tensors = {}
    with safe_open(path, framework="pt") as f:
        metadata = dict(f.metadata() or {})
        for name in f.keys():
            tensors[name] = f.get_tensor(name)
    if metadata.get("sha256") != _tensors_digest(tensors):
        raise ValueError("checksum mismatch")
    return tensors, metadata


def _write_pointer(cache_dir, state_path, name, options):
    pointer = os.path.join(cache_dir, "extractor.json")
    tmp = pointer + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"state": os.path.basename(state_path), "name": name, "options": options}, f)
    os.replace(tmp, pointer)


def load_fitted_extractor(path):
    """Rebuild a fitted extractor from a cache dir, a state file or a units file.

    Arguments
    ---------
    path : str
        ``cache_dir`` (uses ``extractor.json``, the last extractor prepared
        there), an ``extractor-*.safetensors`` file, or a ``units-*.safetensors``
        file (uses the extractor it was made with).

    Returns
    -------
    UnitExtractor
        Built with the registry from the stored name and options, state loaded.
    """
    from taste_toolkit.registry import build

    if os.path.isdir(path):
        pointer = os.path.join(path, "extractor.json")
        if not os.path.isfile(pointer):
            raise DataPreparationError(f"No prepared units in {path!r}; run prepare_units first.")
        with open(pointer, encoding="utf-8") as f:
            path = os.path.join(path, json.load(f)["state"])
    elif os.path.basename(path).startswith("units-"):
        _, metadata = _load_checked(path)
        path = os.path.join(os.path.dirname(path), metadata["extractor_state"])
    try:
        tensors, metadata = _load_checked(path)
    except Exception as exc:
        raise DataPreparationError(
            f"Extractor state {path!r} is missing or corrupt ({exc}); run prepare_units again."
        ) from exc
    extractor = build("units", metadata["name"], json.loads(metadata["options"]))
    extractor.load_state_dict(tensors)
    return extractor


# --------------------------------------------------------------------------
# Units files
# --------------------------------------------------------------------------


def load_units(path):
    """``{ID: LongTensor (S,)}`` from a units file written by :func:`prepare_units`.

    Raises
    ------
    DataPreparationError
        The file is missing, truncated or fails its checksum.
    """
    try:
        tensors, metadata = _load_checked(path)
        ids = json.loads(metadata["ids"])
        offsets = tensors["offsets"].tolist()
        if len(offsets) != len(ids) + 1 or offsets[-1] != tensors["units"].numel():
            raise ValueError("offsets do not match the IDs")
    except Exception as exc:
        raise DataPreparationError(
            f"Units file {path!r} is missing or corrupt ({exc}); run prepare_units again."
        ) from exc
    units = tensors["units"].long()
    return {utt: units[offsets[i] : offsets[i + 1]].clone() for i, utt in enumerate(ids)}


def _is_valid(path, kind):
    if not os.path.isfile(path):
        return False
    try:
        if kind == "units":
            load_units(path)
        else:
            _load_checked(path)
        return True
    except Exception as exc:
        logger.warning("Cached %s file %s is corrupt (%s); rebuilding it.", kind, path, exc)
        return False


def _batches(rows, batch_size):
    """Rows sorted by duration (less padding), cut in batches."""

    def duration(row):
        try:
            return float(row.get("duration") or 0.0)
        except ValueError:
            return 0.0

    ordered = sorted(rows, key=duration)
    return [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]


def _extract_split(extractor, rows, batch_size, desc):
    from tqdm import tqdm

    results = {}
    device = next(iter(extractor.buffers()), torch.zeros(0)).device
    for batch in tqdm(_batches(rows, batch_size), desc=desc, unit="batch"):
        wavs = [load_audio(row["wav"], extractor.sample_rate) for row in batch]
        lengths = torch.tensor([w.numel() for w in wavs], dtype=torch.long)
        padded = torch.zeros(len(wavs), int(lengths.max()))
        for i, w in enumerate(wavs):
            padded[i, : w.numel()] = w
        try:
            units, unit_lengths = extractor(padded.to(device), lengths.to(device))
        except InputError as exc:
            ids = ", ".join(row["ID"] for row in batch)
            raise InputError(f"Unit extraction failed for a batch with IDs [{ids}]: {exc}") from exc
        for i, row in enumerate(batch):
            results[row["ID"]] = units[i, : int(unit_lengths[i])].cpu()
    # Keep manifest order in the file.
    return [(row["ID"], results[row["ID"]]) for row in rows]


def prepare_units(
    extractor, manifests, cache_dir, fit_split="train", batch_size=16, max_fit_utterances=None
):
    """Fit (if needed) and run ``extractor`` on every split, caching the results.

    Arguments
    ---------
    extractor : UnitExtractor
        A registered units plugin (its ``options`` are part of the cache key).
        When fitted here or reloaded from the cache, its state is updated in place.
    manifests : dict
        ``{split: csv path}``.
    cache_dir : str
        Output folder (created).
    fit_split : str
        Split used to fit extractors with ``needs_fit``.
    batch_size : int
        Utterances per extraction batch.
    max_fit_utterances : int, optional
        Fit on at most this many utterances (a seeded random subset).

    Returns
    -------
    dict
        ``{split: path of the units file}`` (read it with :func:`load_units`).
    """
    name, options, files = _identity(extractor)
    os.makedirs(cache_dir, exist_ok=True)
    rows = {split: read_manifest(path) for split, path in manifests.items()}
    digests = {split: _manifest_digest(manifests[split], rows[split]) for split in manifests}

    if extractor.needs_fit:
        if fit_split not in manifests:
            raise ConfigError(
                f"The {name} unit extractor must be fitted on split {fit_split!r}, which is not "
                f"among the manifests {sorted(manifests)}."
            )
        fit_key = _key(FORMAT_VERSION, name, options, files, digests[fit_split], max_fit_utterances)
    else:
        fit_key = _key(FORMAT_VERSION, name, options, files)
    state_path = os.path.join(cache_dir, f"extractor-{fit_key}.safetensors")
    if _is_valid(state_path, "extractor"):
        tensors, _ = _load_checked(state_path)
        extractor.load_state_dict(tensors)
        logger.info("Reusing fitted unit extractor %s", state_path)
    else:
        if extractor.needs_fit:
            fit_rows = list(rows[fit_split])
            if max_fit_utterances is not None and len(fit_rows) > max_fit_utterances:
                generator = torch.Generator().manual_seed(0)
                pick = torch.randperm(len(fit_rows), generator=generator)[:max_fit_utterances]
                fit_rows = [fit_rows[i] for i in sorted(pick.tolist())]
            logger.info("Fitting %s units on %d utterances of %s", name, len(fit_rows), fit_split)
            extractor.fit(load_audio(row["wav"], extractor.sample_rate) for row in fit_rows)
        state = _state(extractor)
        metadata = {
            "name": name,
            "options": json.dumps(options, sort_keys=True),
            "sha256": _tensors_digest(state),
        }
        _atomic_save(state, state_path, metadata)
    _write_pointer(cache_dir, state_path, name, options)
    state_digest = _tensors_digest(_state(extractor))

    outputs = {}
    for split in manifests:
        key = _key(FORMAT_VERSION, name, options, files, state_digest, digests[split])
        path = os.path.join(cache_dir, f"units-{split}-{key}.safetensors")
        outputs[split] = path
        if _is_valid(path, "units"):
            logger.info("Reusing cached units %s", path)
            continue
        pairs = _extract_split(extractor, rows[split], batch_size, f"units {split}")
        dtype = torch.int16 if extractor.num_units <= 32767 else torch.int32
        lengths = torch.tensor([u.numel() for _, u in pairs], dtype=torch.long)
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
        units = torch.cat([u for _, u in pairs]).to(dtype) if pairs else torch.zeros(0, dtype=dtype)
        tensors = {"units": units.contiguous(), "offsets": offsets}
        metadata = {
            "ids": json.dumps([utt for utt, _ in pairs]),
            "sha256": _tensors_digest(tensors),
            "extractor_state": os.path.basename(state_path),
            "name": name,
            "frame_rate": str(extractor.frame_rate),
            "num_units": str(extractor.num_units),
        }
        _atomic_save(tensors, path, metadata)
    return outputs
