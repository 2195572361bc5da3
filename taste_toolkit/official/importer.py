"""``import_official``: the official TASTE release -> toolkit folders (``taste import-official SRC OUT``).

``OUT`` receives::

    tokenizer/            standalone TasteTokenizer folder (Whisper encoder, whisper_decoder
                          aggregator, rvq, cosyvoice_lm decoder, Whisper text tokenizer)
    taslm/                TASLM folder (TaslmModel.from_pretrained): backbone/ + adapters + heads
    import_report.json    every tensor mapped, skipped or not placed; counts; time; memory

Safety: only ``config.json`` (JSON), safetensors files and tokenizer files are
read; no code of the release runs and no pickle is opened (a ``.bin`` checkpoint
is refused, naming the file). Everything is checked -- architecture, config values,
every shard present, every tensor's shape -- before anything is written; the folders
are written into a temporary folder beside ``OUT`` that is renamed to ``OUT`` at the
end, so an import that fails leaves no loadable ``OUT``.

Memory: tensors are read one at a time from memory-mapped shards; the LLM backbone
is streamed to its file tensor by tensor (:func:`~taste_toolkit.official.reader.write_safetensors`),
so the peak is set by the stage-1 modules in float32 (:mod:`taste_toolkit.official.memory`).
"""

import json
import logging
import os
import resource
import shutil
import time

import torch

from taste_toolkit import __version__
from taste_toolkit.errors import ConfigError, InputError, MissingResourceError
from taste_toolkit.official.reader import Checkpoint, check_no_code, resolve_source

logger = logging.getLogger(__name__)

REPORT_FILE = "import_report.json"
PARTS = ("tokenizer", "taslm")
PREFIXES = ("audio_tower.", "speech_decoder.", "spoken_lm.")
DEFAULT_WHISPER_TOKENIZER = "openai/whisper-large-v3"
#: The release's text tokenization (``process_one_sample``): case kept, whitespace words,
#: the first word without a leading space (``"Hello"``, then ``" world"``), English
#: transcription prompt ``[50258, 50259, 50360, 50364]`` (``language: ""`` = English and
#: the plain whitespace split, no script check).
RELEASE_TEXT_TOKENIZER_OPTIONS = {"lowercase": False, "first_word_space": False, "language": "", "task": "transcribe"}


def read_release_config(folder):
    """``config.json`` of the release, checked to be a ``TasteForCausalLM`` config.

    Raises
    ------
    MissingResourceError
        No ``config.json``.
    ConfigError
        Another architecture (``architectures`` / ``model_type`` named).
    """
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        raise MissingResourceError(f"{path} is missing: {folder} is not a copy of the TASTE release.")
    try:
        with open(path) as f:
            config = json.load(f)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} is not valid JSON ({exc}).") from exc
    archs = config.get("architectures") or []
    if config.get("model_type") != "taste" or "TasteForCausalLM" not in archs:
        raise ConfigError(f"{path} describes architectures={archs} model_type={config.get('model_type')!r}: not "
                          "the TASTE release (TasteForCausalLM, model_type 'taste'); other architectures cannot "
                          "be imported.")
    return config


def release_codebook(ckpt):
    """The release's RVQ as a :class:`~taste_toolkit.taslm.codebook.SpeechCodebook` (with ``project_out``)."""
    from taste_toolkit.taslm.codebook import SpeechCodebook

    pre, books, r = "audio_tower.vq.rvq.", [], 0
    while f"{pre}layers.{r}._codebook.embed" in ckpt.location:
        embed = ckpt.get(f"{pre}layers.{r}._codebook.embed").float()
        books.append(embed.reshape(embed.shape[-2], embed.shape[-1]))
        r += 1
    if not books:
        raise InputError(f"Missing tensor {pre}layers.0._codebook.embed: the checkpoint has no RVQ codebooks.")
    codebooks = torch.stack(books)
    if f"{pre}project_out.weight" in ckpt.location:
        return SpeechCodebook(codebooks, ckpt.get(f"{pre}project_out.weight"), ckpt.get(f"{pre}project_out.bias"))
    d = codebooks.shape[-1]  # no projection in the release's RVQ when codebook_dim == dim
    return SpeechCodebook(codebooks, torch.eye(d), torch.zeros(d))


