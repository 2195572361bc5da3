"""``taste import-official SRC OUT``: the official TASTE release as toolkit folders.

See :mod:`taste_toolkit.official.importer`. Prints a JSON summary (counts of
tensors and parameters mapped / skipped / not placed, the folders written, time);
the full per-tensor report is ``OUT/import_report.json``.
"""

import json


def configure_import_official(parser):
    """Options of ``taste import-official``."""
    parser.add_argument("src", metavar="SRC",
                        help="local copy of the release (config.json, *.safetensors, llama_tokenizer/) or a hub id "
                        "such as MediaTek-Research/Llama-1B-TASTE-V0 (needs hub access)")
    parser.add_argument("out", metavar="OUT", help="output folder (tokenizer/, taslm/, import_report.json)")
    parser.add_argument("--only", choices=("tokenizer", "taslm"), default=None,
                        help="import only the stage-1 tokenizer or only the spoken LM (default: both)")
    parser.add_argument("--whisper-tokenizer", default=None, metavar="DIR",
                        help="Whisper large-v3 tokenizer (folder with tokenizer.json, or hub id); the release ships "
                        "none (default: SRC/whisper_tokenizer, else openai/whisper-large-v3 from the hub cache)")
    parser.add_argument("--speaker-model", default=None, metavar="ONNX",
                        help="CAM++ speaker model (default: SRC/cosyvoice/speaker_embed.onnx when present)")
    parser.add_argument("--units-model", default=None, metavar="ONNX",
                        help="S3 speech tokenizer (default: SRC/cosyvoice/speech_tokenizer_v1.onnx when present)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                        help="dtype the TASLM backbone runs in (default: float32; the release ran bfloat16)")
    parser.add_argument("--revision", default=None, help="hub revision of SRC (hub ids only)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists (only after success)")
    parser.add_argument("--no-verify", action="store_true",
                        help="do not reload the written folders before publishing OUT (saves memory and time)")


def run_import_official(args):
    """Import the official TASTE release (tokenizer + TASLM) into toolkit folders."""
    from taste_toolkit.official.importer import PARTS, REPORT_FILE, import_official

    report = import_official(args.src, args.out, parts=(args.only,) if args.only else PARTS, dtype=args.dtype,
                             whisper_tokenizer=args.whisper_tokenizer, overwrite=args.overwrite,
                             verify=not args.no_verify, revision=args.revision,
                             speaker=("campplus", {"model_path": args.speaker_model, "normalize": True})
                             if args.speaker_model else None,
                             units=("s3", {"model_path": args.units_model}) if args.units_model else None)
    summary = {"output": report["output"], "counts": report["counts"], "taslm": report.get("taslm"),
               "notes": report["notes"], "seconds": report["seconds"],
               "peak_memory_estimate_gib": round(report["peak_memory_estimate_bytes"] / 2 ** 30, 3),
               "report": f"{report['output']}/{REPORT_FILE}"}
    print(json.dumps(summary, indent=1))
    return 0
