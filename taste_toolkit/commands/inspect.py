"""``taste align`` and ``taste info``: look inside a trained tokenizer.

``align`` turns the aggregator's cross-attention (text tokens x encoder frames)
into word timestamps with :func:`taste_toolkit.alignment.word_timestamps` and can
plot the attention map. ``info`` prints the tokenizer's plugins, code geometry and
parameter counts, plus the token rate and bitrate measured on a sample.
"""

import json
import os

from taste_toolkit.commands import (
    add_model_arguments,
    encoder_sample_rate,
    load_tokenizer,
    read_audio,
    require_text,
    require_text_aligned,
)
from taste_toolkit.errors import InputError


def _encode_sample(tokenizer, args, alignment=False):
    wav = read_audio(args.audio, tokenizer)
    options = {"return_alignment": True} if alignment else {}  # frame-rate tokenizers have no alignment
    return tokenizer.encode(wav, encoder_sample_rate(tokenizer), args.text, **options)


# ---------------------------------------------------------------- align


def configure_align(parser):
    """Options of ``taste align``."""
    add_model_arguments(parser)
    parser.add_argument("--audio", required=True, metavar="WAV", help="speech to align (at most 30 s)")
    parser.add_argument("--text", required=True, help="transcript of --audio (the words spoken)")
    parser.add_argument("--plot", metavar="OUT.png",
                        help="also save the attention map with the word starts as an image")
    parser.add_argument("--json", metavar="OUT.json",
                        help="also write the timestamps as a JSON list of {word, start, end} (seconds)")


def format_table(timestamps):
    """Aligned ``word  start  end`` text table (seconds, 2 decimals)."""
    width = max([len("word")] + [len(w) for w, _, _ in timestamps])
    lines = [f"{'word':<{width}}  {'start':>6}  {'end':>6}"]
    lines += [f"{w:<{width}}  {s:6.2f}  {e:6.2f}" for w, s, e in timestamps]
    return "\n".join(lines)


def run_align(args):
    """Word timestamps of a recording from the aggregator's attention (table, JSON, plot)."""
    from taste_toolkit.alignment import plot_alignment, word_timestamps

    require_text(args.text)
    tokenizer = load_tokenizer(args)
    require_text_aligned(tokenizer, args.model, "align")
    tokens = _encode_sample(tokenizer, args, alignment=True)
    if tokens.alignment is None:
        raise InputError(
            f"The tokenizer in --model {args.model!r} has no text-to-speech attention (aggregator "
            f"{tokenizer.info()['plugins'].get('aggregator')!r}); align needs the cross_attention aggregator."
        )
    timestamps = word_timestamps(tokens)
    print(format_table(timestamps))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump([{"word": w, "start": round(s, 4), "end": round(e, 4)} for w, s, e in timestamps], f, indent=1)
    if args.plot:
        os.makedirs(os.path.dirname(os.path.abspath(args.plot)), exist_ok=True)
        plot_alignment(tokens, args.plot, timestamps=timestamps)
    return 0


# ---------------------------------------------------------------- info


def configure_info(parser):
    """Options of ``taste info``."""
    add_model_arguments(parser)
    parser.add_argument("--audio", metavar="WAV",
                        help="optional sample recording: also report its speech-token rate and bitrate (needs --text)")
    parser.add_argument("--text", help="transcript of --audio (needed with --audio)")


def sample_rates(tokens, info):
    """Rates measured on one encoded sample: tokens/s and bits/s of speech tokens."""
    seconds = float(tokens.duration)
    rate = tokens.token_rate
    return {
        "duration_s": round(seconds, 3),
        "words": len(tokens.words),
        "text_tokens": int(tokens.text_ids.numel()),
        "speech_tokens": tokens.num_speech_tokens,
        "speech_token_rate_hz": round(rate, 3),
        "bitrate_bps": round(rate * info["bits_per_speech_token"], 2),
    }


def run_info(args):
    """Print the tokenizer's plugins, code geometry and sizes as JSON (plus rates on a sample)."""
    if (args.audio is None) != (args.text is None):
        raise InputError("--audio and --text go together: give both to measure rates on a sample, or neither.")
    if args.text is not None:
        require_text(args.text)
    tokenizer = load_tokenizer(args)
    info = tokenizer.info()
    if args.audio is not None:
        info["sample"] = sample_rates(_encode_sample(tokenizer, args), info)
    print(json.dumps(info, indent=1))
    return 0
