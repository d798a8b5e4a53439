"""The recipe levers of GANLoss: DF-GAN's matching-aware gradient penalty and DiffAugment on D's inputs."""

import pytest
import torch
from torch import nn

from t2i.losses.gan import GANLoss, matching_aware_gradient_penalty
from t2i.models.discriminator import StageDiscriminator


class LinearD(nn.Module):
    """D(x, e) = w.x + v.e: its input gradient is (w, v) everywhere, so MA-GP is known in closed form."""

    has_uncond = False

    def __init__(self, pixels, cond_dim):
        super().__init__()
        self.w = nn.Parameter(torch.full((pixels,), 0.5))
        self.v = nn.Parameter(torch.full((cond_dim,), 2.0))

    def encode(self, images):
        return images.flatten(1)

    def cond_logits(self, code, cond):
        return code @ self.w + cond @ self.v


def test_ma_gp_equals_the_closed_form_for_a_linear_discriminator():
    d = LinearD(3 * 4 * 4, 5)
    real, cond = torch.randn(6, 3, 4, 4), torch.randn(6, 5)
    gp = matching_aware_gradient_penalty(d, real, cond, power=6)
    norm2 = 48 * 0.25 + 5 * 4.0  # ||w||^2 + ||v||^2 = 32
    torch.testing.assert_close(gp, torch.tensor(norm2 ** 3))
    gp.backward()  # differentiable in D's parameters: d/dw (||w||^2+||v||^2)^3 = 3 * 32^2 * 2w
    torch.testing.assert_close(d.w.grad, torch.full((48,), 3 * 32.0 ** 2 * 2 * 0.5))


def test_ma_gp_is_added_to_the_discriminator_loss_with_its_weight():
    torch.manual_seed(0)
    d = StageDiscriminator(32, 4, cond_dim=6, batch_norm=False, spectral_norm=True)
    real, fake, cond = torch.rand(4, 3, 32, 32) * 2 - 1, torch.rand(4, 3, 32, 32) * 2 - 1, torch.randn(4, 6)
    plain, _ = GANLoss(adversarial="hinge").discriminator(d, real, fake, cond, None, torch.arange(4))
    total, logs = GANLoss(adversarial="hinge", ma_gp_weight=2.0).discriminator(d, real, fake, cond, None,
                                                                                 torch.arange(4))
    gp = matching_aware_gradient_penalty(d, real, cond)
    torch.testing.assert_close(total, plain + 2.0 * gp)
    assert logs["ma_gp"] == pytest.approx(gp.item(), rel=1e-3) and logs["total"] == pytest.approx(total.item(), rel=1e-3)
    with pytest.raises(ValueError, match="ma_gp_weight"):
        GANLoss(ma_gp_weight=-1)


def test_augmentation_reaches_d_inputs_in_both_steps_and_gradients_reach_g():
    seen = []

    class Recorder(LinearD):
        def encode(self, images):
            seen.append(images)
            return images.flatten(1)

    d = Recorder(3 * 16 * 16, 5)
    real = torch.ones(8, 3, 16, 16)
    fake = torch.ones(8, 3, 16, 16, requires_grad=True)
    loss = GANLoss(adversarial="hinge", augment="cutout", kl_weight=0.0)
    loss.discriminator(d, real, fake, torch.randn(8, 5), torch.randn(8, 5), torch.arange(8))
    assert len(seen) == 2 and all((x == 0).any() for x in seen)  # real and fake both cut out
    from t2i.structures import GeneratorOutput
    out = GeneratorOutput(images=[fake])
    total, _ = loss.generator(out, [d], torch.randn(8, 5), None, None, [0])
    total.backward()
    assert (seen[-1] == 0).any() and fake.grad.abs().sum() > 0
    assert (fake.grad == 0).any()  # the cut-out pixels get no gradient: the augmentation sits between G and D


def test_mode_seeking_loss_is_the_inverse_of_image_over_noise_distance():
    from t2i.losses.gan import mode_seeking_loss

    a, b = torch.zeros(2, 3, 4, 4), torch.full((2, 3, 4, 4), 0.5)
    za, zb = torch.zeros(2, 6), torch.full((2, 6), 2.0)
    torch.testing.assert_close(mode_seeking_loss(a, b, za, zb), torch.tensor(1 / (0.25 + 1e-5)))
    # images that ignore the noise cost the most: 1 / eps
    torch.testing.assert_close(mode_seeking_loss(a, a.clone(), za, zb), torch.tensor(1e5))
    with pytest.raises(ValueError, match="mode_seeking_weight"):
        GANLoss(mode_seeking_weight=-0.5)
