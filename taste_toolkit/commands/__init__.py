"""``taste`` verbs around a trained tokenizer folder, as ``(configure, run)`` pairs.

Each submodule defines ``configure_<verb>(parser)`` and ``run_<verb>(args) -> int``
for :data:`taste_toolkit.cli.SUBCOMMANDS`:

* :mod:`.tokenize` -- ``taste tokenize`` (a manifest or folder -> resumable JSONL)
* :mod:`.speech` -- ``taste resynthesize``, ``taste edit`` (tokens -> audio)
* :mod:`.inspect` -- ``taste align``, ``taste info``
* :mod:`.evaluate` -- ``taste evaluate`` (systems x metrics from a YAML)
* :mod:`.taslm` -- ``taste generate``, ``taste score`` (the spoken LM)

Verbs that take ``--model`` accept TASTE (text-aligned) and LM-SPT (frame-rate)
tokenizer folders; ``edit`` and ``align`` need text-aligned ones.

This module holds the helpers they share: the ``--model``/``--device`` and
decoding options, loading the tokenizer and audio, and writing wav files. Heavy
imports (torch, the model) happen inside the functions so ``taste --help`` stays
fast.
"""

import logging
import os

from taste_toolkit.errors import InputError, MissingResourceError

logger = logging.getLogger(__name__)

#: Seconds of audio accepted per utterance (the Whisper window; see taste_toolkit.api).
MAX_SECONDS = 30.0


def add_model_arguments(parser, required=True):
    """``--model DIR`` and ``--device``."""
    parser.add_argument(
        "--model", required=required, metavar="DIR",
        help="standalone tokenizer folder written by TasteTokenizer.save_pretrained "
        "(e.g. results/taste/1986/tokenizer, or recipes/librispeech/export.py --output DIR)",
    )
    parser.add_argument(
        "--device", default="cpu", metavar="DEVICE",
        help="torch device to run on, e.g. cpu, cuda, cuda:1; under torchrun 'cuda' means "
        "cuda:$LOCAL_RANK (default: cpu)",
    )
    parser.add_argument(
        "--allow-external", action="store_true",
        help="follow options of the --model folder that name files or models outside it (absolute paths, "
        "hub ids, e.g. an s3 units model_path); refused by default. Use only for folders you trust",
    )


def add_generation_arguments(parser):
    """``--top-k`` and ``--seed`` of the unit decoder's ``generate``."""
    parser.add_argument(
        "--top-k", type=int, default=0, metavar="K",
        help="unit decoding: 0 = greedy (deterministic), K > 0 = sample among the K most likely "
        "units (default: 0)",
    )
    parser.add_argument(
        "--seed", type=int, default=0,
        help="seed of the top-k sampling, so a sampled output can be reproduced (default: 0)",
    )


def generation_options(args):
    """``generate`` keyword arguments from ``--top-k``/``--seed``."""
    import torch

    if args.top_k < 0:
        raise InputError(f"--top-k must be >= 0 (0 = greedy), got {args.top_k}.")
    options = {"top_k": args.top_k}
    if args.top_k > 0:
        options["generator"] = torch.Generator().manual_seed(args.seed)
    return options


def resolve_device(device):
    """``cuda`` under torchrun -> ``cuda:$LOCAL_RANK``, so each rank uses its own GPU."""
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return device


def load_tokenizer(args):
    """The tokenizer in ``args.model`` (TASTE or LM-SPT, by its metadata), with a CLI-friendly error."""
    from taste_toolkit.lmspt.api import load_tokenizer as load_any

    if not args.model:
        raise InputError("--model DIR is required: the tokenizer folder to use.")
    if not os.path.isdir(args.model):
        raise MissingResourceError(
            f"--model {args.model!r} is not a folder. Pass the standalone tokenizer folder "
            "(the recipe writes <output_folder>/tokenizer; recipes/librispeech/export.py makes one)."
        )
    return load_any(args.model, device=resolve_device(args.device),
                    allow_external=getattr(args, "allow_external", False))


def is_text_aligned(tokenizer):
    """True for tokenizers whose tokens follow the transcript (TASTE), False for frame-rate ones (LM-SPT)."""
    return getattr(tokenizer, "alignment", "text") == "text"


