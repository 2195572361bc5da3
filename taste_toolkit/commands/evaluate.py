"""``taste evaluate``: score systems side by side from a YAML (see :mod:`taste_toolkit.evaluation`)."""

import os


def configure_evaluate(parser):
    """Options of ``taste evaluate``."""
    parser.add_argument("--config", required=True, metavar="CONFIG.yaml",
                        help="evaluation YAML listing data, systems and metrics (e.g. hparams/evaluate/reconstruction.yaml)")
    parser.add_argument("--output", metavar="DIR", help="override output_folder (reruns there resume)")
    parser.add_argument("--limit", type=int, metavar="N", help="first N utterances only (0 = all)")
    parser.add_argument("--systems", metavar="A,B", help="only these systems of the YAML (comma-separated names)")
    parser.add_argument("--metrics", metavar="A,B", help="only these metrics of the YAML (comma-separated labels)")
    parser.add_argument("--threads", type=int, default=2, metavar="N", help="torch threads (default: 2)")
    parser.add_argument("--no-progress", action="store_true", help="do not show progress bars")


def run_evaluate(args):
    """Reconstruct with every system, score with every metric; writes summary.md, CSVs and plots."""
    import torch

    from taste_toolkit.evaluation import Evaluation, load_config

    split = lambda s: [x.strip() for x in s.split(",") if x.strip()] if s else None  # noqa: E731
    config = load_config(args.config, {"output_folder": args.output, "limit": args.limit,
                                       "systems": split(args.systems), "metrics": split(args.metrics)})
    torch.set_num_threads(max(1, args.threads))
    Evaluation(config, progress=not args.no_progress).run()
    with open(os.path.join(config["output_folder"], "summary.md"), encoding="utf-8") as f:
        print(f.read())
    return 0
