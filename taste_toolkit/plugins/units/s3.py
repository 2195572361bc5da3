"""``s3`` units plugin: CosyVoice S3 speech tokens (v1, 50 Hz, 4096 units).

These are the targets of the paper's unit decoder: quantized states of a
supervised ASR encoder, computed by CosyVoice-300M's ``speech_tokenizer_v1.onnx``
from a 128-bin Whisper log-mel. The model is not downloadable here; point
``model_path`` at a local copy (it ships in the CosyVoice-300M release, e.g. the
``FunAudioLLM/CosyVoice-300M`` model repository, file ``speech_tokenizer_v1.onnx``).

Like CosyVoice's frontend, every utterance is tokenized on its own (the Whisper
log-mel is normalized by its own maximum) and audio longer than 30 s is
refused: the tokenizer was not built for it and we do not trim silently.
"""

import torch

from taste_toolkit.errors import ConfigError, InputError, MissingResourceError
from taste_toolkit.interfaces import UnitExtractor
from taste_toolkit.registry import register

MODEL_FILE = "speech_tokenizer_v1.onnx"
MAX_SECONDS = 30.0
_N_FFT, _HOP, _N_MELS = 400, 160, 128


def whisper_log_mel(wav, n_mels=_N_MELS):
    """Whisper's log-mel of one 16 kHz waveform, as ``whisper.log_mel_spectrogram``.

    Hann STFT (400 / 160, reflect-centred), last frame dropped, power spectrum,
    Slaney mel filters, ``log10`` floored 8 below the utterance maximum, then
    ``(x + 4) / 4``. No padding to 30 s.

    Arguments
    ---------
    wav : torch.Tensor
        ``(L,)`` float waveform, ``L > 200``.

    Returns
    -------
    torch.Tensor
        ``(n_mels, L // 160)``.
    """
    import torchaudio

    window = torch.hann_window(_N_FFT, device=wav.device)
    stft = torch.stft(wav, _N_FFT, _HOP, window=window, return_complex=True)
    power = stft[..., :-1].abs() ** 2
    filters = torchaudio.functional.melscale_fbanks(
        _N_FFT // 2 + 1, 0.0, 8000.0, n_mels, 16000, norm="slaney", mel_scale="slaney"
    ).to(wav.device)
    mel = filters.T @ power
    log_spec = mel.clamp(min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


@register("units", "s3")
class S3Units(UnitExtractor):
    """CosyVoice-300M S3 tokens (speech_tokenizer_v1.onnx), 50 Hz, 4096 units.

    Arguments
    ---------
    model_path : str
        Local path of ``speech_tokenizer_v1.onnx`` (from the CosyVoice-300M release).
    num_threads : int
        onnxruntime intra-op threads.
    """

    sample_rate = 16000
    needs_fit = False

    def __init__(self, model_path: str = "", num_threads: int = 1):
        super().__init__()
        import os

        where = (
            f"it ships with the CosyVoice-300M release (model repository "
            f"FunAudioLLM/CosyVoice-300M, file {MODEL_FILE}); download it on a machine "
            "with internet access and set the s3 option model_path to its local path, "
            "or use the mel_kmeans units plugin, which needs no download."
        )
        if not model_path:
            raise MissingResourceError(f"The s3 unit extractor needs {MODEL_FILE}: {where}")
        if not os.path.isfile(model_path):
            raise MissingResourceError(f"{MODEL_FILE} not found at {model_path!r}: {where}")
        try:
            import onnxruntime
        except ImportError as exc:
            raise MissingResourceError(
                "The s3 unit extractor runs the CosyVoice tokenizer with onnxruntime, which "
                "is not installed: pip install onnxruntime"
            ) from exc
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = num_threads
        try:
            self._session = onnxruntime.InferenceSession(
                model_path, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own types for bad files
            raise ConfigError(
                f"onnxruntime cannot load {model_path!r} ({exc}); is it CosyVoice-300M's "
                f"{MODEL_FILE}?"
            ) from exc

    @property
    def num_units(self) -> int:
        return 4096

    @property
    def frame_rate(self) -> float:
        return 50.0

    def _tokenize(self, wav):
        import numpy as np

        feats = whisper_log_mel(wav).unsqueeze(0)  # (1, 128, T)
        inputs = self._session.get_inputs()
        out = self._session.run(
            None,
            {
                inputs[0].name: feats.cpu().numpy().astype(np.float32),
                inputs[1].name: np.array([feats.shape[2]], dtype=np.int32),
            },
        )[0]
        return torch.as_tensor(np.asarray(out).reshape(-1).astype(np.int64))

    @torch.no_grad()
    def forward(self, wavs, wav_lengths):
        """Tokenize a batch, one utterance at a time.

        Arguments
        ---------
        wavs : torch.Tensor
            ``(B, L)`` float waveforms at 16 kHz.
        wav_lengths : torch.Tensor
            ``(B,)`` valid samples (absolute), each in ``(200, 480000]``.

        Returns
        -------
        units : torch.Tensor
            ``(B, S)`` long in ``[0, 4096)``, 0 at padding.
        lengths : torch.Tensor
            ``(B,)`` tokens per utterance (about 50 per second).
        """
        if not isinstance(wavs, torch.Tensor) or wavs.dim() != 2:
            raise InputError(f"s3 expects waveforms (B, L), got {getattr(wavs, 'shape', type(wavs))}.")
        wav_lengths = torch.as_tensor(wav_lengths).long().cpu()
        limit = int(MAX_SECONDS * self.sample_rate)
        for i, n in enumerate(wav_lengths.tolist()):
            if n > limit:
                raise InputError(
                    f"Utterance {i} lasts {n / self.sample_rate:.2f} s; the S3 tokenizer accepts at "
                    f"most {MAX_SECONDS:.0f} s. Split long recordings into segments first."
                )
            if n <= _N_FFT // 2 or n > wavs.shape[1]:
                raise InputError(
                    f"Utterance {i} has {n} valid samples; s3 needs more than {_N_FFT // 2} "
                    f"(and at most the padded length {wavs.shape[1]})."
                )
        tokens = [self._tokenize(wavs[i, :n].float()) for i, n in enumerate(wav_lengths.tolist())]
        lengths = torch.tensor([t.numel() for t in tokens], dtype=torch.long)
        units = torch.zeros(len(tokens), max(1, int(lengths.max())), dtype=torch.long)
        for i, t in enumerate(tokens):
            units[i, : t.numel()] = t
        return units.to(wavs.device), lengths.to(wavs.device)

