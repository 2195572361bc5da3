"""``taste tokenize``: a manifest or a folder of audio + transcripts -> TASTE tokens as JSONL.

Output: one JSON object per line, ``{"id": ..., **TasteTokens.to_dict()}``, appended
and flushed after every batch. Read a line back with ``TasteTokens.from_dict``.

Resuming
--------
Rerunning the same command continues where it stopped: ids already in the output
are skipped. A run killed mid-write leaves a partial last line (no newline); it is
cut off before appending, so nothing is duplicated or lost. Every record carries
the model's fingerprint and an output made by another model is refused (one file,
one model). Items with bad input (unreadable audio, empty transcript, longer than
30 s, NaN samples, no transcript file: an :class:`~taste_toolkit.errors.InputError`)
are not fatal: they are logged, written to ``FILE.jsonl.errors`` as ``{"id", "error"}``
lines and retried on the next run (the errors file is rewritten by each run).

Any other exception (a ``RuntimeError`` in the model, a bug) is not an input
problem and is never recorded as a skipped item: the run stops with a traceback
and a non-zero exit, after the records of every batch finished before it are on
disk, so rerunning the same command resumes once the cause is fixed.

Several processes (torchrun)
----------------------------
With ``RANK``/``WORLD_SIZE`` in the environment, rank ``r`` takes ``items[r::world]``
and writes ``FILE.jsonl.rank{r}`` (errors: ``FILE.jsonl.rank{r}.errors``). Then::

    torchrun --nproc_per_node=4 -m taste_toolkit.cli tokenize --model DIR --manifest test.csv --output tok.jsonl
    taste tokenize --merge tok.jsonl --manifest test.csv

merges the shards (and any existing ``tok.jsonl``) into ``tok.jsonl`` in manifest
order, merges the error files, and deletes the shards. Without ``--manifest``/
``--folder`` the shards are interleaved round-robin, which is manifest order when
every item succeeded on its first attempt.
"""

import json
import logging
import os
import re
from collections import namedtuple

from taste_toolkit.commands import add_model_arguments, encoder_sample_rate, is_text_aligned, load_tokenizer, MAX_SECONDS
from taste_toolkit.data.manifest import read_manifest as read_csv_manifest
from taste_toolkit.errors import InputError, TasteError

logger = logging.getLogger(__name__)

#: One utterance to tokenize; ``text`` is None when no transcript was found.
Item = namedtuple("Item", "id wav text")

AUDIO_SUFFIXES = (".wav", ".flac")
MANIFEST_COLUMNS = ("ID", "wav", "wrd")


# ---------------------------------------------------------------- inputs


def read_manifest(path):
    """Items of a SpeechBrain CSV manifest with columns ``ID, wav, wrd`` (others ignored).

    Read with :func:`taste_toolkit.data.manifest.read_manifest` (its errors name
    ``--manifest``). Relative ``wav`` paths are taken relative to the manifest's
    folder.
    """
    source = f"--manifest {path!r}"
    rows = read_csv_manifest(path, columns=MANIFEST_COLUMNS, source=source,
                             missing_hint="Give the path of a SpeechBrain CSV with columns ID, wav and wrd.")
    base = os.path.dirname(os.path.abspath(path))
    items = []
    for row in rows:
        wav = row["wav"].strip()
        items.append(Item(row["ID"].strip(), os.path.join(base, wav) if wav else "", row["wrd"]))
    return _check_unique(items, source)  # IDs that differ only by surrounding spaces


def _check_unique(items, source):
    seen = set()
    for item in items:
        if item.id in seen:
            raise InputError(f"{source} has the id {item.id!r} twice; ids must be unique to resume and merge.")
        seen.add(item.id)
    return items


def _librispeech_transcripts(folder, names):
    """``{utterance id: text}`` from LibriSpeech ``*.trans.txt`` files in ``folder``."""
    out = {}
    for name in names:
        if name.endswith(".trans.txt"):
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                for line in f:
                    uid, _, text = line.strip().partition(" ")
                    if uid:
                        out[uid] = text
    return out