def require_text_aligned(tokenizer, model, verb):
    """Refuse verbs that need one token per word on a frame-rate tokenizer."""
    if not is_text_aligned(tokenizer):
        raise InputError(
            f"taste {verb} needs a text-aligned tokenizer (one speech token per word), but --model {model!r} "
            f"makes {tokenizer.alignment}-rate tokens ({tokenizer.info().get('token_rate_hz')} Hz). "
            "Use a TASTE tokenizer folder."
        )


def encoder_sample_rate(tokenizer):
    """Sample rate the tokenizer's encoder expects (16 kHz when it has none)."""
    encoder = tokenizer.model.encoder
    return int(encoder.sample_rate) if encoder is not None else 16000


def read_audio(path, tokenizer, option="--audio"):
    """Load ``path`` at the encoder's rate; errors name the option that gave it."""
    from taste_toolkit.audio import load_audio

    try:
        return load_audio(path, target_sr=encoder_sample_rate(tokenizer), max_seconds=MAX_SECONDS)
    except InputError as exc:
        raise InputError(f"{option}: {exc}") from exc


def require_text(text, option="--text"):
    """The transcript, or an error saying it must hold the spoken words."""
    if text is None or not text.strip():
        raise InputError(f"{option} is empty: give the words spoken in the audio (TASTE tokens are aligned to them).")
    return text


def write_wav(path, waveform, sample_rate):
    """Write ``waveform (L,)`` as 16-bit PCM, peak-normalized if it would clip.

    Vocoders such as ``griffin_lim`` do not calibrate their amplitude, so a peak
    above 1 is scaled down to 0.95 rather than clipped.

    Returns
    -------
    float
        Seconds written.
    """
    import numpy as np
    import soundfile as sf

    wav = np.asarray(waveform.detach().cpu().float().numpy() if hasattr(waveform, "detach") else waveform,
                     dtype=np.float32)
    if wav.size == 0:
        logger.warning("The decoder produced no units, so %s is empty.", path)
    elif not np.isfinite(wav).all():
        raise InputError(f"The vocoder produced NaN/inf samples; nothing was written to {path}.")
    peak = float(np.abs(wav).max()) if wav.size else 0.0
    if peak > 0.99:
        wav = wav * (0.95 / peak)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    try:
        sf.write(path, wav, int(sample_rate), subtype="PCM_16")
    except Exception as exc:  # unknown extension, unwritable folder, ...
        raise InputError(f"Cannot write {path!r}: {exc}. Use a .wav or .flac file name in a writable folder.") from exc
    return wav.size / float(sample_rate)


def require_vocoder(tokenizer, model):
    """Raise a clear error when the tokenizer has no vocoder (units only)."""
    if tokenizer.vocoder is None:
        raise MissingResourceError(
            f"The tokenizer in --model {model!r} has no vocoder, so it can only produce units, not audio. "
            "Re-export a trained run with one: python recipes/librispeech/export.py <run>/hyperparams.yaml "
            "--output DIR --vocoder griffin_lim (or unit_hifigan after recipes/librispeech/train_vocoder.py). "
            "For a folder with no training run (e.g. from `taste import-official`), attach one in Python and "
            "save again: tok = TasteTokenizer.from_pretrained(DIR); tok.vocoder = "
            "taste_toolkit.registry.build('vocoder', NAME, OPTIONS); tok.save_pretrained(NEW_DIR)."
        )


from taste_toolkit.commands.inspect import configure_align, configure_info, run_align, run_info  # noqa: E402
from taste_toolkit.commands.speech import (  # noqa: E402
    configure_edit,
    configure_resynthesize,
    run_edit,
    run_resynthesize,
)
from taste_toolkit.commands.tokenize import configure_tokenize, run_tokenize  # noqa: E402
from taste_toolkit.commands.evaluate import configure_evaluate, run_evaluate  # noqa: E402
from taste_toolkit.commands.taslm import configure_generate, configure_score, run_generate, run_score  # noqa: E402

__all__ = [
    "configure_tokenize", "run_tokenize",
    "configure_resynthesize", "run_resynthesize",
    "configure_edit", "run_edit",
    "configure_align", "run_align",
    "configure_info", "run_info",
    "configure_evaluate", "run_evaluate",
    "configure_generate", "run_generate",
    "configure_score", "run_score",
]
