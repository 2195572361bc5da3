"""``taste generate`` and ``taste score``: use a trained TASLM.

``generate`` continues a spoken prompt: audio (+ transcript, or ``--asr``) ->
TASTE tokens -> TASLM continuation (text + TASTE tokens, KV-cached) -> unit
decoder -> vocoder -> wav. ``score`` runs two-choice evaluations: the built-in
sets on a manifest of the embedded corpus, or a local SALMON / StoryCloze-style
folder (each sub-folder, e.g. ``sSC`` and ``tSC``, reported on its own).
"""

import json

from taste_toolkit.commands import read_audio, require_vocoder, write_wav
from taste_toolkit.errors import InputError


def _add_taslm_arguments(parser):
    parser.add_argument("--taslm", required=True, metavar="DIR",
                        help="trained TASLM folder (<output_folder>/taslm of the TASLM recipe)")
    parser.add_argument("--model", default=None, metavar="DIR",
                        help="stage-1 tokenizer folder (default: the one recorded in the TASLM config)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--allow-external", action="store_true",
                        help="follow options of the tokenizer folder that name files or models outside it "
                        "(absolute paths, hub ids); refused by default. Use only for folders you trust")
    parser.add_argument("--asr", action="store_true",
                        help="transcribe audio without a transcript with the offline Whisper tiny.en ASR")


def _load(args):
    from taste_toolkit.api import TasteTokenizer
    from taste_toolkit.taslm.model import TaslmModel

    model = TaslmModel.from_pretrained(args.taslm, device=args.device)
    folder = args.model or model.config.get("tokenizer_folder")
    if not folder:
        raise InputError("--model is required: this TASLM config records no tokenizer folder.")
    return model, TasteTokenizer.from_pretrained(folder, device=args.device,
                                                 allow_external=getattr(args, "allow_external", False))


def _asr(args):
    if not args.asr:
        return None
    from taste_toolkit.metrics.asr import OfflineASR

    return OfflineASR()


def configure_generate(parser):
    """Options of ``taste generate``."""
    _add_taslm_arguments(parser)
    parser.add_argument("--audio", required=True, metavar="WAV", help="spoken prompt (at most 30 s)")
    parser.add_argument("--text", default=None, help="transcript of --audio (else --asr transcribes it)")
    parser.add_argument("--output", required=True, metavar="OUT.wav", help="where to write prompt + continuation")
    parser.add_argument("--generated-only", action="store_true", help="write only the continuation")
    parser.add_argument("--max-new-words", type=int, default=16, metavar="N",
                        help="stop after N new words (the next word start becomes EOS; default: 16)")
    parser.add_argument("--min-new-words", type=int, default=1, metavar="N",
                        help="EOS is not allowed before N new words (default: 1)")
    parser.add_argument("--top-p", type=float, default=0.0, help="text top-p; 0 = greedy (default)")
    parser.add_argument("--temperature", type=float, default=1.0, help="text sampling temperature (default: 1.0)")
    parser.add_argument("--repetition-penalty", type=float, default=1.0,
                        help="CTRL-style penalty on already generated text ids (default: 1.0 = none)")
    parser.add_argument("--taste-sample", action="store_true",
                        help="sample TASTE tokens (top-p in token mode, mu + sigma * eps in embedding mode)")
    parser.add_argument("--taste-top-p", type=float, default=0.9,
                        help="per-layer top-p of sampled TASTE codes in token mode (default: 0.9)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every sampling step (default: 0)")


def run_generate(args):
    """Continue a spoken prompt with TASLM and write the speech."""
    from taste_toolkit.taslm.generation import GenerationConfig, continue_speech

    model, tokenizer = _load(args)
    require_vocoder(tokenizer, args.model or model.config.get("tokenizer_folder"))
    wav = read_audio(args.audio, tokenizer)
    sr = tokenizer.model.encoder.sample_rate if tokenizer.model.encoder is not None else 16000
    cfg = GenerationConfig(max_new_words=args.max_new_words, min_new_words=args.min_new_words, top_p=args.top_p,
                           temperature=args.temperature, repetition_penalty=args.repetition_penalty,
                           taste_sample=args.taste_sample, taste_top_p=args.taste_top_p, seed=args.seed)
    result, speech = continue_speech(model, tokenizer, wav, sr, transcript=args.text, asr=_asr(args), config=cfg,
                                     generated_only=args.generated_only)
    seconds = write_wav(args.output, speech.waveforms[0], speech.sample_rate)
    print(json.dumps({"output": args.output, "prompt": " ".join(result.words[:result.num_prompt_words]),
                      "continuation": " ".join(result.new_words), "stop_reason": result.stop_reason,
                      "tokens_per_second": round(result.tokens_per_second, 1), "seconds": round(seconds, 3)},
                     indent=1))
    return 0


def configure_score(parser):
    """Options of ``taste score``."""
    _add_taslm_arguments(parser)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--manifest", metavar="CSV",
                        help="manifest (ID, duration, wav, spk_id, wrd) for the built-in two-choice sets")
    source.add_argument("--folder", metavar="DIR", help="local SALMON / StoryCloze-style folder of pairs")
    parser.add_argument("--cache", default="results/prepared/taslm_tokens", metavar="DIR",
                        help="TASTE token cache for --manifest (default: results/prepared/taslm_tokens)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the built-in distractors")


def run_score(args):
    """Two-choice likelihood evaluation of a TASLM (built-in sets or a local folder)."""
    from taste_toolkit.taslm.data import encode_manifest
    from taste_toolkit.taslm.scoring import builtin_two_choice_sets, load_two_choice_folder, two_choice_accuracy

    model, tokenizer = _load(args)
    if args.manifest:
        sets = builtin_two_choice_sets(encode_manifest(tokenizer, args.manifest, args.cache), seed=args.seed)
    else:
        sets = load_two_choice_folder(args.folder, tokenizer, asr=_asr(args))
    print(json.dumps({name: two_choice_accuracy(model, pairs) for name, pairs in sets.items() if pairs}, indent=1))
    return 0