def scan_folder(root):
    """Items of every ``.wav``/``.flac`` under ``root`` (sorted), with their transcripts.

    A transcript is a sidecar ``<stem>.txt`` or ``<stem>.lab``, else the line of a
    LibriSpeech ``*.trans.txt`` in the same folder. Ids are the file stems, or the
    paths relative to ``root`` without suffix when two files share a stem.
    """
    if not os.path.isdir(root):
        raise InputError(f"--folder {root!r} is not a folder.")
    found = []
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        names = sorted(names)
        trans = _librispeech_transcripts(folder, names)
        for name in names:
            stem, suffix = os.path.splitext(name)
            if suffix.lower() not in AUDIO_SUFFIXES:
                continue
            text = trans.get(stem)
            for side in (".txt", ".lab"):
                side_path = os.path.join(folder, stem + side)
                if os.path.isfile(side_path):
                    with open(side_path, encoding="utf-8") as f:
                        text = f.read().strip()
                    break
            found.append((stem, os.path.join(folder, name), text))
    if not found:
        raise InputError(f"--folder {root!r} has no {'/'.join(AUDIO_SUFFIXES)} files.")
    stems = [s for s, _, _ in found]
    if len(set(stems)) < len(stems):  # same stem in two folders: make ids unambiguous
        return [Item(os.path.splitext(os.path.relpath(p, root))[0].replace(os.sep, "/"), p, t) for _, p, t in found]
    return [Item(s, p, t) for s, p, t in found]


def read_items(args):
    """Items from ``--manifest`` or ``--folder`` (None when neither is given)."""
    if args.manifest:
        return read_manifest(args.manifest)
    if args.folder:
        return scan_folder(args.folder)
    return None


# ---------------------------------------------------------------- the JSONL output


def read_records(path):
    """``[(id, fingerprint, line)]`` of a JSONL output; a partial last line is cut off.

    A process killed mid-write leaves a last line without its newline; the file is
    truncated to its last complete line (that record is redone). A complete line
    that is not a JSON record means the file is not ours and raises.
    """
    if not os.path.exists(path):
        return []
    with open(path, "rb+") as f:
        data = f.read()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            logger.warning("%s ends with a partial record (interrupted run); removing it before appending.", path)
            f.truncate(end)
            data = data[:end]
    records = []
    for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            records.append((str(record["id"]), str(record.get("fingerprint", "")), line))
        except (ValueError, KeyError, TypeError):
            raise InputError(
                f"{path} line {number} is not a tokens record ({line[:60]!r}); it is not a `taste tokenize` "
                "output. Choose another --output or remove the file."
            ) from None
    return records


def _check_fingerprints(records, fingerprint, path, model=None):
    """Refuse to mix tokens of two models in one output."""
    for rid, fp, _ in records:
        if fp != fingerprint:
            mine = f"--model {model!r} has fingerprint {fingerprint}" if model else f"other records have {fingerprint}"
            raise InputError(
                f"{path} holds tokens of another model (record {rid!r}: fingerprint {fp!r}; {mine}). Tokens of "
                "different models are not comparable: write to another --output, or delete the file to start over."
            )


def _distribution():
    """``(rank, world_size)`` from torchrun's environment (``(0, 1)`` without it)."""
    try:
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    except ValueError:
        raise InputError(f"RANK={os.environ.get('RANK')!r} / WORLD_SIZE={os.environ.get('WORLD_SIZE')!r} "
                         "must be integers (set by torchrun).") from None
    if world < 1 or not 0 <= rank < world:
        raise InputError(f"Need 0 <= RANK < WORLD_SIZE, got RANK={rank}, WORLD_SIZE={world}.")
    return rank, world


