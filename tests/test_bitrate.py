"""Tests of :mod:`taste_toolkit.bitrate`, the one place bits of speech tokens are computed."""

import math

import pytest

from taste_toolkit.bitrate import bitrate, bits_per_token
from taste_toolkit.errors import ConfigError
from taste_toolkit.registry import build


def test_four_codebooks_of_512_at_3_hz_is_108_bps_exactly():
    assert bitrate(3, 4, 512) == 108.0
    assert bits_per_token(4, 512) == 36.0
    assert bitrate(12.5, 8, 2048) == 1100.0  # the paper's Mimi row: 1.1 kbps


def test_no_codebooks_carry_no_bits():
    assert bits_per_token(0, 512) == 0.0
    assert bitrate(25.0, 0, 512) == 0.0
    assert bits_per_token(1, 1) == 0.0


@pytest.mark.parametrize("rate", [0, 0.0, -3.0, float("nan"), float("inf"), "3", None, True])
def test_non_positive_or_non_numeric_rate_is_refused(rate):
    with pytest.raises(ConfigError, match="positive, finite"):
        bitrate(rate, 4, 512)


@pytest.mark.parametrize("args", [(-1, 512), (4, 0), (2.5, 512), (4, 512.0), (True, 512)])
def test_bad_codebook_counts_are_refused(args):
    with pytest.raises(ConfigError, match="must be an integer"):
        bits_per_token(*args)


def test_quantizers_report_bits_through_it():
    rvq = build("quantizer", "rvq", {"num_quantizers": 4, "codebook_size": 512}, input_dim=8)
    assert rvq.bits_per_vector == bits_per_token(4, 512) == 36.0
    assert math.isnan(build("quantizer", "identity", {"input_dim": 8}).bits_per_vector)
