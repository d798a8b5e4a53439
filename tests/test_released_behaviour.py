"""Switches that make a converted model or a reproduction run follow the released AttnGAN / StackGAN code."""

import pytest
import torch

from t2i.config import compose
from t2i.losses.gan import GANLoss
from t2i.models.attention import WordAttention
from t2i.models.discriminator import StageDiscriminator
from t2i.recipes.gan import build_loss
from t2i.structures import GeneratorOutput, TextEmbedding


def _released_attention(features, keys, pad_mask):
    """The released GlobalAttentionGeneral, written out: scores [B*Q, T] masked by mask.repeat(queryL, 1)."""
    b, c, h, w = features.shape
    q = h * w
    target = features.reshape(b, c, q).transpose(1, 2)  # (B, Q, C)
    scores = torch.bmm(target, keys.transpose(1, 2)).reshape(b * q, -1)  # (B*Q, T)
    scores = scores.masked_fill(pad_mask.repeat(q, 1), float("-inf"))
    attn = torch.softmax(scores, dim=1).reshape(b, q, -1)
    return torch.bmm(attn, keys).transpose(1, 2).reshape(b, c, h, w), attn


def test_reference_mask_reproduces_the_released_mask_repeat():
    torch.manual_seed(0)
    features, words = torch.randn(3, 4, 2, 3), torch.randn(3, 5, 6)
    lengths = torch.tensor([5, 2, 3])  # different lengths: the quirk shows
    pad_mask = torch.arange(5)[None] >= lengths[:, None]
    released = WordAttention(4, 6, reference_mask=True)
    ours = WordAttention(4, 6)
    ours.load_state_dict(released.state_dict())
    context, attn = released(features, words, pad_mask)
    expected, expected_attn = _released_attention(features, released.project(words), pad_mask)
    torch.testing.assert_close(context, expected)
    torch.testing.assert_close(attn.flatten(2).transpose(1, 2), expected_attn)
    assert not torch.allclose(ours(features, words, pad_mask)[0], context)  # t2i masks per sample
    same = torch.zeros(3, 5, dtype=torch.bool)  # equal lengths: both agree
    torch.testing.assert_close(ours(features, words, same)[0], released(features, words, same)[0])


def test_next_in_batch_mismatch_pairs_image_i_with_caption_i_plus_1():
    torch.manual_seed(1)
    d = StageDiscriminator(32, ndf=2, cond_dim=3).eval()
    real, fake, cond = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32), torch.randn(4, 3)
    text = TextEmbedding(torch.randn(4, 2, 3), cond, torch.zeros(4, 2, dtype=torch.bool))
    wrong = TextEmbedding(torch.randn(4, 2, 3), torch.randn(4, 3), torch.zeros(4, 2, dtype=torch.bool))
    out = GeneratorOutput(images=[fake], attn_maps=[], mu=None, logvar=None)
    released = GANLoss(mismatched="next_in_batch")
    c, w = released.conditions(out, text, wrong, None)
    assert w is None and torch.equal(c, cond)
    total, logs = released.discriminator(d, real, fake, c, w, torch.arange(4))
    code = d.encode(real)
    expected_wrong = torch.nn.functional.binary_cross_entropy_with_logits(d.cond_logits(code[:3], cond[1:]), torch.zeros(3))
    assert logs["cond_wrong"] == pytest.approx(expected_wrong.item(), rel=1e-5)
    default_c, default_w = GANLoss().conditions(out, text, wrong, None)
    assert torch.equal(default_w, wrong.sentence)  # t2i's default: captions of other classes
    with pytest.raises(ValueError, match="other_class or next_in_batch"):
        GANLoss(mismatched="shifted")


def test_gan_recipe_passes_released_eq10_and_mismatched():
    cfg = compose("train", ["model=attngan", "model.released_eq10=true", "model.mismatched=next_in_batch"])
    loss = build_loss(cfg.model, image_encoder=torch.nn.Identity())
    assert loss.damsm.released_eq10 and loss.mismatched == "next_in_batch"
    default = build_loss(compose("train", ["model=attngan"]).model, image_encoder=torch.nn.Identity())
    assert not default.damsm.released_eq10 and default.mismatched == "other_class"
    assert default.lambda_damsm == 20.0  # the CPU preset's measured departure; the paper configurations keep theirs:
    for experiment, lam in (("attngan_cub", 5.0), ("attngan_coco", 50.0)):
        paper = build_loss(compose("train", [f"experiment={experiment}"]).model, image_encoder=torch.nn.Identity())
        assert paper.lambda_damsm == lam
    draw = build_loss(compose("train", ["model=attngan_draw"]).model, image_encoder=torch.nn.Identity())
    assert draw.lambda_damsm == 5.0
