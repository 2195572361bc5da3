"""``taste resynthesize`` and ``taste edit``: TASTE tokens back to audio.

``resynthesize`` runs audio + transcript -> tokens -> units -> waveform, to hear what
the tokens keep. ``edit`` encodes two recordings of the same transcript and gives
the chosen words of the first the speech tokens of the second (e.g. to move an
emphasis), then decodes. Both need a tokenizer exported with a vocoder.
"""

import json

from taste_toolkit.commands import (
    add_generation_arguments,
    add_model_arguments,
    encoder_sample_rate,
    generation_options,
    is_text_aligned,
    load_tokenizer,
    read_audio,
    require_text,
    require_text_aligned,
    require_vocoder,
    write_wav,
)
from taste_toolkit.errors import InputError


def _decode_and_write(tokenizer, tokens, args):
    """Decode ``tokens`` and write ``args.output``; returns the summary dict."""
    if not is_text_aligned(tokenizer):  # frame tokens decode deterministically: no unit sampling options
        speech = tokenizer.decode(tokens)
        seconds = write_wav(args.output, speech.waveforms[0], speech.sample_rate)
        return {"output": args.output, "speech_tokens": int(tokens.codes.shape[0]),
                "frames": int(speech.features[0].shape[0]), "seconds": round(seconds, 3),
                "sample_rate": speech.sample_rate}
    speech = tokenizer.decode(tokens, **generation_options(args))
    seconds = write_wav(args.output, speech.waveforms[0], speech.sample_rate)
    return {
        "output": args.output,
        "words": len(tokens.words),
        "speech_tokens": tokens.num_speech_tokens,
        "units": int(speech.units[0].numel()),
        "seconds": round(seconds, 3),
        "sample_rate": speech.sample_rate,
    }


# ---------------------------------------------------------------- resynthesize


def configure_resynthesize(parser):
    """Options of ``taste resynthesize``."""
    add_model_arguments(parser)
    parser.add_argument("--audio", required=True, metavar="WAV",
                        help="speech to resynthesize (any format soundfile reads; at most 30 s)")
    parser.add_argument("--text", help="transcript of --audio (the words spoken); required by text-aligned "
                        "(TASTE) tokenizers, ignored by frame-rate ones (LM-SPT)")
    parser.add_argument("--output", required=True, metavar="OUT.wav",
                        help="where to write the resynthesized speech (16-bit, at the vocoder's sample rate)")
    add_generation_arguments(parser)


def run_resynthesize(args):
    """Encode speech with its transcript and decode it back to a wav file."""
    tokenizer = load_tokenizer(args)
    if is_text_aligned(tokenizer):
        require_text(args.text)
    require_vocoder(tokenizer, args.model)
    wav = read_audio(args.audio, tokenizer)
    tokens = tokenizer.encode(wav, encoder_sample_rate(tokenizer), args.text)
    print(json.dumps(_decode_and_write(tokenizer, tokens, args), indent=1))
    return 0


# ---------------------------------------------------------------- edit


def parse_words(spec):
    """``"2,5"`` -> ``[2, 5]``; ``"cat,mat"`` -> ``["cat", "mat"]`` (mixing is fine).

    Integers are 0-based word indices; words are matched case-insensitively and
    every occurrence is swapped.
    """
    words = []
    for part in (spec or "").split(","):
        part = part.strip()
        if not part:
            continue
        words.append(int(part) if part.lstrip("-").isdigit() else part.lower())
    if not words:
        raise InputError(f"--words {spec!r} names no word; give 0-based indices or words, comma-separated (e.g. 2,5).")
    return words


def configure_edit(parser):
    """Options of ``taste edit``."""
    add_model_arguments(parser)
    parser.add_argument("--audio-a", required=True, metavar="A.wav",
                        help="the recording to edit (its tokens are kept for the other words)")
    parser.add_argument("--audio-b", required=True, metavar="B.wav",
                        help="a recording of the same transcript that gives the chosen words their tokens")
    parser.add_argument("--text", required=True, help="transcript of both recordings")
    parser.add_argument(
        "--words", required=True, metavar="LIST",
        help="words to take from --audio-b, comma-separated: 0-based indices (2,5) or words (cat,mat; every "
        "occurrence)",
    )
    parser.add_argument("--output", required=True, metavar="OUT.wav",
                        help="where to write the edited speech (16-bit, at the vocoder's sample rate)")
    add_generation_arguments(parser)


def run_edit(args):
    """Swap the speech tokens of chosen words from recording B into recording A and decode."""
    require_text(args.text)
    words = parse_words(args.words)
    tokenizer = load_tokenizer(args)
    require_text_aligned(tokenizer, args.model, "edit")
    require_vocoder(tokenizer, args.model)
    sr = encoder_sample_rate(tokenizer)
    wav_a = read_audio(args.audio_a, tokenizer, "--audio-a")
    wav_b = read_audio(args.audio_b, tokenizer, "--audio-b")
    tokens_a, tokens_b = tokenizer.encode([wav_a, wav_b], sr, [args.text, args.text])
    try:
        edited = tokenizer.edit(tokens_a, tokens_b, words)
    except InputError as exc:
        raise InputError(f"--words {args.words!r}: {exc}") from exc
    summary = _decode_and_write(tokenizer, edited, args)
    summary["edited_words"] = [tokens_a.words[i] for i in edited.extra["edited_words"]]
    print(json.dumps(summary, indent=1))
    return 0
