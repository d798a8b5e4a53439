"""Parameter counts at the released configurations equal the reference implementations'.

The reference counts are computed here independently, layer by layer, from the reference definitions
(AttnGAN ``code/model.py`` + ``GlobalAttention.py``; StackGAN++ ``code/model.py``; StackGAN-Pytorch
``code/model.py``), with ``conv(i, o, k) = i*o*k*k`` (+o with bias; the references' 3x3/4x4 stride convs
have bias=False, only the 4x4 logit convs keep it), ``bn(c) = 2c``, ``linear(i, o) = i*o`` (+o with bias),
and GLU blocks convolving to twice their output width. The totals are also pinned as numbers.

Released configurations:
* AttnGAN birds ``cfg/bird_attn2.yml``: GF_DIM 32, DF_DIM 64, Z_DIM 100, CONDITION_DIM 100 (default),
  R_NUM 2, EMBEDDING_DIM 256, BRANCH_NUM 3.
* AttnGAN COCO ``cfg/coco_attn2.yml``: GF_DIM 48, DF_DIM 96, R_NUM 3, otherwise as birds.
* StackGAN++ birds ``cfg/birds_3stages.yml``: GF_DIM 64, DF_DIM 64, EMBEDDING_DIM (CA) 128, Z_DIM 100,
  R_NUM 2, TEXT.DIMENSION 1024.
* StackGAN v1 (StackGAN-Pytorch ``miscc/config.py`` defaults, the birds setting): GF_DIM 128, DF_DIM 64,
  CONDITION_DIM 128, Z_DIM 100, R_NUM 4, TEXT.DIMENSION 1024; ``STAGE2_G`` contains ``STAGE1_G``.
"""

import pytest
import torch

from t2i.models.discriminator import StageDiscriminator, build_discriminators
from t2i.models.generator import MultiStageGenerator


def conv(i, o, k, bias=False):
    return i * o * k * k + (o if bias else 0)


def bn(c):
    return 2 * c


def linear(i, o, bias=False):
    return i * o + (o if bias else 0)


def count(module):
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------- reference formulas: shared D parts
def encode_image_by_16times(ndf):
    return (conv(3, ndf, 4) + conv(ndf, 2 * ndf, 4) + bn(2 * ndf) + conv(2 * ndf, 4 * ndf, 4) + bn(4 * ndf)
            + conv(4 * ndf, 8 * ndf, 4) + bn(8 * ndf))


def down_block(i, o):  # downBlock
    return conv(i, o, 4) + bn(o)


def block3x3_leaky(i, o):  # Block3x3_leakRelu
    return conv(i, o, 3) + bn(o)


def d_net(res, ndf, nef, uncond=True):
    """AttnGAN / StackGAN++ D_NET64/128/256 (StackGAN v1 STAGE1_D / STAGE2_D are the same layers)."""
    n = encode_image_by_16times(ndf)
    if res >= 128:
        n += down_block(8 * ndf, 16 * ndf)
    if res == 128:
        n += block3x3_leaky(16 * ndf, 8 * ndf)
    if res == 256:
        n += down_block(16 * ndf, 32 * ndf) + block3x3_leaky(32 * ndf, 16 * ndf) + block3x3_leaky(16 * ndf, 8 * ndf)
    n += block3x3_leaky(8 * ndf + nef, 8 * ndf) + conv(8 * ndf, 1, 4, bias=True)  # COND_DNET / jointConv+logits
    if uncond:
        n += conv(8 * ndf, 1, 4, bias=True)  # UNCOND_DNET / uncond_logits
    return n


# ---------------------------------------------------------------- reference formulas: generators
def up_block_glu(i, o):
    return conv(i, 2 * o, 3) + bn(2 * o)


def res_block_glu(c):
    return conv(c, 2 * c, 3) + bn(2 * c) + conv(c, c, 3) + bn(c)


def init_stage_g(ngf16, in_dim):  # INIT_STAGE_G(ngf * 16)
    n = linear(in_dim, ngf16 * 16 * 2) + bn(ngf16 * 16 * 2)
    for k in range(4):
        n += up_block_glu(ngf16 >> k, ngf16 >> (k + 1))
    return n


def get_image_g(c):
    return conv(c, 3, 3)


def attngan_g(ngf, nz, ncf, nef, r_num, branches=3):
    n = linear(nef, 4 * ncf, bias=True)  # CA_NET
    n += init_stage_g(16 * ngf, nz + ncf) + get_image_g(ngf)
    for _ in range(branches - 1):  # NEXT_STAGE_G: ATT_NET conv_context, ResBlocks at 2ngf, upBlock
        n += conv(nef, ngf, 1) + r_num * res_block_glu(2 * ngf) + up_block_glu(2 * ngf, ngf) + get_image_g(ngf)
    return n


