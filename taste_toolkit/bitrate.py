"""Bits of discrete speech tokens, computed in one place.

A token made of ``R`` codes from codebooks of ``K`` entries carries
``R * log2(K)`` bits; at ``rate`` tokens (or codec frames) per second that is
``rate * R * log2(K)`` bits per second. Quantizers, codecs, the training logs and
the evaluation systems all call these two functions.

Example
-------
>>> bitrate(3.0, 4, 512)
108.0
>>> bits_per_token(2, 1024)
20.0
"""

import math
import numbers

from taste_toolkit.errors import ConfigError


def _check_int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def bits_per_token(num_codebooks, codebook_size):
    """Bits of one token of ``num_codebooks`` codes: ``R * log2(K)``.

    Arguments
    ---------
    num_codebooks : int
        Codes per token ``R`` (>= 0; 0 gives 0 bits).
    codebook_size : int
        Entries per codebook ``K`` (>= 1).

    Returns
    -------
    float
        Bits per token.

    Raises
    ------
    ConfigError
        A count that is not a whole number, a negative ``R`` or ``K < 1``.
    """
    num_codebooks = _check_int(num_codebooks, "num_codebooks", 0)
    codebook_size = _check_int(codebook_size, "codebook_size", 1)
    return num_codebooks * math.log2(codebook_size)


def bitrate(rate, num_codebooks, codebook_size):
    """Bits per second of ``rate`` tokens per second: ``rate * R * log2(K)``.

    Arguments
    ---------
    rate : float
        Tokens (or codec frames) per second; must be > 0 and finite.
    num_codebooks, codebook_size : int
        As in :func:`bits_per_token`.

    Returns
    -------
    float
        Bits per second (exact for power-of-two codebooks: 3 Hz x 4 x log2(512) = 108.0).

    Raises
    ------
    ConfigError
        A non-positive or non-finite rate (measure the rate on audio that produced
        tokens), or bad codebook counts.
    """
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not math.isfinite(rate) or rate <= 0:
        raise ConfigError(
            f"Token rate must be a positive, finite number of tokens per second, got {rate!r}; "
            "measure it on audio that produced at least one token."
        )
    return float(rate) * bits_per_token(num_codebooks, codebook_size)
