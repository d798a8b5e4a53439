"""DRAW ELBO (Eq. (9)-(12)) against hand computations."""

import math

import pytest
import torch

from t2i.losses.draw import draw_elbo, gaussian_kl
from t2i.models.draw import DRAW


def _hand_bce(x, logits):
    total = 0.0
    for xi, li in zip(x.flatten().tolist(), logits.flatten().tolist()):
        p = 1 / (1 + math.exp(-li))
        total -= xi * math.log(p) + (1 - xi) * math.log(1 - p)
    return total


def test_elbo_hand_computation_standard_prior():
    torch.manual_seed(0)
    x = (torch.rand(2, 1, 3, 2) > 0.5).double()
    logits = torch.randn(2, 1, 3, 2, dtype=torch.float64)
    mu, logvar = torch.randn(2, 4, 3, dtype=torch.float64), torch.randn(2, 4, 3, dtype=torch.float64)
    terms = draw_elbo(x, logits, mu, logvar)
    for b in range(2):
        recon = _hand_bce(x[b], logits[b])
        # DRAW Eq. (11): 1/2 sum_t (mu^2 + sigma^2 - log sigma^2) - T/2, with one T/2 per latent unit
        kl = sum(0.5 * (m ** 2 + math.exp(lv) - lv) - 0.5 for m, lv in zip(mu[b].flatten().tolist(), logvar[b].flatten().tolist()))
        assert terms.recon[b].item() == pytest.approx(recon, rel=1e-6)
        assert terms.kl[b].item() == pytest.approx(kl, rel=1e-6)
        assert terms.total[b].item() == pytest.approx(recon + kl, rel=1e-6)
    assert terms.loss.item() == pytest.approx(terms.total.mean().item())


def test_gaussian_kl_matches_torch_distributions():
    torch.manual_seed(0)
    mu, logvar, pmu, plogvar = (torch.randn(3, 5, 2, dtype=torch.float64) for _ in range(4))
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(pmu, (0.5 * plogvar).exp())
    expected = torch.distributions.kl_divergence(q, p).flatten(1).sum(1)
    torch.testing.assert_close(gaussian_kl(mu, logvar, pmu, plogvar).double(), expected)
    torch.testing.assert_close(gaussian_kl(mu, logvar, torch.zeros_like(mu), torch.zeros_like(mu)),
                               gaussian_kl(mu, logvar))


def test_gaussian_likelihood():
    x = torch.full((1, 1, 2, 2), 0.25)
    logits = torch.zeros(1, 1, 2, 2)  # mean 0.5
    std = 0.1
    expected = 4 * (0.5 * (0.25 / std) ** 2 + math.log(std) + 0.5 * math.log(2 * math.pi))
    terms = draw_elbo(x, logits, torch.zeros(1, 1, 1), torch.zeros(1, 1, 1), likelihood="gaussian", gaussian_std=std)
    assert terms.recon.item() == pytest.approx(expected, rel=1e-5) and terms.kl.item() == 0
    with pytest.raises(ValueError, match="unknown likelihood"):
        draw_elbo(x, logits, torch.zeros(1, 1, 1), torch.zeros(1, 1, 1), likelihood="poisson")


def test_elbo_of_tiny_draw_model_by_hand():
    """A 1-step non-attentive DRAW on a 2x2 image: rebuild c_T from its weights and score it by hand."""
    torch.manual_seed(0)
    model = DRAW(height=2, width=2, steps=1, z_dim=2, enc_dim=3, dec_dim=3, read_attention=False, write_attention=False)
    x = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    torch.manual_seed(7)
    out = model(x)
    torch.manual_seed(7)
    h0 = torch.zeros(1, 3)
    r = torch.cat([x.flatten(1), (x - 0.5).flatten(1)], 1)  # Eq. (17) with c_0 = 0: x_hat = x - 1/2
    h_enc, _ = model.encoder(torch.cat([r, h0], 1))
    mu, logvar = model.posterior(h_enc).chunk(2, 1)
    z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
    h_dec, _ = model.decoder(z)
    logits = model.writer.linear(h_dec).view(1, 1, 2, 2)  # Eq. (18), c_1 = 0 + write(h_dec)
    recon = _hand_bce(x, logits.detach())
    kl = sum(0.5 * (m ** 2 + math.exp(lv) - lv - 1) for m, lv in zip(mu.flatten().tolist(), logvar.flatten().tolist()))
    terms = draw_elbo(x, out.canvas_logits, out.mu, out.logvar)
    assert terms.total.item() == pytest.approx(recon + kl, rel=1e-5)
