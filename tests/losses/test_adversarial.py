import math

import pytest
import torch

from t2i.losses.adversarial import (discriminator_loss, discriminator_loss_from_logits,
                                    generator_adversarial_loss, generator_loss_from_logits)
from t2i.losses.kl import kl_loss
from t2i.models.discriminator import StageDiscriminator


def bce_real(xs):  # mean of -log sigmoid(x), by hand
    return sum(-math.log(1 / (1 + math.exp(-x))) for x in xs) / len(xs)


def bce_fake(xs):  # mean of -log(1 - sigmoid(x))
    return sum(-math.log(1 - 1 / (1 + math.exp(-x))) for x in xs) / len(xs)


CR, CF, CW, UR, UF = [0.5, -1.0, 2.0], [0.3, -0.2, 1.5], [-0.7, 0.1], [1.2, 0.0, -0.4], [-2.0, 0.8, 0.25]
t = torch.tensor


def test_discriminator_loss_attngan_vs_hand_computation():
    out = discriminator_loss_from_logits(t(CR), t(CF), t(CW), t(UR), t(UF))
    # AttnGAN: errD = (real_errD + cond_real_errD) / 2 + (fake_errD + cond_fake_errD + cond_wrong_errD) / 3
    expected = (bce_real(UR) + bce_real(CR)) / 2 + (bce_fake(UF) + bce_fake(CF) + bce_fake(CW)) / 3
    assert out.total.item() == pytest.approx(expected, rel=1e-6)
    assert out.cond_wrong.item() == pytest.approx(bce_fake(CW), rel=1e-6)
    no_uncond = discriminator_loss_from_logits(t(CR), t(CF), t(CW))
    assert no_uncond.total.item() == pytest.approx(bce_real(CR) + (bce_fake(CF) + bce_fake(CW)) / 2, rel=1e-6)
    assert set(out.logs("loss_d0")) == {"loss_d0", "loss_d0/cond_real", "loss_d0/cond_fake", "loss_d0/cond_wrong",
                                        "loss_d0/uncond_real", "loss_d0/uncond_fake"}


def test_discriminator_loss_stackgan2_and_hinge_vs_hand_computation():
    UW = [0.9, -0.3, 0.4]
    out = discriminator_loss_from_logits(t(CR), t(CF), t(CW), t(UR), t(UF), t(UW), scheme="stackgan2",
                                         uncond_weight=0.5)
    expected = (bce_real(CR) + 0.5 * bce_real(UR)) + (bce_fake(CW) + 0.5 * bce_real(UW)) \
        + (bce_fake(CF) + 0.5 * bce_fake(UF))
    assert out.total.item() == pytest.approx(expected, rel=1e-6)

    def hinge_real(xs):
        return sum(max(0, 1 - x) for x in xs) / len(xs)

    def hinge_fake(xs):
        return sum(max(0, 1 + x) for x in xs) / len(xs)

    out = discriminator_loss_from_logits(t(CR), t(CF), t(CW), t(UR), t(UF), loss="hinge")
    expected = (hinge_real(UR) + hinge_real(CR)) / 2 + (hinge_fake(UF) + hinge_fake(CF) + hinge_fake(CW)) / 3
    assert out.total.item() == pytest.approx(expected, rel=1e-6)
    assert generator_loss_from_logits(t(CF), t(UF), loss="hinge").item() == pytest.approx(
        -sum(CF) / 3 - sum(UF) / 3, rel=1e-6)


def test_generator_loss_vs_hand_computation():
    assert generator_loss_from_logits(t(CF), t(UF)).item() == pytest.approx(bce_real(CF) + bce_real(UF), rel=1e-6)
    assert generator_loss_from_logits(t(CF)).item() == pytest.approx(bce_real(CF), rel=1e-6)
    with pytest.raises(ValueError, match="bce, hinge"):
        generator_loss_from_logits(t(CF), loss="wgan")


@pytest.fixture
def disc():
    torch.manual_seed(0)
    return StageDiscriminator(32, ndf=2, cond_dim=4).eval()


def test_discriminator_loss_pairs_as_the_reference(disc):
    real, fake, cond = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32, requires_grad=True), torch.randn(4, 4)
    out = discriminator_loss(disc, real, fake, cond)
    real_c, fake_c = disc.encode(real), disc.encode(fake)
    wrong = torch.stack([disc.cond_logits(real_c[i:i + 1], cond[i + 1:i + 2])[0] for i in range(3)])  # i with i+1
    expected = discriminator_loss_from_logits(disc.cond_logits(real_c, cond), disc.cond_logits(fake_c, cond), wrong,
                                              disc.uncond_logits(real_c), disc.uncond_logits(fake_c))
    torch.testing.assert_close(out.total, expected.total)
    out.total.backward()
    assert fake.grad is None  # fake images are detached for the D update
    wrong_cond = torch.randn(4, 4)
    explicit = discriminator_loss(disc, real, fake, cond, wrong_cond=wrong_cond)
    torch.testing.assert_close(explicit.cond_wrong.detach(),
                               torch.nn.functional.softplus(disc.cond_logits(real_c, wrong_cond)).mean().detach())
    s2 = discriminator_loss(disc, real, fake, cond, wrong_images=real.flip(0), scheme="stackgan2")
    assert s2.uncond_wrong is not None
    with pytest.raises(ValueError, match="wrong_images"):
        discriminator_loss(disc, real, fake, cond, scheme="stackgan2")


def test_generator_adversarial_loss_sums_stages(disc):
    torch.manual_seed(1)
    d64 = StageDiscriminator(64, ndf=2, cond_dim=4, uncond=False).eval()
    fakes = [torch.randn(2, 3, 32, 32, requires_grad=True), torch.randn(2, 3, 64, 64, requires_grad=True)]
    cond = torch.randn(2, 4)
    total, per_stage = generator_adversarial_loss([disc, d64], fakes, cond)
    c0 = disc.encode(fakes[0])
    s0 = generator_loss_from_logits(disc.cond_logits(c0, cond), disc.uncond_logits(c0))
    s1 = generator_loss_from_logits(d64.cond_logits(d64.encode(fakes[1]), cond))
    torch.testing.assert_close(per_stage[0], s0)
    torch.testing.assert_close(total, s0 + s1)
    total.backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in fakes)


def test_losses_under_bf16_autocast(disc):
    real, fake, cond = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32), torch.randn(2, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = discriminator_loss(disc, real, fake, cond)
        total, _ = generator_adversarial_loss([disc], [fake], cond)
    assert out.total.dtype == total.dtype == torch.float32 and torch.isfinite(out.total)


def test_kl_loss_closed_form():
    torch.manual_seed(0)
    mu, logvar = torch.randn(5, 3), torch.randn(5, 3)
    per_element = 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar)  # KL(N(mu, s^2) || N(0, 1))
    torch.testing.assert_close(kl_loss(mu, logvar), per_element.mean())
    normal = torch.distributions.Normal
    reference = torch.distributions.kl_divergence(normal(mu, (0.5 * logvar).exp()), normal(0.0, 1.0)).mean()
    torch.testing.assert_close(kl_loss(mu, logvar), reference)
    assert kl_loss(torch.zeros(2, 3), torch.zeros(2, 3)).item() == 0
