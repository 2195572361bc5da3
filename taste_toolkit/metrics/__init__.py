"""Offline reconstruction metrics as plain functions.

- :mod:`~taste_toolkit.metrics.signal`: mel cepstral distortion, log-mel
  distance, F0 RMSE/correlation (DTW-aligned), duration ratio.
- :mod:`~taste_toolkit.metrics.durations`: word duration consistency (TASTE's
  25 ms criterion).
- :mod:`~taste_toolkit.metrics.asr`: offline Whisper tiny.en ASR, Whisper text
  normalization and corpus WER.

Heavy libraries (librosa, transformers, faster-whisper, jiwer) are imported
only when a function needs them, so importing this package is cheap.
"""

from taste_toolkit.metrics.asr import OfflineASR, normalize_text, word_error_rate
from taste_toolkit.metrics.durations import word_duration_consistency
from taste_toolkit.metrics.signal import (
    duration_ratio,
    f0_metrics,
    log_mel_distance,
    mel_cepstral_distortion,
)

__all__ = [
    "OfflineASR",
    "duration_ratio",
    "f0_metrics",
    "log_mel_distance",
    "mel_cepstral_distortion",
    "normalize_text",
    "word_duration_consistency",
    "word_error_rate",
]