def _whisper_text_tokenizer(source, folder, asr_config):
    """The Whisper text tokenizer of the release's ids, checked against ``asr_config``."""
    from taste_toolkit.registry import build

    candidates = [source] if source else [os.path.join(folder, d) for d in ("whisper_tokenizer", "whisper")
                                          if os.path.isfile(os.path.join(folder, d, "tokenizer.json"))]
    candidates = candidates or [DEFAULT_WHISPER_TOKENIZER]
    try:
        tok = build("text_tokenizer", "whisper", {"source": candidates[0], **RELEASE_TEXT_TOKENIZER_OPTIONS})
    except Exception as exc:
        raise MissingResourceError(
            f"Cannot load the Whisper text tokenizer from {candidates[0]!r} ({exc}). The release has none: pass "
            "whisper_tokenizer= (--whisper-tokenizer) with a local Whisper large-v3 folder holding tokenizer.json, "
            f"or make {DEFAULT_WHISPER_TOKENIZER} available in the hub cache.") from exc
    want = (asr_config or {}).get("vocab_size")
    if want is not None and tok.vocab_size != want:
        raise ConfigError(f"The Whisper tokenizer {candidates[0]!r} has {tok.vocab_size} ids but asr_config.vocab_size "
                          f"is {want}: use the multilingual large-v3 tokenizer the release was trained with.")
    if tok.end_of_text_id != 50257 or tok.start_of_transcript_id != 50258:
        raise ConfigError(f"The Whisper tokenizer {candidates[0]!r} is not the multilingual one (<|endoftext|> = "
                          f"{tok.end_of_text_id}, expected 50257): the release's aggregator prompt needs it.")
    from taste_toolkit.plugins.aggregator.whisper_decoder import RELEASE_PROMPT_IDS

    if tok.prefix_ids != list(RELEASE_PROMPT_IDS):
        raise ConfigError(f"The Whisper tokenizer {candidates[0]!r} gives the prompt {tok.prefix_ids}, not the "
                          f"release's {list(RELEASE_PROMPT_IDS)} (<|startoftranscript|> <|en|> <|transcribe|> "
                          "<|notimestamps|>): use the multilingual large-v3 tokenizer.")
    return tok


def _runtime_component(kind, spec, default_name, default_file, src_folder, out_folder, report):
    """A ``units``/``speaker`` plugin from ``spec`` ``(name, options)`` or the release's ONNX file.

    A ``model_path`` file is copied into ``<tokenizer>/<role>/`` and referenced as
    ``"./<file>"`` so the folder stays self-contained. None when there is nothing to use.
    """
    import shutil

    from taste_toolkit.registry import build

    if spec is None:
        path = os.path.join(src_folder, "cosyvoice", default_file)
        if not os.path.isfile(path):
            hint = " (encode/decode need a speaker vector: pass speaker=... or add the file)" if kind == "speaker" else ""
            report["notes"].append(f"no {kind} model: {path} is absent{hint}")
            return None
        spec = (default_name, {"model_path": path, **({"normalize": True} if kind == "speaker" else {})})
    name, options = spec[0], dict(spec[1])
    local = None
    if options.get("model_path"):
        role_dir = os.path.join(out_folder, "units" if kind == "units" else kind)
        os.makedirs(role_dir, exist_ok=True)
        local = os.path.basename(options["model_path"])
        shutil.copyfile(options["model_path"], os.path.join(role_dir, local))
        options["model_path"] = os.path.join(role_dir, local)
    obj = build(kind, name, options)
    if local is not None:
        obj.build_spec["options"]["model_path"] = "./" + local
    return obj


def _build_tokenizer(ckpt, config, out_folder, whisper_tokenizer, whisper_config, report, speaker=None,
                     units=None):
    """Build and save the stage-1 tokenizer; returns its fingerprint."""
    from taste_toolkit.api import TasteTokenizer
    from taste_toolkit.models.tokenizer import TasteModel
    from taste_toolkit.official.audio_tower import build_audio_tower
    from taste_toolkit.official.speech_decoder import build_speech_decoder

    text = _whisper_text_tokenizer(whisper_tokenizer, ckpt.folder, config.get("asr_config"))
    tower = build_audio_tower(config, ckpt.tensors("audio_tower."), whisper_config=whisper_config)
    _record(report, "audio_tower.", tower["consumed"], tower["skipped"], tower.get("unplaced", []),
            "tokenizer", skip_reason="vq.rvq.mlps.* (implicit neural codebook MLPs) are unused by the release")
    decoder = build_speech_decoder(config, ckpt.tensors("speech_decoder."))
    _record(report, "speech_decoder.", decoder["consumed"], [], decoder["skipped"], "tokenizer")
    speaker = _runtime_component("speaker", speaker, "campplus", "speaker_embed.onnx", ckpt.folder, out_folder,
                                 report)
    units = _runtime_component("units", units, "s3", "speech_tokenizer_v1.onnx", ckpt.folder, out_folder, report)
    model = TasteModel(tower["encoder"], tower["aggregator"], tower["quantizer"], decoder["decoder"],
                       text_tokenizer=text, speaker=speaker)
    tok = TasteTokenizer(model, text, units=units, speaker=speaker)
    tok.save_pretrained(out_folder)
    report["notes"] += [f"audio tower: {n}" for n in tower.get("notes", [])]
    return tok.fingerprint