def stackgan2_g(ngf, nz, ef, t_dim, r_num):
    n = linear(t_dim, 4 * ef, bias=True) + init_stage_g(16 * ngf, nz + ef) + get_image_g(ngf)
    for c in (ngf, ngf // 2):  # NEXT_STAGE_G(c): Block3x3_relu(c + ef, c), ResBlocks(c), upBlock(c, c/2)
        n += conv(c + ef, 2 * c, 3) + bn(2 * c) + r_num * res_block_glu(c) + up_block_glu(c, c // 2)
        n += get_image_g(c // 2)
    return n


def up_block_relu(i, o):
    return conv(i, o, 3) + bn(o)


def stackgan1_stage1_g(gf, nz, ef, t_dim):
    ngf = gf * 8
    n = linear(t_dim, 2 * ef, bias=True)  # CA_NET (ReLU form)
    n += linear(nz + ef, ngf * 16) + bn(ngf * 16)
    for k in range(4):
        n += up_block_relu(ngf >> k, ngf >> (k + 1))
    return n + conv(ngf // 16, 3, 3)


def stackgan1_stage2_g(gf, nz, ef, t_dim, r_num):
    n = stackgan1_stage1_g(gf, nz, ef, t_dim)  # STAGE2_G holds STAGE1_G
    n += linear(t_dim, 2 * ef, bias=True)
    n += conv(3, gf, 3) + conv(gf, 2 * gf, 4) + bn(2 * gf) + conv(2 * gf, 4 * gf, 4) + bn(4 * gf)  # encoder
    n += conv(ef + 4 * gf, 4 * gf, 3) + bn(4 * gf)  # hr_joint
    n += r_num * 2 * (conv(4 * gf, 4 * gf, 3) + bn(4 * gf))  # ResBlock (ReLU form)
    for i, o in ((4 * gf, 2 * gf), (2 * gf, gf), (gf, gf // 2), (gf // 2, gf // 4)):
        n += up_block_relu(i, o)
    return n + conv(gf // 4, 3, 3)


# ---------------------------------------------------------------- pinned numbers (from the formulas above)
PINNED = {
    "attngan_birds_G": 7_084_592,
    "attngan_birds_D64": 6_313_730,
    "attngan_birds_D128": 19_424_002,
    "attngan_birds_D256": 71_858_946,
    "attngan_coco_G": 13_811_456,
    "attngan_coco_D64": 13_304_450,
    "attngan_coco_D128": 42_800_258,
    "attngan_coco_D256": 160_774_274,
    "stackgan2_birds_G": 21_239_696,
    "stackgan2_birds_D64": 5_723_906,
    "stackgan2_birds_D128": 18_834_178,
    "stackgan2_birds_D256": 71_269_122,
    "stackgan1_birds_G1": 10_301_248,
    "stackgan1_birds_G2": 36_591_328,
    "stackgan1_birds_D1": 5_715_713,
    "stackgan1_birds_D2": 71_269_122,
}


def reference_counts():
    ref = {"attngan_birds_G": attngan_g(32, 100, 100, 256, 2), "attngan_coco_G": attngan_g(48, 100, 100, 256, 3),
           "stackgan2_birds_G": stackgan2_g(64, 100, 128, 1024, 2),
           "stackgan1_birds_G1": stackgan1_stage1_g(128, 100, 128, 1024),
           "stackgan1_birds_G2": stackgan1_stage2_g(128, 100, 128, 1024, 4),
           "stackgan1_birds_D1": d_net(64, 64, 128, uncond=False),
           "stackgan1_birds_D2": d_net(256, 64, 128, uncond=True)}
    for res in (64, 128, 256):
        ref[f"attngan_birds_D{res}"] = d_net(res, 64, 256)
        ref[f"attngan_coco_D{res}"] = d_net(res, 96, 256)
        ref[f"stackgan2_birds_D{res}"] = d_net(res, 64, 128)
    return ref


def test_formulas_give_pinned_numbers():
    assert reference_counts() == PINNED


def ours():
    got = {
        "attngan_birds_G": MultiStageGenerator(["init", "attention", "attention"], ngf=32, z_dim=100, c_dim=100,
                                               sent_dim=256, word_dim=256, res_blocks=2, init="default"),
        "attngan_coco_G": MultiStageGenerator(["init", "attention", "attention"], ngf=48, z_dim=100, c_dim=100,
                                              sent_dim=256, word_dim=256, res_blocks=3, init="default"),
        "stackgan2_birds_G": MultiStageGenerator(["init", "joint", "joint"], ngf=64, z_dim=100, c_dim=128,
                                                 sent_dim=1024, res_blocks=2, init="default"),
        "stackgan1_birds_G1": MultiStageGenerator(["stackgan_stage1"], ngf=128, z_dim=100, c_dim=128, sent_dim=1024,
                                                  ca_activation="relu", init="default"),
        "stackgan1_birds_G2": MultiStageGenerator(["stackgan_stage1", "stackgan_stage2"], ngf=128, z_dim=100,
                                                  c_dim=128, sent_dim=1024, res_blocks=4, ca_activation="relu",
                                                  init="default"),
    }
    d1, d2 = build_discriminators([64, 256], ndf=64, cond_dim=128, uncond=[False, True], init="default")
    got["stackgan1_birds_D1"], got["stackgan1_birds_D2"] = d1, d2
    for res in (64, 128, 256):
        got[f"attngan_birds_D{res}"] = StageDiscriminator(res, 64, 256, init="default")
        got[f"attngan_coco_D{res}"] = StageDiscriminator(res, 96, 256, init="default")
        got[f"stackgan2_birds_D{res}"] = StageDiscriminator(res, 64, 128, init="default")
    return got


@pytest.fixture(scope="module")
def built():
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        return {name: count(m) for name, m in ours().items()}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_parameter_count_matches_reference(built, name):
    assert built[name] == PINNED[name], f"{name}: ours {built[name]:,} vs reference {PINNED[name]:,}"
