"""TASLM heads, fusions and the frozen codebook: shapes, losses, KL formula, initial fusion."""

import pytest
import torch
import torch.nn.functional as F

from taste_toolkit.registry import build
from taste_toolkit.taslm.codebook import SpeechCodebook
from taste_toolkit.plugins.lm_head.taste_embedding import gaussian_kl


@pytest.fixture
def codebook():
    torch.manual_seed(0)
    return SpeechCodebook(torch.randn(3, 8, 5))


def test_fusions_start_near_text_only():
    torch.manual_seed(0)
    text, speech = torch.randn(2, 4, 16), torch.randn(2, 4, 6)
    ws = build("fusion", "weighted_sum", {}, text_dim=16, speech_dim=6)
    assert torch.allclose(ws.weights, torch.tensor([0.982, 0.018]), atol=1e-3)
    gated = build("fusion", "gated", {}, text_dim=16, speech_dim=6)
    for f in (ws, gated):
        out = f(text, speech)
        assert out.shape == text.shape
        # Mostly text at init: the speech contribution is small relative to the text.
        assert (out - text).norm() / text.norm() < 0.1
    ws.logits.data = torch.tensor([0.0, 0.0])
    assert torch.allclose(ws(text, speech), 0.5 * text + 0.5 * ws.proj(speech))


def test_token_head_shapes_and_weighted_loss(codebook):
    torch.manual_seed(0)
    head = build("lm_head", "taste_token", {"num_quantizers": 3, "codebook_size": 8, "layer_weights": [3, 2, 1]},
                 input_dim=10)
    logits = head(torch.randn(2, 5, 10))
    assert logits.shape == (2, 5, 3, 8)
    targets = torch.full((2, 5, 3), -1)
    targets[0, 1] = torch.tensor([1, 2, 3])
    targets[1, 4] = torch.tensor([7, 0, 5])
    loss, stats = head.loss(logits, targets)
    sel, tgt = logits[targets[..., 0] >= 0], targets[targets[..., 0] >= 0]
    manual = sum(w * F.cross_entropy(sel[:, r], tgt[:, r]) for r, w in enumerate([0.5, 1 / 3, 1 / 6]))
    assert torch.allclose(loss, manual) and stats["count"] == 2
    ll = head.log_likelihood(logits, targets)
    assert ll.shape == (2, 5) and ll[0, 0] == 0 and ll[0, 1] < 0
    assert head.predict(logits).shape == (2, 5, 3)
    empty, stats = head.loss(logits, torch.full((2, 5, 3), -1))
    assert float(empty.detach()) == 0 and stats["count"] == 0
    with pytest.raises(Exception, match="layer_weights"):
        build("lm_head", "taste_token", {"num_quantizers": 3, "layer_weights": [1, 1]}, input_dim=4)


def test_gaussian_kl_matches_torch_distributions():
    torch.manual_seed(0)
    mu, logvar, target = torch.randn(7, 5), torch.randn(7, 5), torch.randn(7, 5)
    for prior_std in (1.0, 0.3):
        ours = gaussian_kl(mu, logvar, target, prior_std)
        ref = torch.distributions.kl_divergence(torch.distributions.Normal(mu, (0.5 * logvar).exp()),
                                                torch.distributions.Normal(target, torch.full_like(target, prior_std)))
        assert torch.allclose(ours, ref, atol=1e-5)
    assert torch.allclose(gaussian_kl(target, torch.zeros_like(target), target), torch.zeros_like(target))


def test_embedding_head_loss_and_mean_inference(codebook):
    torch.manual_seed(0)
    head = build("lm_head", "taste_embedding", {"num_quantizers": 3, "codebook_size": 8, "logvar": "linear"},
                 input_dim=10, embedding_dim=5)
    hidden = torch.randn(2, 4, 10)
    mu, logvar = head(hidden)
    assert mu.shape == logvar.shape == (2, 4, 5)
    targets = torch.full((2, 4, 3), -1)
    targets[0, 2] = torch.tensor([1, 2, 3])
    head.eval()
    loss, stats = head.loss((mu, logvar), targets, codebook)
    t = codebook.embed(targets[0, 2], normalized=True)
    expected = F.mse_loss(mu[0, 2], t) + gaussian_kl(mu[0, 2], logvar[0, 2], t).sum()
    assert torch.allclose(loss, expected, atol=1e-5) and stats["count"] == 1
    # Inference re-quantizes the mean; sampling is opt-in.
    assert torch.equal(head.predict((mu, logvar), codebook), codebook.quantize(mu, normalized=True))
    g = torch.Generator().manual_seed(1)
    sampled = head.predict((mu, logvar + 4), codebook, sample=True, generator=g)
    assert not torch.equal(sampled, codebook.quantize(mu, normalized=True))
    # A mean exactly on a code sum decodes to that code.
    code = torch.tensor([[1, 2, 3]])
    assert torch.equal(codebook.quantize(codebook.embed(code)), code)
    assert torch.equal(codebook.quantize(codebook.embed(code, normalized=True), normalized=True), code)
    # Normalized code sums have unit RMS over uniformly drawn codes, whatever the code-space scale.
    big = SpeechCodebook(codebook.codebooks * 100)
    every = torch.cartesian_prod(*[torch.arange(8)] * 3)
    assert big.embed(every, normalized=True).pow(2).mean().sqrt() == pytest.approx(1.0, rel=0.1)


def test_codebook_matches_rvq_decode():
    torch.manual_seed(0)
    q = build("quantizer", "rvq", {"num_quantizers": 2, "codebook_size": 16, "codebook_dim": 4, "kmeans_iters": 2,
                                   "quantize_dropout": False}, input_dim=12)
    q.train()(torch.randn(1, 40, 12), torch.tensor([40]))
    q.eval()
    cb = SpeechCodebook.from_quantizer(q)
    x = torch.randn(1, 6, 12)
    codes = q.encode(x, torch.tensor([6]))
    assert torch.allclose(q.rvq.project_out(cb.embed(codes)), q.decode(codes), atol=1e-5)
    # The code-space re-quantization reproduces the RVQ's own codes for its own projected inputs.
    assert torch.equal(cb.quantize(q.rvq.project_in(x)), codes)
    with pytest.raises(Exception, match="discrete RVQ codes"):
        SpeechCodebook.from_quantizer(build("quantizer", "identity", {"input_dim": 4}))
