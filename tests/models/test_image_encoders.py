"""DAMSM image encoders: shapes, AttnGAN CNN_ENCODER key compatibility, ImageNet loading and freezing."""

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.inception import Inception3

from t2i.errors import CheckpointError, WeightsError
from t2i.models.image_encoders import InceptionImageEncoder, LightImageEncoder

# Modules AttnGAN's CNN_ENCODER.define_module copies from torchvision's inception_v3, plus its two layers.
REFERENCE_MODULES = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
                     "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                     "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"]


def _reference_state(embed_dim=256, old_format=True):
    """A state dict shaped like image_encoder200.pth (PyTorch 0.3: no BN num_batches_tracked)."""
    torch.manual_seed(0)
    inc = Inception3(aux_logits=False, init_weights=False).state_dict()
    state = {k: v for k, v in inc.items() if k.split(".")[0] in REFERENCE_MODULES}
    if old_format:
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    state["emb_features.weight"] = torch.randn(embed_dim, 768, 1, 1)
    state["emb_cnn_code.weight"] = torch.randn(embed_dim, 2048)
    state["emb_cnn_code.bias"] = torch.randn(embed_dim)
    return state


@pytest.fixture(scope="module")
def inception():
    torch.manual_seed(0)
    return InceptionImageEncoder(embed_dim=16)


def test_inception_shapes_and_keys(inception):
    regions, global_feat = inception.eval()(torch.rand(2, 3, 64, 64) * 2 - 1)
    assert regions.shape == (2, 16, 17, 17) and global_feat.shape == (2, 16)
    own = {k for k in inception.state_dict() if not k.endswith("num_batches_tracked")}
    assert own == set(_reference_state(16))
    assert inception.emb_features.weight.abs().max() <= 0.1 and inception.emb_cnn_code.weight.abs().max() <= 0.1
    # from scratch: the whole trunk trains
    assert all(p.requires_grad for p in inception.parameters())


def test_reference_image_encoder_loads_strictly(inception):
    state = _reference_state(16)
    inception.load_reference_state_dict(state)
    assert torch.equal(inception.emb_cnn_code.bias, state["emb_cnn_code.bias"])
    assert torch.equal(inception.Mixed_7c.branch_pool.conv.weight, state["Mixed_7c.branch_pool.conv.weight"])
    with pytest.raises(CheckpointError, match="embedding size 256") as err:
        inception.load_reference_state_dict(_reference_state(256), "image_encoder200.pth")
    assert "\n" not in str(err.value)
    bad = _reference_state(16)
    bad.pop("Mixed_6e.branch1x1.conv.weight")
    with pytest.raises(CheckpointError, match="missing"):
        inception.load_reference_state_dict(bad)


def test_pretrained_trunk_is_loaded_and_frozen(tmp_path):
    torch.manual_seed(1)
    imagenet = Inception3(aux_logits=True, init_weights=False)
    path = tmp_path / "inception_v3_google.pth"
    torch.save(imagenet.state_dict(), path)
    enc = InceptionImageEncoder(embed_dim=8, pretrained=str(path))
    assert torch.equal(enc.Conv2d_1a_3x3.conv.weight, imagenet.Conv2d_1a_3x3.conv.weight)
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable == {"emb_features.weight", "emb_cnn_code.weight", "emb_cnn_code.bias"}
    enc.train()
    assert not enc.Mixed_6e.training and enc.emb_features.training
    with pytest.raises(WeightsError, match="not found"):
        InceptionImageEncoder(pretrained=str(tmp_path / "missing.pth"))
    torch.save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "wrong.pth")
    with pytest.raises(WeightsError, match="does not fit"):
        InceptionImageEncoder(pretrained=str(tmp_path / "wrong.pth"))


def test_light_encoder_shapes_and_gradients():
    torch.manual_seed(0)
    enc = LightImageEncoder(embed_dim=12, width=4, image_size=64)
    images = torch.rand(3, 3, 64, 64) * 2 - 1
    regions, global_feat = enc(images)
    assert regions.shape == (3, 12, 16, 16) and global_feat.shape == (3, 12)
    (regions.mean() + global_feat.mean()).backward()
    assert all(p.grad is not None for p in enc.parameters())
    # other input sizes are resized to image_size
    assert enc(torch.zeros(2, 3, 128, 128))[0].shape == (2, 12, 16, 16)
    with pytest.raises(ValueError, match="multiple of 16"):
        LightImageEncoder(image_size=60)


