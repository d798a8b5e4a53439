import pytest
import torch
from torch import nn

from t2i.errors import ConfigError
from t2i.models.conditioning import ConditioningAugmentation
from t2i.models.generator import MultiStageGenerator
from t2i.models.stages import STAGE_KINDS, GeneratorStage, StageOutput, register_stage
from t2i.structures import TextEmbedding

B, T, WORD, SENT = 2, 5, 12, 10


def text(lengths=(5, 3), seed=0):
    g = torch.Generator().manual_seed(seed)
    words = torch.randn(B, T, WORD, generator=g)
    pad_mask = torch.arange(T)[None, :] >= torch.tensor(lengths)[:, None]
    return TextEmbedding(words=words, sentence=torch.randn(B, SENT, generator=g), pad_mask=pad_mask)


def make(stages, **kw):
    args = dict(ngf=4, z_dim=6, c_dim=5, sent_dim=SENT, word_dim=WORD, res_blocks=1)
    args.update(kw)
    torch.manual_seed(0)
    return MultiStageGenerator(stages, **args)


@pytest.mark.parametrize("stages, kw, sizes, channels", [
    (["init", "attention", "attention"], {}, [64, 128, 256], [4, 4, 4]),          # AttnGAN
    (["init", "joint", "joint"], {"ngf": 8}, [64, 128, 256], [8, 4, 2]),          # StackGAN++
    (["stackgan_stage1", "stackgan_stage2"], {"ngf": 8, "ca_activation": "relu"}, [64, 256], [4, 2]),  # StackGAN
    (["init", "attention"], {"base_size": 32, "res_blocks": [0, 2]}, [32, 64], [4, 4]),  # CPU preset shape
])
def test_stage_output_sizes(stages, kw, sizes, channels):
    gen = make(stages, **kw)
    assert gen.resolutions == sizes
    assert [s.out_channels for s in gen.stages] == channels
    out = gen(torch.randn(B, 6), text())
    assert [tuple(im.shape) for im in out.images] == [(B, 3, s, s) for s in sizes]
    assert all(im.abs().max() <= 1 for im in out.images)  # tanh
    assert out.mu.shape == out.logvar.shape == (B, 5)
    n_attn = stages.count("attention")
    assert len(out.attn_maps) == n_attn
    for attn, size in zip(out.attn_maps, sizes[len(sizes) - n_attn - 1:]):
        assert attn.shape == (B, T, size, size)


def test_attention_maps_sum_to_one_and_padding_gets_zero():
    gen = make(["init", "attention", "attention"], base_size=16).eval()
    out = gen(torch.randn(B, 6), text(lengths=(5, 2)))
    for attn in out.attn_maps:
        torch.testing.assert_close(attn.sum(1), torch.ones(B, *attn.shape[2:]))
        assert torch.all(attn[1, 2:] == 0)  # the second caption has 2 words
        assert torch.all(attn[0] > 0)


def test_attention_stage_matches_loop_over_pixels():
    gen = make(["init", "attention"], base_size=8).eval()
    stage = gen.stages[1]
    t = text(lengths=(5, 3))
    h = torch.randn(B, 4, 8, 8)
    context, attn = stage.attention(h, t.words, t.pad_mask)
    keys = t.words @ stage.attention.project.weight.T  # (B, T, C): e' = U e
    for b in range(B):
        n = int((~t.pad_mask[b]).sum())
        for y, x in [(0, 0), (3, 5), (7, 7)]:
            w = torch.softmax(keys[b, :n] @ h[b, :, y, x], 0)  # AttnGAN Eq. (3)
            torch.testing.assert_close(attn[b, :n, y, x], w)
            torch.testing.assert_close(context[b, :, y, x], w @ keys[b, :n])  # Eq. (2)


