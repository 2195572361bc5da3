"""The ``taste`` command line (console script ``taste = taste_toolkit.cli:main``).

Each verb is one entry of :data:`SUBCOMMANDS`, ``name -> (configure, run)``:
``configure(parser)`` adds the verb's options to its argparse sub-parser and
``run(args) -> int`` does the work and returns the exit code. Adding a verb is
adding two functions and one dict entry; :func:`main` needs no change.

Exit codes: 0 success, 1 a toolkit error (:class:`~taste_toolkit.errors.TasteError`,
printed as ``error: <message>`` without a traceback, because it is a problem with
the input or configuration, not a bug), 2 bad command-line usage.

Examples
--------
``taste plugins --kind quantizer``
    Every registered quantizer with its options and defaults.
``taste make-corpus --root results/synthetic_corpus --num-speakers 4``
    Synthesize the embedded espeak-ng corpus.
``taste tokenize --model results/taste/1986/tokenizer --manifest test.csv --output tok.jsonl``
    Tokenize a manifest (or ``--folder DIR``) into JSONL; rerun to resume. Under
    torchrun each rank writes ``tok.jsonl.rank<N>``; ``taste tokenize --merge tok.jsonl
    --manifest test.csv`` merges them in manifest order.
``taste resynthesize --model DIR --audio a.wav --text "the cat sat" --output out.wav``
    Audio + transcript -> tokens -> audio (needs a tokenizer exported with a vocoder).
``taste edit --model DIR --audio-a a.wav --audio-b b.wav --text "the cat sat" --words 1 --output out.wav``
    Give word 1 of ``a.wav`` the speech tokens of ``b.wav`` and decode.
``taste align --model DIR --audio a.wav --text "the cat sat" --plot att.png``
    Word timestamps from the aggregator's attention.
``taste info --model DIR --audio a.wav --text "the cat sat"``
    Plugins, code geometry, parameters, and the token rate / bitrate on a sample.
``taste evaluate --config hparams/evaluate/reconstruction.yaml --limit 5``
    Score the systems of the YAML with its metrics; writes summary.md, CSVs and plots.
``taste generate --taslm results/taslm_token/1986/taslm --audio p.wav --text "the cat" --output out.wav``
    Continue speech from a prompt with a trained TASLM (KV-cached joint text + TASTE generation).
``taste score --taslm results/taslm_token/1986/taslm --manifest test.csv``
    TASLM likelihood of (audio, text) pairs; ``--folder`` runs sSC/tSC-format two-choice sets.
``taste import-official MediaTek-Research/Llama-1B-TASTE-V0 OUT``
    The official release (local copy or hub id) as OUT/tokenizer, OUT/taslm and OUT/import_report.json.

``--model`` accepts TASTE (text-aligned) and LM-SPT (frame-rate) tokenizer folders.
"""

import argparse
import json
import logging
import os
import sys

from taste_toolkit import commands
from taste_toolkit.commands import import_official
from taste_toolkit.errors import TasteError

# ---------------------------------------------------------------------- plugins


def configure_plugins(parser):
    """Options of ``taste plugins``."""
    from taste_toolkit.registry import KINDS

    parser.add_argument(
        "--kind",
        metavar="KIND",
        help=f"only list plugins of this kind; one of: {', '.join(KINDS)} (default: all kinds)",
    )
    parser.add_argument(
        "--module",
        "-m",
        dest="modules",
        action="append",
        default=[],
        metavar="MODULE",
        help="import this plugin module first, as a YAML 'plugin_modules:' entry would "
        "(repeat for several); installed entry-point plugins are always loaded",
    )


def run_plugins(args):
    """Print every registered plugin by kind with its options (``registry.describe``)."""
    from taste_toolkit import registry

    if args.kind is not None and args.kind not in registry.KINDS:
        # A usage error, like an invalid choice: exit code 2 as argparse would use.
        print(
            f"taste plugins: unknown kind {args.kind!r}; kinds are: {', '.join(registry.KINDS)}",
            file=sys.stderr,
        )
        return 2
    registry.load_plugins(args.modules)
    print(registry.describe(args.kind))
    return 0


# ------------------------------------------------------------------ make-corpus


