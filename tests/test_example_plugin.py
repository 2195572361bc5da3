"""Tests of the out-of-tree example plugin ``plugins/taste-plugin-fsq`` (quantizer ``fsq``).

They check that a third-party package extends the toolkit through its entry point
alone, that the plugin meets the quantizer contract, and that YAML can select it.
"""

import importlib.metadata
import importlib.util
import itertools
import subprocess
import sys
import textwrap

import pytest
import torch

from taste_toolkit.errors import ConfigError, InputError
from taste_toolkit.registry import build

if importlib.util.find_spec("taste_plugin_fsq") is None:
    pytest.skip("pip install -e plugins/taste-plugin-fsq", allow_module_level=True)

D = 12
LEVELS = [8, 5, 5, 5]




def make_fsq(seed=0, levels=LEVELS):
    torch.manual_seed(seed)
    return build("quantizer", "fsq", {"levels": levels}, input_dim=D)


def batch(seed=0, B=3, M=7):
    g = torch.Generator().manual_seed(seed)
    x = 2.0 * torch.randn(B, M, D, generator=g)
    lengths = torch.tensor([M, M - 3, 1][:B])
    return x, lengths


def test_registered_through_entry_point_in_fresh_process():
    points = importlib.metadata.entry_points(group="taste_toolkit.plugins")
    assert any(p.name == "fsq" and p.value == "taste_plugin_fsq" for p in points)
    # Nothing imports the plugin package here: only the entry point can register it.
    code = textwrap.dedent(
        """
        import sys
        from taste_toolkit import registry
        before = "taste_plugin_fsq" in sys.modules
        names = registry.available("quantizer")
        cls = registry.get("quantizer", "fsq")
        print(before, "fsq" in names, cls.__module__)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "True", "taste_plugin_fsq.fsq"]


def test_shapes_codes_and_zero_loss():
    q = make_fsq()
    assert (q.input_dim, q.num_quantizers, q.codebook_size) == (D, 1, 1000)
    assert q.bits_per_vector == pytest.approx(9.9658, abs=1e-4)
    x, lengths = batch()
    out = q(x, lengths)
    assert out.quantized.shape == x.shape
    assert out.codes.shape == (3, 7, 1) and out.codes.dtype == torch.long
    mask = torch.arange(7)[None, :] < lengths[:, None]
    valid = out.codes[..., 0][mask]
    assert ((valid >= 0) & (valid < 1000)).all()
    assert (out.codes[..., 0][~mask] == -1).all()
    assert (out.quantized[~mask] == 0).all()
    assert out.loss.shape == () and float(out.loss) == 0.0
    assert 0 < out.metrics["fsq_usage"] <= valid.numel() / 1000
    assert 1.0 <= out.metrics["fsq_perplexity"] <= valid.numel()


def test_forward_backward_straight_through():
    q = make_fsq()
    x, lengths = batch()
    x.requires_grad_(True)
    out = q(x, lengths)
    out.quantized.pow(2).sum().backward()
    for name, p in q.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    mask = torch.arange(7)[None, :] < lengths[:, None]
    assert x.grad[mask].abs().sum() > 0
    # Padded inputs get no gradient: they never reach the output.
    assert (x.grad[~mask] == 0).all()


def test_padding_invariance():
    q = make_fsq().eval()
    x, lengths = batch()
    out = q(x, lengths)
    mask = torch.arange(7)[None, :] < lengths[:, None]
    noisy = x.clone()
    noisy[~mask] = float("nan")
    out_nan = q(noisy, lengths)
    assert torch.equal(out.codes, out_nan.codes)
    assert torch.equal(out.quantized, out_nan.quantized)
    # More padding at the end: valid positions unchanged (a different matmul shape,
    # so equal up to float rounding for vectors, exactly for codes).
    longer = torch.cat([x, 100 * torch.randn(3, 4, D)], dim=1)
    out_long = q(longer, lengths)
    assert torch.equal(out_long.codes[:, :7], out.codes)
    assert (out_long.codes[:, 7:] == -1).all()
    assert torch.allclose(out_long.quantized[:, :7], out.quantized, atol=1e-6)


def test_encode_decode_round_trip_exact_in_eval():
    q = make_fsq().eval()
    x, lengths = batch(seed=3)
    out = q(x, lengths)
    codes = q.encode(x, lengths)
    assert torch.equal(codes, out.codes)
    assert torch.equal(q.encode(x, lengths), codes)  # deterministic
    assert torch.equal(q.decode(codes), out.quantized)
    # Training mode has no randomness either: same codes and vectors.
    q.train()
    out_train = q(x, lengths)
    assert torch.equal(out_train.codes, codes)
    assert torch.equal(out_train.quantized, out.quantized)
    # The padding code decodes to zeros.
    assert torch.equal(q.decode(torch.full((1, 2, 1), -1)), torch.zeros(1, 2, D))


def test_implicit_codebook_is_a_bijection():
    q = make_fsq(levels=[3, 4, 2])
    assert q.codebook_size == 24
    idx = torch.arange(24)
    level_ids = q.indices_to_levels(idx)
    assert level_ids.shape == (24, 3)
    assert torch.equal(q.levels_to_indices(level_ids), idx)
    grid = set(itertools.product(range(3), range(4), range(2)))
    assert {tuple(row) for row in level_ids.tolist()} == grid
    # Every dimension reaches exactly its L levels, the extremes included, and a zero
    # latent maps to the middle level (L // 2), also for even L.
    z = torch.linspace(-20, 20, 4001)[:, None].expand(-1, 3)
    reached = q.latent_levels(z)
    for j, L in enumerate([3, 4, 2]):
        assert sorted(reached[:, j].unique().tolist()) == list(range(L))
    assert q.latent_levels(torch.zeros(1, 3)).tolist() == [[1, 2, 1]]


def test_bad_options_and_inputs():
    for levels in ([], [8, 1], [8, 2.5], [True, 4]):
        with pytest.raises(ConfigError, match="levels"):
            build("quantizer", "fsq", {"levels": levels}, input_dim=D)
    with pytest.raises(ConfigError, match="levels"):  # registry type check: str is not a list
        build("quantizer", "fsq", {"levels": "8555"}, input_dim=D)
    with pytest.raises(ConfigError, match="input_dim"):
        build("quantizer", "fsq", {})
    q = make_fsq()
    with pytest.raises(InputError, match="input_dim"):
        q(torch.zeros(1, 3, D + 1), torch.tensor([3]))
    with pytest.raises(InputError, match="lengths"):
        q(torch.zeros(1, 3, D), torch.tensor([4]))
    with pytest.raises(InputError, match="codes"):
        q.decode(torch.tensor([[[1000]]]))


YAML = """
plugin_modules: []
__load_plugins: !apply:taste_toolkit.registry.load_plugins [!ref <plugin_modules>]
speech_dim: 16
quantizer_name: identity
quantizer_options:
    rvq: {num_quantizers: 4, codebook_size: 512, codebook_dim: 8, kmeans_init: False}
    identity: {}
    fsq: {levels: [4, 4, 3]}
quantizer: !apply:taste_toolkit.registry.build
    kind: quantizer
    name: !ref <quantizer_name>
    blocks: !ref <quantizer_options>
    input_dim: !ref <speech_dim>
"""


def test_selectable_from_yaml():
    from hyperpyyaml import load_hyperpyyaml

    hparams = load_hyperpyyaml(YAML)
    assert hparams["quantizer"].registry_name == "identity"
    hparams = load_hyperpyyaml(YAML, overrides={"quantizer_name": "fsq"})
    q = hparams["quantizer"]
    assert q.registry_name == "fsq" and type(q).__module__ == "taste_plugin_fsq.fsq"
    assert (q.input_dim, q.levels, q.codebook_size) == (16, [4, 4, 3], 48)
    # The module route works as well (already registered: importing again is a no-op).
    hparams = load_hyperpyyaml(
        YAML, overrides={"quantizer_name": "fsq", "plugin_modules": ["taste_plugin_fsq"]}
    )
    assert hparams["quantizer"].registry_name == "fsq"