def _record(report, prefix, consumed, skipped, unplaced, part, skip_reason="", unplaced_reason=""):
    for name in consumed:
        report["tensors"][prefix + name] = {"status": "mapped", "to": part}
    for name in skipped:
        report["tensors"][prefix + name] = {"status": "skipped", "reason": skip_reason or "unused by the release"}
    for name in unplaced:
        report["tensors"][prefix + name] = {"status": "not_placed",
                                            "reason": unplaced_reason or "matches no parameter of the toolkit plugin"}


def _summary(ckpt, report):
    """Counts of tensors and parameters (values) per status."""
    for name in ckpt.location:
        report["tensors"].setdefault(name, {"status": "not_placed", "reason": "not imported (part not selected)"})
    out = {"total": {"tensors": 0, "parameters": 0}}
    for name, entry in report["tensors"].items():
        for key in ("total", entry["status"]):
            row = out.setdefault(key, {"tensors": 0, "parameters": 0})
            row["tensors"] += 1
            row["parameters"] += ckpt.numel(name)
    for key in ("mapped", "skipped", "not_placed"):
        out.setdefault(key, {"tensors": 0, "parameters": 0})
    return out


def import_official(src, out, parts=PARTS, dtype="float32", whisper_tokenizer=None, whisper_config=None,
                    overwrite=False, verify=True, revision=None, speaker=None, units=None):
    """Import the official release into ``out`` (see the module docstring).

    Arguments
    ---------
    src : str
        Local folder of the release, or a hub id (``MediaTek-Research/Llama-1B-TASTE-V0``).
    out : str
        Output folder; must not exist unless ``overwrite``.
    parts : tuple of str
        ``"tokenizer"`` and/or ``"taslm"``.
    dtype : str
        Dtype the TASLM backbone runs in (``float32``; ``bfloat16`` as the release).
    whisper_tokenizer : str, optional
        Folder or hub id of the Whisper large-v3 tokenizer (the release ships none).
    whisper_config : dict, optional
        The tower Whisper's config, if ``asr_config`` + tensor shapes are not enough.
    verify : bool
        Reload the written folders before publishing them.
    speaker, units : tuple, optional
        ``(plugin name, options)`` of the speaker / units components; default: the
        release's ``cosyvoice/speaker_embed.onnx`` (``campplus``, normalized as the release
        does) and ``cosyvoice/speech_tokenizer_v1.onnx`` (``s3``) when present. Model
        files named by ``model_path`` are copied into the tokenizer folder. The release's
        ``cosyvoice/voice_generator.pth`` is a pickle and is not used (no vocoder: decode
        gives units).

    Returns
    -------
    dict
        The report (also written to ``out/import_report.json``).

    Raises
    ------
    ConfigError, InputError, MissingResourceError
        Another architecture, an unknown config value, a missing shard, a pickle, a
        tensor of the wrong shape; the message names the field, file or tensor.
    """
    start = time.time()
    unknown = sorted(set(parts) - set(PARTS))
    if unknown or not parts:
        raise ConfigError(f"parts must be some of {PARTS}, got {list(parts)}.")
    out = os.path.abspath(str(out))
    if os.path.exists(out) and not overwrite:
        raise InputError(f"{out} exists: choose a new output folder or pass overwrite=True (--overwrite).")
    folder = resolve_source(src, revision)
    config = read_release_config(folder)
    ckpt = Checkpoint(folder)
    report = {"source": str(src), "source_folder": folder, "output": out, "toolkit_version": __version__,
              "parts": list(parts), "tensors": {}, "notes": [], "ignored_files": check_no_code(folder)}
    for name in ckpt.location:
        if not name.startswith(PREFIXES):
            report["tensors"][name] = {"status": "not_placed", "reason": "outside audio_tower/speech_decoder/spoken_lm"}
    taslm_plan = None
    if "taslm" in parts:  # check everything cheap before building anything
        from taste_toolkit.official.spoken_lm import audio_dim_mismatch, map_spoken_lm, spoken_lm_plan

        plan = spoken_lm_plan(config)
        codebook = release_codebook(ckpt)
        why = audio_dim_mismatch(ckpt, codebook)
        if why:
            report["notes"].append(why)
            report["taslm"] = {"written": False, "reason": why}
            for name in ckpt.names("spoken_lm."):
                report["tensors"][name] = {"status": "not_placed", "reason": why}
        else:
            taslm_plan = (plan, map_spoken_lm(ckpt, plan, codebook), codebook)
        tok_dir = os.path.join(folder, "llama_tokenizer")
        if taslm_plan and not os.path.isfile(os.path.join(tok_dir, "tokenizer.json")):
            raise MissingResourceError(f"{os.path.join(tok_dir, 'tokenizer.json')} is missing: the release's "
                                       "llama_tokenizer/ folder is needed for the TASLM.")
    tmp = os.path.join(os.path.dirname(out), f".{os.path.basename(out)}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        fingerprint = None
        if "tokenizer" in parts:
            fingerprint = _build_tokenizer(ckpt, config, os.path.join(tmp, "tokenizer"), whisper_tokenizer,
                                           whisper_config, report, speaker=speaker, units=units)
        if taslm_plan:
            _import_taslm(ckpt, taslm_plan, tmp, folder, dtype, fingerprint, "tokenizer" in parts, report)
        report["counts"] = _summary(ckpt, report)
        if verify:
            _verify(tmp, parts, report)
        report["seconds"] = round(time.time() - start, 3)
        report["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        from taste_toolkit.official.memory import estimate_peak_bytes

        report["peak_memory_estimate_bytes"] = estimate_peak_bytes(ckpt, parts)
        with open(os.path.join(tmp, REPORT_FILE), "w") as f:
            json.dump(report, f, indent=1, sort_keys=True)
        if os.path.exists(out):  # overwrite: swap, then remove the old folder
            old = tmp + ".old"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        ckpt.close()
    return report


def _import_taslm(ckpt, taslm_plan, tmp, folder, dtype, fingerprint, with_tokenizer, report):
    from taste_toolkit.official.spoken_lm import write_taslm

    plan, mapping, codebook = taslm_plan
    info = write_taslm(os.path.join(tmp, "taslm"), ckpt, plan, mapping, codebook,
                       os.path.join(folder, "llama_tokenizer"), dtype=dtype,
                       tokenizer_folder="../tokenizer" if with_tokenizer else None, fingerprint=fingerprint)
    for dst, src in {**mapping["backbone"], **mapping["trainable"]}.items():
        where = "taslm/backbone" if dst in mapping["backbone"] else "taslm"
        report["tensors"][src] = {"status": "mapped", "to": f"{where}:{dst}"}
    rvq = [n for n in ckpt.names("audio_tower.vq.rvq.") if n.endswith("._codebook.embed") or ".project_out." in n]
    for src in rvq:  # copied into the TASLM's frozen codebook (code lookup and speech input)
        entry = report["tensors"].get(src)
        if entry and entry["status"] == "mapped":
            entry["to"] += ", taslm:codebook"
        else:
            report["tensors"][src] = {"status": "mapped", "to": "taslm:codebook"}
    for src, why in mapping["skipped"].items():
        report["tensors"][src] = {"status": "skipped", "reason": why}
    for src, why in mapping["not_placed"].items():
        report["tensors"][src] = {"status": "not_placed", "reason": why}
    report["taslm"] = {"written": True, "head": plan["head_name"], "lora": plan["lora"],
                       "lora_targets": mapping["lora_targets"], "delay": plan["delay"],
                       "backbone_bytes": info["backbone_bytes"], "tokenizer_files": info["files_copied"],
                       "inference": "the release adds sigma to mu (point='mean_plus_sigma'); set head_options.point "
                                    "to 'mean' for the mean, or sample with taste_sample"}


def _verify(tmp, parts, report):
    """Reload what was written (tokenizer, TASLM) so a broken folder is never published."""
    if "tokenizer" in parts:
        from taste_toolkit.api import TasteTokenizer

        TasteTokenizer.from_pretrained(os.path.join(tmp, "tokenizer"))
    if report.get("taslm", {}).get("written"):
        from taste_toolkit.taslm.model import TaslmModel

        model = TaslmModel.from_pretrained(os.path.join(tmp, "taslm"))
        report["taslm"]["parameters"] = model.parameter_counts()
        del model