def configure_make_corpus(parser):
    """Options of ``taste make-corpus`` (see ``generate_corpus``)."""
    parser.add_argument(
        "--root",
        required=True,
        metavar="DIR",
        help="output folder (LibriSpeech layout); an existing corpus made with the same "
        "options is reused, one made with other options is replaced",
    )
    parser.add_argument(
        "--seed", type=int, default=1234,
        help="seed of transcripts and prosody labels; audio is identical for a seed (default: 1234)",
    )
    parser.add_argument(
        "--num-speakers", type=int, default=8, metavar="N",
        help="number of espeak-ng voices, 1-12, most intelligible first (default: 8)",
    )
    for split, default in (("train", 60), ("dev", 5), ("test", 5)):
        parser.add_argument(
            f"--{split}", type=int, default=default, metavar="N",
            help=f"{split} utterances PER SPEAKER (default: {default})",
        )
    parser.add_argument(
        "--workers", type=int, default=2, metavar="N",
        help="synthesis processes; 0 synthesizes in this process (default: 2)",
    )
    parser.add_argument(
        "--prosody-probability", type=float, default=0.3, metavar="P",
        help="probability that a word gets one recorded prosody label (default: 0.3)",
    )
    parser.add_argument(
        "--language", default="en", metavar="LANG",
        help="corpus language: en, es, de, fr (fr-fr) or cmn (zh); other languages' sentences come "
        "from the template grammars in taste_toolkit/data/sentences (default: en)",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="do not show the progress bar",
    )


def run_make_corpus(args):
    """Generate the synthetic corpus and print its summary as JSON."""
    from taste_toolkit.data.synthetic_corpus import generate_corpus

    summary = generate_corpus(
        args.root,
        seed=args.seed,
        num_speakers=args.num_speakers,
        utterances_per_split={"train": args.train, "dev": args.dev, "test": args.test},
        num_workers=args.workers,
        prosody_probability=args.prosody_probability,
        progress=not args.no_progress,
        language=args.language,
    )
    # The per-speaker voice table is long and fixed; the rest is what a user checks.
    print(json.dumps({k: v for k, v in summary.items() if k != "speakers"}, indent=1))
    return 0


# ------------------------------------------------------------------------- main

#: Verb -> (configure(parser), run(args) -> exit code); the first docstring line
#: of ``run`` is the verb's help.
SUBCOMMANDS = {
    "plugins": (configure_plugins, run_plugins),
    "make-corpus": (configure_make_corpus, run_make_corpus),
    "tokenize": (commands.configure_tokenize, commands.run_tokenize),
    "resynthesize": (commands.configure_resynthesize, commands.run_resynthesize),
    "edit": (commands.configure_edit, commands.run_edit),
    "align": (commands.configure_align, commands.run_align),
    "info": (commands.configure_info, commands.run_info),
    "evaluate": (commands.configure_evaluate, commands.run_evaluate),
    "generate": (commands.configure_generate, commands.run_generate),
    "score": (commands.configure_score, commands.run_score),
    "import-official": (import_official.configure_import_official, import_official.run_import_official),
}


def build_parser():
    """The ``taste`` parser with one sub-parser per entry of :data:`SUBCOMMANDS`."""
    from taste_toolkit import __version__

    parser = argparse.ArgumentParser(
        prog="taste",
        description="taste-toolkit: Text-Aligned Speech Tokenization and Embedding (TASTE).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--verbose", "-v", action="store_true", help="log at INFO level (default: warnings only)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (configure, run) in SUBCOMMANDS.items():
        summary = (run.__doc__ or name).strip().split("\n")[0]
        sub_parser = sub.add_parser(name, help=summary, description=summary)
        configure(sub_parser)
        sub_parser.set_defaults(_run=run)
    return parser


def _hint_dash_value(argv):
    """After a usage error, say how to pass a value that starts with "-" (argparse reads
    ``--text -x`` as two options; ``--text=-x`` passes any transcript)."""
    for option, value in zip(argv, argv[1:]):
        if option.startswith("--") and "=" not in option and value.startswith("-") and not value.startswith("--"):
            print(f"taste: if {value!r} is the value of {option}, join them: {option}={value}", file=sys.stderr)
            return


def main(argv=None):
    """Run ``taste`` with ``argv`` (default ``sys.argv[1:]``) and return the exit code.

    Arguments
    ---------
    argv : list of str, optional
        Command-line arguments without the program name.

    Returns
    -------
    int
        0 on success, 1 on a toolkit error, 2 on a usage error.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version or a usage error: return, do not exit
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        if code == 2:
            _hint_dash_value(sys.argv[1:] if argv is None else list(argv))
        return code
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args._run(args))
    except TasteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # `taste plugins | head`: the reader left early. Point stdout at devnull so
        # the interpreter's final flush does not raise again (Python docs recipe).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