def shard_files(output):
    """``{rank: path}`` of the ``OUTPUT.rank{r}`` shards next to ``output``."""
    folder, base = os.path.split(os.path.abspath(output))
    pattern = re.compile(re.escape(base) + r"\.rank(\d+)$")
    if not os.path.isdir(folder):
        return {}
    return {int(m.group(1)): os.path.join(folder, n) for n in os.listdir(folder) if (m := pattern.match(n))}


def _write_atomic(path, lines):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)
    os.replace(tmp, path)


def _read_errors(path):
    out = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    record = json.loads(line)
                    out[str(record["id"])] = line.rstrip("\n")
                except (ValueError, KeyError, TypeError):
                    continue  # a partial line of a killed run: that item is retried anyway
    return out


def merge_shards(output, items=None):
    """Merge ``output.rank*`` (and an existing ``output``) into ``output``; returns a summary.

    Records are ordered like ``items`` when given (ids not in it go last), else
    round-robin over the shards. Duplicated ids keep their first record.
    """
    shards = shard_files(output)
    if not shards:
        raise InputError(f"No shards {output}.rank<N> to merge; run `taste tokenize` under torchrun first.")
    missing = sorted(set(range(max(shards) + 1)) - set(shards))
    if missing:
        raise InputError(f"Shards of rank(s) {missing} are missing next to {output}; rerun tokenize with the same "
                         "WORLD_SIZE so every rank writes its shard, then merge.")
    main = read_records(output)
    per_shard = [read_records(shards[r]) for r in sorted(shards)]
    everything = main + [rec for recs in per_shard for rec in recs]
    if everything:
        _check_fingerprints(everything, everything[0][1], output)
    # round-robin: shard r holds items[r::world] in order
    interleaved = [recs[i] for i in range(max(map(len, per_shard), default=0)) for recs in per_shard if i < len(recs)]
    merged, seen = [], set()
    for rid, _, line in main + interleaved:
        if rid not in seen:
            seen.add(rid)
            merged.append((rid, line))
    if items is not None:
        position = {item.id: i for i, item in enumerate(items)}
        merged.sort(key=lambda rec: position.get(rec[0], len(position)))  # stable: unknown ids keep their order
    _write_atomic(output, [line for _, line in merged])
    errors = _read_errors(output + ".errors")
    for r in sorted(shards):
        errors.update(_read_errors(shards[r] + ".errors"))
    errors = {k: v for k, v in errors.items() if k not in seen}
    _write_atomic(output + ".errors", list(errors.values()))
    for path in shards.values():  # their records are all in output now
        for p in (path, path + ".errors"):
            if os.path.exists(p):
                os.remove(p)
    summary = {"output": output, "records": len(merged), "shards": len(shards), "errors": len(errors)}
    if items is not None:
        summary["missing"] = sum(1 for item in items if item.id not in seen)
    return summary


# ---------------------------------------------------------------- tokenizing


def _encode(tokenizer, ready, embeddings):
    """Tokens of a batch, with each bad-input item failing alone.

    Parameters
    ----------
    tokenizer : TasteTokenizer or LmsptTokenizer
        The loaded tokenizer.
    ready : list of (Item, waveform)
        Items whose audio loaded.
    embeddings : bool
        Keep the quantized vectors.

    Returns
    -------
    list of (Item, TasteTokens or InputError)
        When the batch raises an :class:`InputError`, the items are redone one
        by one so only the culprit(s) get an error.

    Raises
    ------
    Exception
        Anything that is not an :class:`InputError` (e.g. a ``RuntimeError`` in
        the model) propagates: it is a bug, not a bad item.
    """
    if not ready:
        return []
    sr = encoder_sample_rate(tokenizer)
    try:
        tokens = tokenizer.encode([w for _, w in ready], sr, [i.text for i, _ in ready],
                                  return_embeddings=embeddings, batch_size=len(ready))
        return list(zip([i for i, _ in ready], tokens))
    except InputError as exc:
        if len(ready) == 1:
            return [(ready[0][0], exc)]
    out = []  # the batch had bad input: find the culprit(s) one by one
    for item, wav in ready:
        try:
            out.append((item, tokenizer.encode(wav, sr, item.text, return_embeddings=embeddings)))
        except InputError as exc:
            out.append((item, exc))
    return out


