import pytest
import torch
from torch import nn

from t2i.errors import ConfigError
from t2i.models.discriminator import StageDiscriminator, build_discriminators
from t2i.models.generator import MultiStageGenerator
from t2i.models.layers import DownBlock


@pytest.mark.parametrize("resolution", [32, 64, 128, 256])
@pytest.mark.parametrize("uncond", [True, False])
def test_logit_shapes_every_resolution(resolution, uncond):
    torch.manual_seed(0)
    d = StageDiscriminator(resolution, ndf=2, cond_dim=5, uncond=uncond)
    images = torch.rand(3, 3, resolution, resolution) * 2 - 1
    code = d.encode(images)
    assert code.shape == (3, 16, 4, 4)
    cond_logits, uncond_logits = d(images, torch.randn(3, 5))
    assert cond_logits.shape == (3,)
    assert (uncond_logits.shape == (3,)) if uncond else (uncond_logits is None)
    downs = [m for m in d.encoder if isinstance(m, DownBlock)]
    assert len(downs) == {32: 3, 64: 4, 128: 5, 256: 6}[resolution]
    assert not any(isinstance(m, nn.Sigmoid) for m in d.modules())  # logits, never Sigmoid


def test_cond_logits_match_manual_computation():
    torch.manual_seed(0)
    d = StageDiscriminator(64, ndf=2, cond_dim=5).eval()
    images, cond = torch.randn(3, 3, 64, 64), torch.randn(3, 5)
    code = d.encode(images)
    tiled = cond.view(3, 5, 1, 1).repeat(1, 1, 4, 4)  # the reference's c_code.view(...).repeat(1, 1, 4, 4)
    joint = nn.functional.leaky_relu(d.joint[1](d.joint[0](torch.cat([code, tiled], 1))), 0.2)
    expected = (joint * d.cond_head.weight[0]).sum((1, 2, 3)) + d.cond_head.bias
    torch.testing.assert_close(d.cond_logits(code, cond), expected)
    torch.testing.assert_close(d.uncond_logits(code),
                               (code * d.uncond_head.weight[0]).sum((1, 2, 3)) + d.uncond_head.bias)
    assert not torch.allclose(d.cond_logits(code, cond), d.cond_logits(code, cond.flip(0)))


def test_gradients_reach_every_parameter_and_the_images():
    torch.manual_seed(0)
    d = StageDiscriminator(128, ndf=2, cond_dim=5)
    images = torch.randn(2, 3, 128, 128, requires_grad=True)
    cond_logits, uncond_logits = d(images, torch.randn(2, 5))
    (cond_logits.sum() + uncond_logits.sum()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in d.parameters())
    assert images.grad.abs().sum() > 0


def test_errors():
    with pytest.raises(ConfigError, match="power of two"):
        StageDiscriminator(96, 2, 5)
    with pytest.raises(ConfigError, match=">= 32"):
        StageDiscriminator(16, 2, 5)
    d = StageDiscriminator(64, 2, 5, uncond=False)
    with pytest.raises(ValueError, match="64 px"):
        d.encode(torch.randn(1, 3, 128, 128))
    with pytest.raises(RuntimeError, match="uncond=False"):
        d.uncond_logits(torch.randn(1, 16, 4, 4))
    with pytest.raises(ConfigError, match="ndf has 3 entries"):
        build_discriminators([64, 128], ndf=[2, 2, 2], cond_dim=5)


def test_build_discriminators_follows_generator_resolutions():
    gen = MultiStageGenerator(["init", "attention"], ngf=4, z_dim=3, c_dim=3, sent_dim=4, word_dim=4,
                              base_size=32, res_blocks=1)
    ds = build_discriminators(gen.resolutions, ndf=2, cond_dim=4, uncond=[False, True])
    assert [d.resolution for d in ds] == [32, 64] and [d.has_uncond for d in ds] == [False, True]


def test_spectral_norm_and_no_batch_norm_options():
    torch.manual_seed(0)
    d = StageDiscriminator(64, 4, cond_dim=6, spectral_norm=True, batch_norm=False)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in d.modules())
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(torch.nn.utils.parametrize.is_parametrized(m, "weight") for m in convs)
    d.train()
    for _ in range(30):  # power iterations converge: the effective weight has spectral norm 1
        d(torch.randn(2, 3, 64, 64), torch.randn(2, 6))
    w = convs[1].weight.flatten(1)
    assert torch.linalg.matrix_norm(w, 2).item() == pytest.approx(1.0, abs=0.05)
    plain = StageDiscriminator(64, 4, cond_dim=6)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules()) > 0
    assert sum(p.numel() for p in plain.parameters()) > sum(p.numel() for p in d.parameters())  # BN affine gone


def test_minibatch_std_channel_matches_progan():
    from t2i.models.discriminator import minibatch_std
    torch.manual_seed(0)
    x = torch.randn(8, 3, 2, 2)
    out = minibatch_std(x, 4)
    assert out.shape == (8, 4, 2, 2)
    torch.testing.assert_close(out[:, :3], x)
    groups = x.reshape(4, 2, 3, 2, 2)  # sample i is in group i % 2 (ProGAN's reshape(G, -1, C, H, W))
    expected = groups.std(dim=0, unbiased=False).mean(dim=(1, 2, 3))
    for i in range(8):
        assert torch.allclose(out[i, 3], expected[i % 2].expand(2, 2), atol=1e-6)
    assert not torch.allclose(expected[0], expected[1])
    # a batch of one repeated image has no spread; a batch of 6 uses groups of 3, the largest divisor <= 4
    assert minibatch_std(x[:1].expand(4, -1, -1, -1), 4)[:, 3].max() < 1e-3
    six = minibatch_std(x[:6], 4)[:, 3, 0, 0]
    torch.testing.assert_close(six[0], x[:6].reshape(3, 2, 3, 2, 2).std(0, unbiased=False).mean(dim=(1, 2, 3))[0])


def test_minibatch_std_discriminator_sees_a_collapsed_batch():
    torch.manual_seed(0)
    d = StageDiscriminator(32, ndf=2, cond_dim=5, minibatch_std=4)
    plain = StageDiscriminator(32, ndf=2, cond_dim=5)
    assert d.joint[0].weight.shape[1] == plain.joint[0].weight.shape[1] + 1
    assert d.uncond_head.weight.shape[1] == plain.uncond_head.weight.shape[1] + 1
    assert set(d.state_dict()) == set(plain.state_dict())
    images, cond = torch.rand(4, 3, 32, 32) * 2 - 1, torch.randn(4, 5)
    assert d.encode(images).shape == (4, 17, 4, 4)
    d.eval()  # BatchNorm with running statistics: a sample's logits depend on the others only through the std
    collapsed = images[:1].expand(4, -1, -1, -1)  # sample 0 alone, then with varied batch mates
    assert not torch.allclose(d(collapsed, cond)[1][0], d(images, cond)[1][0])
    plain.eval()
    torch.testing.assert_close(plain(collapsed, cond)[1][0], plain(images, cond)[1][0])
    cond_logits, uncond_logits = d(images, cond)
    (cond_logits.sum() + uncond_logits.sum()).backward()
    assert all(p.grad is not None for p in d.parameters())
    for bad in (-1, 1.5, True):
        with pytest.raises(ConfigError, match="minibatch_std"):
            StageDiscriminator(32, ndf=2, cond_dim=5, minibatch_std=bad)