def test_gradients_reach_every_parameter():
    gen = make(["init", "attention", "joint"], base_size=16)
    out = gen(torch.randn(B, 6), text())
    (sum(im.mean() for im in out.images) + out.mu.sum() + out.logvar.sum()).backward()
    missing = [n for n, p in gen.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    assert all(p.grad.abs().sum() > 0 for p in gen.parameters())


def test_stackgan_stage2_on_frozen_stage1():
    gen = make(["stackgan_stage1", "stackgan_stage2"], ngf=8, ca_activation="relu", init="normal",
               freeze_stages=[0])
    gen.train()
    assert not gen.stages[0].training and not gen.heads[0].training and gen.stages[1].training
    assert not any(p.requires_grad for p in gen.stages[0].parameters())
    assert not any(p.requires_grad for p in gen.ca.parameters())  # only Stage-I reads the shared CA
    before = gen.stages[0].fc[1].running_mean.clone()
    out = gen(torch.randn(B, 6), text())
    torch.testing.assert_close(gen.stages[0].fc[1].running_mean, before)  # BN statistics frozen too
    out.images[1].mean().backward()
    assert all(p.grad is not None for p in gen.stages[1].parameters())
    # mu/logvar are Stage-II's own conditioning augmentation
    torch.testing.assert_close(out.mu, gen.stages[1].ca.encode(text().sentence)[0])


def test_sample_false_is_deterministic_and_uses_mu():
    gen = make(["init", "attention"], base_size=16).eval()
    z, t = torch.randn(B, 6), text()
    a, b = gen(z, t, sample=False), gen(z, t, sample=False)
    torch.testing.assert_close(a.images[-1], b.images[-1])
    assert not torch.equal(gen(z, t).images[-1], a.images[-1])


@pytest.mark.parametrize("activation, width", [("glu", 4 * 3), ("relu", 2 * 3)])
def test_conditioning_augmentation(activation, width):
    torch.manual_seed(0)
    ca = ConditioningAugmentation(7, 3, activation)
    assert ca.fc.out_features == width and ca.fc.bias is not None
    sent = torch.randn(4000, 7)
    x = ca.fc(sent)
    x = x[:, :6] * torch.sigmoid(x[:, 6:]) if activation == "glu" else torch.relu(x)
    c, mu, logvar = ca(sent)
    torch.testing.assert_close(mu, x[:, :3])
    torch.testing.assert_close(logvar, x[:, 3:])
    eps = (c - mu) / torch.exp(0.5 * logvar)  # reparametrisation: c = mu + sigma * eps, eps ~ N(0, 1)
    assert abs(eps.mean()) < 0.05 and abs(eps.std() - 1) < 0.05
    c0, mu0, _ = ca(sent, sample=False)
    torch.testing.assert_close(c0, mu0)


def test_registry_accepts_a_new_stage_kind():
    @register_stage("test_upsample_image")
    class CopyStage(GeneratorStage):
        makes_image = True

        def __init__(self, in_channels, in_size):
            super().__init__()
            self.out_channels, self.out_size = in_channels, 2 * in_size
            self.gain = nn.Parameter(torch.ones(()))

        @classmethod
        def from_spec(cls, spec):
            return cls(spec.in_channels, spec.in_size)

        def forward(self, features, ctx):
            image = nn.functional.interpolate(ctx.images[-1], scale_factor=2) * self.gain
            return StageOutput(nn.functional.interpolate(features, scale_factor=2), image=image,
                               canvases=image[:, None])

    try:
        gen = make(["init", "test_upsample_image"], base_size=16)
        assert isinstance(gen.heads[1], nn.Identity)
        out = gen(torch.randn(B, 6), text())
        assert gen.resolutions == [16, 32] and out.canvases.shape == (B, 1, 3, 32, 32)
        torch.testing.assert_close(out.images[1], nn.functional.interpolate(out.images[0], scale_factor=2))
    finally:
        STAGE_KINDS.pop("test_upsample_image")


@pytest.mark.parametrize("stages, kw, words", [
    (["init", "attenton"], {}, ["attenton", "known kinds", "attention", "joint"]),
    (["attention", "attention"], {}, ["first stage", "init"]),
    (["init", "init"], {}, ["only the first"]),
    ([], {}, ["empty"]),
    (["init", "attention", "attention"], {"resolutions": [64, 128]}, ["[64, 128, 256]", "[64, 128]"]),
    (["init", "attention"], {"res_blocks": [1, 2, 3]}, ["res_blocks", "3", "2"]),
    (["init", "attention"], {"word_dim": None}, ["word_dim"]),
    (["init"], {"base_size": 48}, ["base_size"]),
    (["init"], {"freeze_stages": [3]}, ["cannot freeze stage 3"]),
])
def test_construction_errors(stages, kw, words):
    with pytest.raises(ConfigError) as info:
        make(stages, **kw)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


@pytest.mark.parametrize("stages, kw", [
    (["init", "attention", "attention"], {"base_size": 16}),                    # AttnGAN
    (["init", "joint"], {"base_size": 16}),                                      # StackGAN++
    (["stackgan_stage1", "stackgan_stage2"], {"ngf": 8, "ca_activation": "relu", "base_size": 16}),
    (["init", "draw"], {"base_size": 16}),                                       # AttnGAN + DRAW stage
])
def test_fold_batchnorm_keeps_outputs_and_removes_every_batchnorm(stages, kw):
    from t2i.models.layers import fold_batchnorm

    gen = make(stages, **kw)
    with torch.no_grad():  # train a little so running statistics and affine parameters are not the defaults
        for m in gen.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.5, 0.5)
        gen.train()
        for _ in range(3):
            gen(torch.randn(4, 6), TextEmbedding(words=torch.randn(4, T, WORD), sentence=torch.randn(4, SENT),
                                                 pad_mask=torch.zeros(4, T, dtype=torch.bool)))
    gen.eval()
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(make(stages, **kw).train())
    z, t = torch.randn(B, 6), text()
    torch.manual_seed(1)
    before = gen(z, t)
    norms = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in gen.modules())
    assert fold_batchnorm(gen) == norms > 0
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in gen.modules())
    torch.manual_seed(1)
    after = gen(z, t)
    for a, b in zip(before.images, after.images):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_fold_batchnorm_refuses_a_batchnorm_without_running_statistics():
    from t2i.models.layers import fold_batchnorm

    block = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False)).eval()
    with pytest.raises(ValueError, match="no running statistics"):
        fold_batchnorm(block)
    linear = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).eval()
    assert fold_batchnorm(linear) == 1 and isinstance(linear[1], nn.Identity)