def _load(item, sample_rate, needs_text=True):
    """The item's waveform; raises InputError for a bad item (no transcript: only when ``needs_text``)."""
    from taste_toolkit.audio import load_audio

    if needs_text and item.text is None:
        raise InputError("no transcript: add <stem>.txt or <stem>.lab next to the audio, or a LibriSpeech "
                         "*.trans.txt in its folder")
    if needs_text and not item.text.strip():
        raise InputError("empty transcript: TASTE tokens are aligned to the words spoken")
    if not item.wav:
        raise InputError("empty wav path in the manifest")
    return load_audio(item.wav, target_sr=sample_rate, max_seconds=MAX_SECONDS)


def tokenize_items(tokenizer, items, output, errors_path, done, batch_size=16, embeddings=False, progress=True,
                   counts=None):
    """Tokenize ``items`` not in ``done`` and append their records to ``output``.

    Parameters
    ----------
    tokenizer : TasteTokenizer or LmsptTokenizer
        The loaded tokenizer.
    items : list of Item
        Utterances in output order.
    output, errors_path : str
        JSONL of the records (appended) and of the skipped items (rewritten).
    done : set of str
        Ids already in the output; they are skipped.
    batch_size : int
        Utterances per forward pass.
    embeddings : bool
        Also store the quantized vectors.
    progress : bool
        Show a tqdm bar.
    counts : dict, optional
        Updated in place with ``tokenized`` and ``errors`` after every batch, so a
        caller still knows them when an internal error stops the run.

    Returns
    -------
    tuple of int
        ``(tokenized, errors)``.

    Raises
    ------
    Exception
        Any error that is not an :class:`InputError` (a bug, a ``RuntimeError`` in
        the model) stops the run. The records of every finished batch and the
        errors so far are flushed to disk first, so a rerun resumes.
    """
    from tqdm import tqdm

    todo = [item for item in items if item.id not in done]
    sr = encoder_sample_rate(tokenizer)
    needs_text = is_text_aligned(tokenizer)  # frame-rate tokenizers (LM-SPT) read audio only
    tokenized = failed = 0
    bar = tqdm(total=len(items), initial=len(items) - len(todo), disable=not progress, unit="utt", desc="tokenize")
    with open(output, "a", encoding="utf-8") as out, open(errors_path, "w", encoding="utf-8") as err:
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            ready, results = [], []
            for item in batch:
                try:
                    ready.append((item, _load(item, sr, needs_text)))
                except InputError as exc:
                    results.append((item, exc))
            try:
                results += _encode(tokenizer, ready, embeddings)
            except Exception:  # not bad input: record the bad items already found, then stop (files flushed)
                for item, exc in results:
                    failed += 1
                    err.write(json.dumps({"id": item.id, "error": str(exc)}) + "\n")
                if counts is not None:
                    counts.update(tokenized=tokenized, errors=failed)
                raise
            for item, result in sorted(results, key=lambda r: batch.index(r[0])):
                if isinstance(result, Exception):
                    failed += 1
                    logger.warning("skipping %s: %s", item.id, result)
                    err.write(json.dumps({"id": item.id, "error": str(result)}) + "\n")
                else:
                    tokenized += 1
                    out.write(json.dumps({"id": item.id, **result.to_dict(include_embeddings=embeddings)}) + "\n")
            out.flush()  # a batch is on disk before the next starts: a kill loses at most one batch
            err.flush()
            if counts is not None:
                counts.update(tokenized=tokenized, errors=failed)
            bar.update(len(batch))
    bar.close()
    return tokenized, failed