def test_trunk_then_project_is_forward_and_trunk_weights_load_strictly(inception):
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    inception.eval()
    with torch.no_grad():
        mixed_6e, pooled = inception.trunk(x)
        assert mixed_6e.shape == (2, 768, 17, 17) and pooled.shape == (2, 2048)
        for a, b in zip(inception.project(mixed_6e, pooled), inception(x)):
            torch.testing.assert_close(a, b)
    # trunk weights with torchvision names (the FID Inception's have them): trunk replaced, heads kept
    torch.manual_seed(3)
    other = Inception3(aux_logits=False, init_weights=True).state_dict()
    heads = inception.emb_cnn_code.weight.clone()
    enc = InceptionImageEncoder(embed_dim=16, freeze_trunk=True)
    enc.emb_cnn_code.weight.data.copy_(heads)
    enc.load_trunk_state_dict(other, "other.pth")
    assert torch.equal(enc.Mixed_6e.branch1x1.conv.weight, other["Mixed_6e.branch1x1.conv.weight"])
    assert torch.equal(enc.emb_cnn_code.weight, heads)
    broken = dict(other)
    broken.pop("Mixed_5b.branch_pool.conv.weight")
    with pytest.raises(WeightsError, match="not an Inception-v3 trunk") as err:
        enc.load_trunk_state_dict(broken, "broken.pth")
    assert "\n" not in str(err.value) and "Mixed_5b.branch_pool.conv.weight" in str(err.value)


def test_folded_channels_last_inception_has_the_same_outputs_and_input_gradients():
    """GANLoss.fast_image_encoder: BasicConv2d BatchNorms folded + NHWC compute the same function (float64)."""
    from t2i.losses.gan import GANLoss

    torch.manual_seed(0)
    encoder = InceptionImageEncoder(embed_dim=8).double()
    with torch.no_grad():  # BatchNorm statistics that are not the identity, so folding has work to do
        for m in encoder.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    loss = GANLoss(image_encoder=encoder, lambda_damsm=1.0)
    plain = loss.image_encoder
    assert loss.fast_image_encoder() == 94  # every BasicConv2d of the trunk
    fast = loss.image_encoder
    assert fast is not plain and any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())
    assert fast.Conv2d_1a_3x3.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert type(fast.Mixed_6e).__name__ == "FastInceptionC" and type(plain.Mixed_6e).__name__ == "InceptionC"
    images = torch.rand(1, 3, 64, 64, dtype=torch.float64) * 2 - 1
    results = []
    for enc, channels_last in ((plain, False), (fast, True)):
        x = images.clone().requires_grad_(True)
        regions, global_feat = enc(x.contiguous(memory_format=torch.channels_last) if channels_last else x)
        (regions.square().mean() + global_feat.square().mean()).backward()
        results.append((regions.detach(), global_feat.detach(), x.grad))
    for a, b in zip(*results):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12 * a.abs().max().item())
    assert not any(p.requires_grad for p in fast.parameters())  # frozen: no weight gradients are built


def test_self_adjoint_pool_has_the_gradient_of_torchs_average_pool():
    """The pool branches' 3x3 average (zero padding in the mean) backpropagates by pooling the gradient."""
    from torch.autograd import gradcheck

    from t2i.models.image_encoders import _BoxPool3x3, fast_pool_branches

    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    assert gradcheck(_BoxPool3x3.apply, (x,))
    grad = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    ours = torch.autograd.grad(_BoxPool3x3.apply(x), x, grad)[0]
    torchs = torch.autograd.grad(F.avg_pool2d(x, 3, 1, 1), x, grad)[0]
    assert torch.allclose(ours, torchs, rtol=1e-12, atol=1e-14)
    # a pool that does not count the padding is not self-adjoint: the check above would catch the swap
    other = torch.autograd.grad(F.avg_pool2d(x, 3, 1, 1, count_include_pad=False), x, grad)[0]
    assert not torch.allclose(ours, other, atol=1e-3)
    encoder = InceptionImageEncoder(embed_dim=8)
    keys = list(encoder.state_dict())
    assert fast_pool_branches(encoder) == 9  # Mixed_5b-d, 6b-e, 7b-c
    assert list(encoder.state_dict()) == keys and fast_pool_branches(encoder) == 0  # already fast
