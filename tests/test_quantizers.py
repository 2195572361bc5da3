"""Tests of the ``rvq`` and ``identity`` quantizer plugins."""

import os

import pytest
import torch

from taste_toolkit.errors import ConfigError, InputError
from taste_toolkit.registry import available, build

D = 16




def make_rvq(seed=0, **options):
    torch.manual_seed(seed)
    defaults = dict(num_quantizers=3, codebook_size=16, codebook_dim=8)
    defaults.update(options)
    return build("quantizer", "rvq", defaults, input_dim=D)


def clustered(n_clusters=16, n=400, dim=D, seed=0, offset=0.0, noise=0.05):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(n_clusters, dim, generator=g) + offset
    labels = torch.randint(0, n_clusters, (n,), generator=g)
    return centers[labels] + noise * torch.randn(n, dim, generator=g)


def batch_of(data, step, B=4, M=10, seed=0):
    g = torch.Generator().manual_seed(seed * 100003 + step)
    idx = torch.randint(0, data.shape[0], (B, M), generator=g)
    lengths = torch.randint(M // 2, M + 1, (B,), generator=g)
    lengths[0] = M
    return data[idx], lengths


def state(q):
    return {k: v.clone() for k, v in q.state_dict().items()}


def states_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- registry / identity


def test_registered_and_missing_input_dim():
    assert {"rvq", "identity"} <= set(available("quantizer"))
    for name in ("rvq", "identity"):
        with pytest.raises(ConfigError, match="input_dim"):
            build("quantizer", name, {})
    with pytest.raises(ConfigError):
        build("quantizer", "rvq", {"codebook_size": 1}, input_dim=D)


def test_identity_passthrough():
    q = build("quantizer", "identity", input_dim=D)
    x = torch.randn(2, 5, D, requires_grad=True)
    out = q(x, torch.tensor([5, 2]))
    assert out.quantized is x and out.codes is None
    assert out.loss.shape == () and float(out.loss) == 0.0
    assert q.encode(x, torch.tensor([5, 2])) is None
    assert q.num_quantizers == 0 and q.codebook_size == 0
    with pytest.raises(ConfigError, match="no codes"):
        q.decode(torch.zeros(2, 5, 1, dtype=torch.long))
    with pytest.raises(InputError):
        q(torch.randn(2, 5, D + 1), torch.tensor([5, 2]))


# ---------------------------------------------------------------- rvq basics


def test_shapes_metrics_and_gradients():
    q = make_rvq(quantize_dropout=False)
    x = clustered()[:40].reshape(4, 10, D).clone().requires_grad_(True)
    lengths = torch.tensor([10, 7, 3, 1])
    out = q(x, lengths)
    assert out.quantized.shape == (4, 10, D)
    assert out.codes.shape == (4, 10, 3) and out.codes.dtype == torch.long
    mask = torch.arange(10)[None] < lengths[:, None]
    assert (out.codes[~mask] == -1).all() and (out.codes[mask] >= 0).all()
    assert (out.quantized[~mask] == 0).all()
    assert out.loss.shape == () and out.loss.requires_grad
    for r in range(3):
        assert 0 < out.metrics[f"rvq_usage_l{r}"] <= 1
        assert 1 <= out.metrics[f"rvq_perplexity_l{r}"] <= 16 + 1e-4
    assert out.metrics["bits_per_vector"] == pytest.approx(3 * 4.0) == q.bits_per_vector
    (out.quantized.pow(2).sum() + out.loss).backward()
    assert x.grad is not None and x.grad[mask].abs().sum() > 0  # straight-through
    assert (x.grad[~mask] == 0).all()  # padding gets no gradient
    assert q.rvq.project_in.weight.grad.abs().sum() > 0
    assert q.rvq.project_out.weight.grad.abs().sum() > 0
    with pytest.raises(InputError):
        q(x, torch.tensor([11, 1, 1, 1]))
    with pytest.raises(InputError):
        q(torch.randn(2, 3, D + 1), torch.tensor([3, 3]))


def test_padding_never_enters_codebooks_outputs_or_loss():
    data = clustered()
    lengths = torch.tensor([7, 4])
    results = []
    for pad_len, pad_value in ((10, 1e6), (7, 0.0)):
        q = make_rvq(seed=1)
        torch.manual_seed(5)  # k-means sampling and dropout draws
        outs = []
        for step in range(4):
            x, _ = batch_of(data, step, B=2, M=7)
            xp = torch.full((2, pad_len, D), pad_value)
            xp[:, :7] = x
            xp[1, 4:] = pad_value
            outs.append(q(xp, lengths))
        results.append((q.codebooks.clone(), outs))
    (cb_a, outs_a), (cb_b, outs_b) = results
    assert torch.equal(cb_a, cb_b)
    mask = torch.arange(7)[None] < lengths[:, None]
    for a, b in zip(outs_a, outs_b):
        assert torch.equal(a.quantized[:, :7][mask], b.quantized[mask])
        assert torch.equal(a.codes[:, :7], b.codes)
        assert torch.equal(a.loss, b.loss)
        assert (a.quantized[:, 7:] == 0).all() and (a.codes[:, 7:] == -1).all()


def test_quantize_dropout_train_only():
    q = make_rvq(num_quantizers=4, quantize_dropout=True)
    data = clustered()
    kept = set()
    for step in range(30):
        x, lengths = batch_of(data, step)
        codes = q(x, lengths).codes
        mask = torch.arange(10)[None] < lengths[:, None]
        valid = codes[mask]  # (N, R)
        active = (valid[0] >= 0).sum().item()
        # a prefix of layers is kept, identically for every position
        assert (valid[:, :active] >= 0).all() and (valid[:, active:] == -1).all()
        kept.add(active)
    assert kept == {1, 2, 3, 4}
    q.eval()
    x, lengths = batch_of(data, 99)
    codes = q(x, lengths).codes
    assert (codes[torch.arange(10)[None] < lengths[:, None]] >= 0).all()


def test_eval_determinism_round_trip_and_no_updates():
    q = make_rvq(quantize_dropout=True)
    data = clustered()
    for step in range(5):
        q(*batch_of(data, step))
    x, lengths = batch_of(data, 50)
    # encode in training mode: no EMA/dead-code update, no dropout
    before = state(q)
    codes_train_mode = q.encode(x, lengths)
    assert states_equal(before, state(q)) and q.training
    q.eval()
    out1, out2 = q(x, lengths), q(x, lengths)
    assert states_equal(before, state(q))
    assert torch.equal(out1.quantized, out2.quantized) and torch.equal(out1.codes, out2.codes)
    codes = q.encode(x, lengths)
    assert torch.equal(codes, out1.codes) and torch.equal(codes, codes_train_mode)
    assert torch.equal(q.decode(codes), out1.quantized)  # bit-exact round trip
    assert out1.loss > 0  # eval commitment is reported, not dropped
    # -1 contributes nothing: masking the fine layers == passing coarse codes
    coarse = codes.clone()
    coarse[..., 1:] = -1
    assert torch.equal(q.decode(coarse), q.decode(codes[..., :1]))
    assert not torch.allclose(q.decode(coarse), out1.quantized)
    with pytest.raises(InputError):
        q.decode(torch.full((1, 2, 3), 16))


def test_uninitialised_eval_does_not_fit_codebooks():
    q = make_rvq()
    q.eval()
    x, lengths = batch_of(clustered(), 0)
    codes = q.encode(x, lengths)
    assert not q.initialised
    assert (codes[torch.arange(10)[None] < lengths[:, None]] == 0).all()
    assert torch.equal(q(x, lengths).codes, codes) and not q.initialised


# ---------------------------------------------------------------- learning behaviour


def test_training_reduces_reconstruction_and_commitment():
    # ~8 vectors per code per batch, so threshold 2 does not churn live codes
    q = make_rvq(num_quantizers=2, quantize_dropout=False)
    data = clustered(n_clusters=16)
    opt = torch.optim.Adam(q.parameters(), lr=1e-2)
    x_eval, l_eval = batch_of(data, 10_000, B=16)
    mask = torch.arange(10)[None] < l_eval[:, None]

    def evaluate():
        q.eval()
        with torch.no_grad():
            out = q(x_eval, l_eval)
        q.train()
        return (out.quantized - x_eval)[mask].pow(2).mean().item(), out.loss.item()

    history = {}
    for step in range(220):
        x, lengths = batch_of(data, step, B=16)
        out = q(x, lengths)
        m = torch.arange(10)[None] < lengths[:, None]
        loss = (out.quantized - x)[m].pow(2).mean() + out.loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step in (0, 25):
            history[step] = evaluate()
    history["end"] = evaluate()
    assert history["end"][0] < 0.2 * history[0][0], history
    # The commitment's scale follows project_in, which first grows from its random
    # init; once it has (step 25) the quantization error must keep falling.
    assert history["end"][1] < 0.3 * history[25][1], history


def test_dead_code_replacement_revives_codes():
    # Random (non-k-means) codebooks near the origin, data far away: only a few
    # codes ever win, the rest stay dead unless they are replaced.
    data = clustered(n_clusters=32, offset=4.0, noise=0.1)
    usage = {}
    for threshold in (0.0, 2.0):
        q = make_rvq(
            num_quantizers=1, codebook_size=32, kmeans_init=False,
            threshold_ema_dead_code=threshold, quantize_dropout=False, decay=0.9,
        )
        for step in range(60):
            q(*batch_of(data, step))
        q.eval()
        codes = q.encode(data.unsqueeze(0), torch.tensor([data.shape[0]]))
        usage[threshold] = codes.unique().numel() / 32
    assert usage[2.0] > 0.6 and usage[0.0] < 0.3, usage


# ---------------------------------------------------------------- DDP


def _ddp_worker(rank, init_file, out_dir):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        for sync in (True, False):
            q = make_rvq(seed=0, sync_codebook=sync, codebook_size=32)  # same weights on both ranks
            # each rank sees different clusters and different amounts of data
            data = clustered(n_clusters=8, seed=1 + rank, offset=3.0 * rank)
            torch.manual_seed(100 + rank)
            for step in range(6):
                q(*batch_of(data, step, B=3 + rank, seed=rank))
            torch.save(q.codebooks.clone(), os.path.join(out_dir, f"cb_{sync}_{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # ~20-25 s on the shared machine, mostly importing torch in 2 children
def test_ddp_codebooks_are_synchronised(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    load = lambda name: torch.load(tmp_path / name)  # noqa: E731
    synced = [load(f"cb_True_{r}.pt") for r in (0, 1)]
    local = [load(f"cb_False_{r}.pt") for r in (0, 1)]
    assert torch.equal(synced[0], synced[1])
    assert synced[0].abs().sum() > 0
    assert not torch.allclose(local[0], local[1])  # the test can tell the difference


# ---------------------------------------------------------------- projection init


def subspace_clusters(n=1200, dim=D, rank=6, seed=3):
    """Clustered vectors that live in a ``rank``-dimensional subspace of ``dim``."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(dim, rank, generator=g))[0].t()  # (rank, dim) orthonormal
    low = clustered(n_clusters=24, n=n, dim=rank, seed=seed, noise=0.2)
    return low @ basis * 3.0 + 1.5  # scaled and off-centre, as hidden states are


def test_pca_projection_init_reconstructs_the_input_space():
    data = subspace_clusters()
    q = make_rvq(num_quantizers=2, codebook_dim=8)  # 8 >= rank 6: nothing is lost
    report = q.init_codebooks(data)
    assert report["projection_variance_kept"] > 0.9999, report
    with torch.no_grad():
        back = q.rvq.project_out(q.rvq.project_in(data))
    assert (back - data).abs().max() < 1e-4
    kept = make_rvq(num_quantizers=2, codebook_dim=8, projection_init="keep")
    weight = kept.rvq.project_in.weight.clone()
    assert "projection_variance_kept" not in kept.init_codebooks(data)
    assert torch.equal(kept.rvq.project_in.weight, weight)  # the paper's random projection stays
    with pytest.raises(ConfigError, match="projection_init"):
        make_rvq(projection_init="random")


def _layer0_perplexity_after_training(projection_init, steps=150):
    """Train the RVQ alone to reconstruct its input (the decoder's straight-through
    pull, in miniature) after k-means init; layer-0 perplexity on all the data."""
    data = subspace_clusters(rank=12)
    q = make_rvq(num_quantizers=2, codebook_dim=4, projection_init=projection_init,
                 threshold_ema_dead_code=0.25, quantize_dropout=False)
    q.init_codebooks(data)
    opt = torch.optim.Adam(q.parameters(), lr=1e-3)
    for step in range(steps):
        x, lengths = batch_of(data, step, B=8)
        out = q(x, lengths)
        m = torch.arange(x.shape[1])[None] < lengths[:, None]
        loss = (out.quantized - x)[m].pow(2).mean() + out.loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    q.eval()
    with torch.no_grad():
        out = q(data.unsqueeze(0), torch.tensor([data.shape[0]]))
    return out.metrics["rvq_perplexity_l0"]


def test_pca_projection_keeps_layer0_codes_in_use_under_reconstruction_training():
    pca, random_projection = (_layer0_perplexity_after_training(p) for p in ("pca", "keep"))
    assert pca > 8.0 and pca > 1.5 * random_projection, (pca, random_projection)


def _loud_words_quiet_label(n=2000, seed=0):
    """``(N, D)`` vectors whose 4 loud dimensions (std 10, no structure) hide a
    quiet binary label (+-0.5 on dimension 4): phonetic content and voice, in miniature."""
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, 2, (n,), generator=g)
    x = 0.05 * torch.randn(n, D, generator=g)
    x[:, :4] += 10 * torch.randn(n, 4, generator=g)
    x[:, 4] += label.float() - 0.5
    return x, label


@pytest.mark.parametrize("power", [0.5, 1.0])
def test_projection_whitening_round_trips_and_evens_out_the_code_space(power):
    x, _ = _loud_words_quiet_label()
    q = make_rvq(num_quantizers=1, codebook_dim=8, projection_whitening=power)
    plain = make_rvq(num_quantizers=1, codebook_dim=8)
    assert q.init_codebooks(x)["projection_variance_kept"] == plain.init_codebooks(x)["projection_variance_kept"]
    with torch.no_grad():
        z, z_plain = q.rvq.project_in(x), plain.rvq.project_in(x)
        back = q.rvq.project_out(z)
    # Same subspace, so the same round trip as plain PCA.
    assert torch.allclose(back, plain.rvq.project_out(z_plain), atol=1e-3)
    # Variance of direction i becomes std_i ** (2 - 2p): loud (std 10) vs label (std 0.5) directions.
    ratio = float(z.var(0)[0] / z.var(0)[4])
    expected = (float(z_plain.var(0)[0] / z_plain.var(0)[4])) ** (1 - power)
    assert ratio == pytest.approx(expected, rel=0.05), (ratio, expected)


def test_projection_whitening_lets_the_codes_reach_a_quiet_direction():
    """With plain PCA the 16 codes split the loud dimensions and the label is lost;
    whitened, k-means spends codes on the label's direction too."""
    x, label = _loud_words_quiet_label()

    def label_accuracy(power):
        q = make_rvq(num_quantizers=1, codebook_dim=8, projection_whitening=power)
        q.init_codebooks(x)
        q.eval()
        with torch.no_grad():
            recon = q(x[None], torch.tensor([x.shape[0]])).quantized[0]
        return float(((recon[:, 4] > 0).long() == label).float().mean())

    plain, whitened = label_accuracy(0.0), label_accuracy(1.0)
    assert plain < 0.7 and whitened > 0.9, (plain, whitened)


def test_projection_whitening_options_are_checked():
    with pytest.raises(ConfigError, match="projection_whitening must be in"):
        make_rvq(projection_whitening=1.5)
    with pytest.raises(ConfigError, match="projection_init: pca"):
        make_rvq(projection_init="keep", projection_whitening=0.5)


@pytest.mark.parametrize("trainable", [True, False])
def test_projection_trainable_decides_whether_training_moves_the_projections(trainable):
    data = subspace_clusters(rank=12)
    q = make_rvq(num_quantizers=2, codebook_dim=4, projection_whitening=0.5, projection_trainable=trainable)
    q.init_codebooks(data)
    before = [p.detach().clone() for p in (q.rvq.project_in.weight, q.rvq.project_out.weight)]
    opt = torch.optim.Adam(q.parameters(), lr=1e-2)
    for step in range(5):
        x, lengths = batch_of(data, step, B=8)
        out = q(x, lengths)
        loss = (out.quantized - x).pow(2).mean() + out.loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = (q.rvq.project_in.weight, q.rvq.project_out.weight)
    moved = [not torch.equal(a, b) for a, b in zip(before, after)]
    assert moved == [trainable, trainable]