# ---------------------------------------------------------------- the verb


def configure_tokenize(parser):
    """Options of ``taste tokenize``."""
    add_model_arguments(parser, required=False)
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--manifest", metavar="CSV",
        help="SpeechBrain CSV with columns ID, wav, wrd (e.g. results/prepared/manifests/<corpus>/test.csv); "
        "relative wav paths are relative to the CSV",
    )
    source.add_argument(
        "--folder", metavar="DIR",
        help="folder searched recursively for .wav/.flac files, each with a transcript: <stem>.txt, "
        "<stem>.lab or a LibriSpeech *.trans.txt line",
    )
    parser.add_argument(
        "--output", metavar="FILE.jsonl",
        help="JSONL output, one {id, ...tokens} per line; an existing file is resumed (its ids skipped); "
        "failed items go to FILE.jsonl.errors",
    )
    parser.add_argument("--batch-size", type=int, default=16, metavar="N",
                        help="utterances per forward pass (default: 16)")
    parser.add_argument("--embeddings", action="store_true",
                        help="also store the quantized vectors of each speech token (larger files)")
    parser.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
    parser.add_argument(
        "--merge", metavar="FILE.jsonl",
        help="instead of tokenizing, merge the FILE.jsonl.rank<N> shards of a torchrun run into FILE.jsonl "
        "(in --manifest/--folder order when given) and delete them",
    )


def run_tokenize(args):
    """Tokenize a manifest or a folder of audio + transcripts into resumable JSONL."""
    if args.merge:
        print(json.dumps(merge_shards(args.merge, read_items(args)), indent=1))
        return 0
    if not args.output:
        raise InputError("--output FILE.jsonl is required (or --merge FILE.jsonl to merge shards).")
    if not (args.manifest or args.folder):
        raise InputError("Give the utterances with --manifest CSV or --folder DIR.")
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}.")
    items = read_items(args)
    rank, world = _distribution()
    output = args.output
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    if world > 1:
        items, target = items[rank::world], f"{output}.rank{rank}"
    else:
        target = output
        if shard_files(output):
            raise InputError(f"{output} has unmerged shards ({output}.rank<N>) of a torchrun run; merge them "
                             f"first: taste tokenize --merge {output} --manifest/--folder ...")
    tokenizer = load_tokenizer(args)
    existing = read_records(target) + (read_records(output) if target != output else [])
    _check_fingerprints(existing, tokenizer.fingerprint, output, args.model)
    done = {rid for rid, _, _ in existing}
    errors_path = target + ".errors"
    counts = {"tokenized": 0, "errors": 0}
    try:
        tokenized, failed = tokenize_items(tokenizer, items, target, errors_path, done, args.batch_size,
                                           args.embeddings, progress=not args.no_progress, counts=counts)
    except TasteError:
        raise
    except Exception as exc:  # a bug, not a bad item: stop loudly, keep what is finished
        message = (
            f"taste tokenize stopped by an internal error ({type(exc).__name__}: {exc}), which is not a problem "
            f"with one input item, so it was not skipped. {counts['tokenized']} records finished before it are "
            f"saved in {target} ({counts['errors']} skipped bad items in {errors_path}); rerun the same command to "
            "resume once the cause is fixed. If it persists, please report it with this traceback."
        )
        logger.error(message)
        exc.add_note(message)
        raise
    summary = {
        "output": target, "items": len(items), "already_done": sum(1 for i in items if i.id in done),
        "tokenized": tokenized, "errors": failed, "errors_file": errors_path if failed else None,
    }
    if world > 1:
        summary["next"] = f"after every rank finished: taste tokenize --merge {output} --manifest/--folder ..."
    print(json.dumps(summary, indent=1))
    if tokenized + summary["already_done"] == 0 and items:
        raise InputError(f"Nothing was tokenized: all {failed} items failed; the reasons are in {errors_path}.")
    return 0
