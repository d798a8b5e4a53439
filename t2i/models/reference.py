"""Released reference networks (AttnGAN, StackGAN++, StackGAN v1) mapped onto t2i's modules, key by key.

A released checkpoint is a plain ``state_dict`` of the reference code's module tree (``h_net1.fc.0.weight``,
``img_code_s16.2.weight``, ...). :func:`plan_reference` recognises which reference network a state dict is by
its key names, reads the configuration from its shapes (widths, code sizes, number of stages and residual
blocks), and returns a :class:`ReferencePlan`: the t2i spec to build and, for every tensor of the t2i
module, the reference key it comes from and the exact rearrangement it needs. :func:`convert_state` applies a
plan strictly: every reference key is used, every t2i key is filled, every shape is checked, and a mismatch is
one line naming the first missing or unexpected key and the network the file looks like.

Known networks (key names and shapes from the reference code at the released configurations):

=============================  ===============================================  =================================
reference                      released files                                   t2i module
=============================  ===============================================  =================================
AttnGAN ``G_NET``              ``bird_AttnGAN2.pth``, ``coco_AttnGAN2.pth``      ``MultiStageGenerator([init, attention, ...])``
AttnGAN ``D_NET64/128/256``    training checkpoints ``netD0..2.pth``            ``StageDiscriminator``
AttnGAN ``RNN_ENCODER``        ``text_encoder200.pth`` / ``text_encoder100.pth``  ``RNNTextEncoder``
AttnGAN ``CNN_ENCODER``        ``image_encoder200.pth`` / ``image_encoder100.pth``  ``InceptionImageEncoder``
StackGAN++ ``G_NET``           ``netG_210000.pth`` (birds)                       ``MultiStageGenerator([init, joint, ...])``
StackGAN++ ``D_NET64/128/256``  ``netD0..2.pth``                                 ``StageDiscriminator``
StackGAN ``STAGE1_G/STAGE2_G``  ``netG_epoch_*.pth`` (COCO, Stage-I / Stage-II)  ``MultiStageGenerator([stackgan_stage1(, stackgan_stage2)])``
StackGAN ``STAGE1_D/STAGE2_D``  ``netD_epoch_*.pth``                             ``StageDiscriminator``
=============================  ===============================================  =================================

Where the reference concatenates in another order than t2i, the weights are permuted so the converted module
computes the same function: StackGAN v1's Stage-I ``fc`` reads ``[z, c]`` (t2i: ``[c, z]``); StackGAN++'s
``jointConv`` reads ``[c, h]`` in G and ``[c, x]`` in D (t2i: ``[h, c]``, ``[x, c]``). AttnGAN's word-attention
``conv_context`` (a 1x1 conv) becomes the linear ``attention.project``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from t2i.errors import CheckpointError

Transform = Callable[[Tensor], Tensor]
Shapes = Mapping[str, tuple[int, ...]]

GENERATOR = "t2i.models.generator.MultiStageGenerator"
DISCRIMINATOR = "t2i.models.discriminator.StageDiscriminator"
TEXT_ENCODER = "t2i.models.text_encoders.RNNTextEncoder"
IMAGE_ENCODER = "t2i.models.image_encoders.InceptionImageEncoder"


@dataclass
class ReferencePlan:
    """How a reference state dict becomes a t2i module.

    Attributes:
        network: the reference network, e.g. ``"AttnGAN G_NET"``.
        family: ``attngan``, ``stackgan2`` or ``stackgan``.
        role: ``generator``, ``discriminator``, ``text_encoder`` or ``image_encoder``.
        spec: the t2i module spec ``{"target", "kwargs"}`` (:func:`t2i.models.factory.build_from_spec`).
        source: ``{t2i key: reference key}``.
        transforms: ``{t2i key: function}`` for tensors that need a rearrangement (others are copied).
        info: what was read from the shapes (for the model card).
    """

    network: str
    family: str
    role: str
    spec: dict
    source: dict[str, str] = field(default_factory=dict)
    transforms: dict[str, Transform] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def build(self, device: str | torch.device = "cpu") -> torch.nn.Module:
        """The t2i module of ``spec`` (weights uninitialised on ``device='meta'``)."""
        from t2i.models.factory import build_from_spec

        with torch.device(device):
            return build_from_spec(self.spec)


def strip_module_prefix(state: Mapping[str, Any]) -> dict[str, Any]:
    """Remove the ``module.`` prefix that ``nn.DataParallel`` puts on every key (StackGAN++ saves it so)."""
    keys = list(state)
    if keys and all(k.startswith("module.") for k in keys):
        return {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def _count(shapes: Shapes, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in shapes if (m := rx.match(k))})


def _need(shapes: Shapes, key: str, network: str) -> tuple[int, ...]:
    if key not in shapes:
        raise CheckpointError(f"looks like the reference {network} but lacks {key}")
    return tuple(shapes[key])


def _swap_inputs(first: int) -> Transform:
    """Move the first ``first`` input channels/columns of a weight to the end (``[a, b] -> [b, a]``)."""
    return lambda w: torch.cat([w[:, first:], w[:, :first]], dim=1).contiguous()


def _squeeze_1x1(w: Tensor) -> Tensor:
    return w.reshape(w.shape[0], w.shape[1]).contiguous()


# ------------------------------------------------------------------------------------------ identification
_SIGNATURES: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    # (network, family, role, keys that must all be present)
    ("AttnGAN G_NET", "attngan", "generator", ("ca_net.fc.weight", "h_net1.fc.0.weight", "img_net1.img.0.weight")),
    ("StackGAN++ G_NET", "stackgan2", "generator", ("ca_net.fc.weight", "h_net1.fc.0.weight", "img_net1.img.0.weight")),
    ("StackGAN STAGE2_G", "stackgan", "generator", ("STAGE1_G.fc.0.weight", "hr_joint.0.weight", "img.0.weight")),
    ("StackGAN STAGE1_G", "stackgan", "generator", ("ca_net.fc.weight", "fc.0.weight", "upsample1.1.weight", "img.0.weight")),
    ("AttnGAN D_NET", "attngan", "discriminator", ("img_code_s16.0.weight", "COND_DNET.jointConv.0.weight")),
    ("StackGAN++ D_NET", "stackgan2", "discriminator", ("img_code_s16.0.weight", "jointConv.0.weight", "logits.0.weight")),
    ("StackGAN STAGE_D", "stackgan", "discriminator", ("encode_img.0.weight", "get_cond_logits.outlogits.0.weight")),
    ("AttnGAN RNN_ENCODER", "attngan", "text_encoder", ("encoder.weight", "rnn.weight_ih_l0")),
    ("AttnGAN CNN_ENCODER", "attngan", "image_encoder", ("Mixed_7c.branch_pool.conv.weight", "emb_cnn_code.weight")),
)


def identify(shapes: Shapes) -> tuple[str, str, str]:
    """``(network, family, role)`` of a reference state dict, by its key names.

    AttnGAN and StackGAN++ generators share their top-level names; AttnGAN's has word attention
    (``h_net2.att.conv_context``), StackGAN++'s a joint convolution (``h_net2.jointConv``); a one-stage file is
    told apart by its conditioning width (AttnGAN ``CA_NET`` reads the 256-d DAMSM sentence vector).

    Raises:
        CheckpointError: no known network has these keys (the message names the first keys of the file).
    """
    for network, family, role, keys in _SIGNATURES:
        if all(k in shapes for k in keys):
            if role == "generator" and family in ("attngan", "stackgan2"):
                if any(k.startswith("h_net2.att.") for k in shapes):
                    return "AttnGAN G_NET", "attngan", role
                if any(k.startswith("h_net2.jointConv.") for k in shapes):
                    return "StackGAN++ G_NET", "stackgan2", role
                return ("AttnGAN G_NET", "attngan", role) if shapes["ca_net.fc.weight"][1] != 1024 else \
                    ("StackGAN++ G_NET", "stackgan2", role)
            return network, family, role
    first = ", ".join(list(shapes)[:3]) or "no keys"
    raise CheckpointError(f"not a released AttnGAN / StackGAN++ / StackGAN network (keys {first}, ...); "
                          "expected a G_NET, D_NET, STAGE1_G/STAGE2_G, STAGE1_D/STAGE2_D, RNN_ENCODER or CNN_ENCODER state dict")


# ------------------------------------------------------------------------------------------ generators
def _attngan_like_generator(shapes: Shapes, network: str, family: str) -> ReferencePlan:
    fc = _need(shapes, "ca_net.fc.weight", network)
    c_dim, sent_dim = fc[0] // 4, fc[1]
    z_dim = _need(shapes, "h_net1.fc.0.weight", network)[1] - c_dim
    ngf = _need(shapes, "img_net1.img.0.weight", network)[1]
    num_stages = _count(shapes, r"^img_net(\d+)\.")
    res_blocks = _count(shapes, r"^h_net2\.residual\.(\d+)\.") if num_stages > 1 else 0
    attention = family == "attngan"
    word_dim = _need(shapes, "h_net2.att.conv_context.weight", network)[1] if attention and num_stages > 1 else None
    later = "attention" if attention else "joint"
    kwargs = dict(stages=["init"] + [later] * (num_stages - 1), ngf=ngf, z_dim=z_dim, c_dim=c_dim, sent_dim=sent_dim,
                  word_dim=word_dim if attention else None, res_blocks=max(res_blocks, 1), base_size=64,
                  resolutions=[64 * 2 ** i for i in range(num_stages)], ca_activation="glu", init="default")
    plan = ReferencePlan(network, family, "generator", {"target": GENERATOR, "kwargs": kwargs},
                         info=dict(ngf=ngf, z_dim=z_dim, c_dim=c_dim, sent_dim=sent_dim, word_dim=word_dim,
                                   stages=num_stages, res_blocks=res_blocks))

    def ref_key(key: str) -> str | None:
        rules = ((r"^ca\.fc\.(.*)$", lambda m: f"ca_net.fc.{m[1]}"),
                 (r"^stages\.0\.fc\.(.*)$", lambda m: f"h_net1.fc.{m[1]}"),
                 (r"^stages\.0\.upsample\.(\d+)\.(.*)$", lambda m: f"h_net1.upsample{int(m[1]) + 1}.{m[2]}"),
                 (r"^heads\.(\d+)\.0\.weight$", lambda m: f"img_net{int(m[1]) + 1}.img.0.weight"),
                 (r"^stages\.(\d+)\.attention\.project\.weight$", lambda m: f"h_net{int(m[1]) + 1}.att.conv_context.weight"),
                 (r"^stages\.(\d+)\.joint\.(.*)$", lambda m: f"h_net{int(m[1]) + 1}.jointConv.{m[2]}"),
                 (r"^stages\.(\d+)\.(residual|upsample)\.(.*)$", lambda m: f"h_net{int(m[1]) + 1}.{m[2]}.{m[3]}"))
        return _apply_rules(rules, key)

    def transform(key: str, module: torch.nn.Module) -> Transform | None:
        if key.endswith("attention.project.weight"):
            return _squeeze_1x1
        if re.match(r"^stages\.\d+\.joint\.0\.weight$", key):  # StackGAN++ jointConv reads [c, h]; t2i [h, c]
            return _swap_inputs(c_dim)
        return None

    return _fill(plan, ref_key, transform)


def _stackgan_generator(shapes: Shapes, network: str) -> ReferencePlan:
    two_stage = network == "StackGAN STAGE2_G"
    p = "STAGE1_G." if two_stage else ""
    fc = _need(shapes, f"{p}ca_net.fc.weight", network)
    c_dim, sent_dim = fc[0] // 2, fc[1]
    z_dim = _need(shapes, f"{p}fc.0.weight", network)[1] - c_dim
    ngf = 2 * _need(shapes, f"{p}img.0.weight", network)[1]  # Stage-I ends at ngf/2 channels
    res_blocks = 1
    if two_stage:
        ngf2 = _need(shapes, "encoder.0.weight", network)[0]
        c2 = _need(shapes, "ca_net.fc.weight", network)[0] // 2
        if ngf2 != ngf or c2 != c_dim:
            raise CheckpointError(f"this {network} has Stage-I width {ngf} / code {c_dim} but Stage-II width {ngf2} / "
                                  f"code {c2}; t2i's StackGAN generator shares GAN.GF_DIM and GAN.CONDITION_DIM")
        res_blocks = _count(shapes, r"^residual\.(\d+)\.")
    stages = ["stackgan_stage1", "stackgan_stage2"] if two_stage else ["stackgan_stage1"]
    kwargs = dict(stages=stages, ngf=ngf, z_dim=z_dim, c_dim=c_dim, sent_dim=sent_dim, word_dim=None,
                  res_blocks=res_blocks, base_size=64, resolutions=[64, 256] if two_stage else [64],
                  ca_activation="relu", init="default")
    plan = ReferencePlan(network, "stackgan", "generator", {"target": GENERATOR, "kwargs": kwargs},
                         info=dict(ngf=ngf, z_dim=z_dim, c_dim=c_dim, sent_dim=sent_dim, stages=len(stages),
                                   res_blocks=res_blocks if two_stage else 0))
    encoder = {"0.weight": "0.weight", "2.0.weight": "2.weight", "3.0.weight": "5.weight"}

    def ref_key(key: str) -> str | None:
        rules = ((r"^ca\.fc\.(.*)$", lambda m: f"{p}ca_net.fc.{m[1]}"),
                 (r"^stages\.0\.fc\.(.*)$", lambda m: f"{p}fc.{m[1]}"),
                 (r"^stages\.0\.upsample\.(\d+)\.(.*)$", lambda m: f"{p}upsample{int(m[1]) + 1}.{m[2]}"),
                 (r"^heads\.0\.0\.weight$", lambda m: f"{p}img.0.weight"),
                 (r"^stages\.1\.ca\.fc\.(.*)$", lambda m: f"ca_net.fc.{m[1]}"),
                 (r"^stages\.1\.encoder\.(\d)\.1\.(.*)$", lambda m: f"encoder.{3 * int(m[1]) - 3}.{m[2]}"),
                 (r"^stages\.1\.encoder\.(.*)$", lambda m: f"encoder.{encoder[m[1]]}" if m[1] in encoder else None),
                 (r"^stages\.1\.joint\.(.*)$", lambda m: f"hr_joint.{m[1]}"),
                 (r"^stages\.1\.residual\.(.*)$", lambda m: f"residual.{m[1]}"),
                 (r"^stages\.1\.upsample\.(\d+)\.(.*)$", lambda m: f"upsample{int(m[1]) + 1}.{m[2]}"),
                 (r"^heads\.1\.0\.weight$", lambda m: "img.0.weight"))
        return _apply_rules(rules, key)

    def transform(key: str, module: torch.nn.Module) -> Transform | None:
        return _swap_inputs(z_dim) if key == "stages.0.fc.0.weight" else None  # STAGE1_G.fc reads [z, c]; t2i [c, z]

    return _fill(plan, ref_key, transform)


# ------------------------------------------------------------------------------------------ discriminators
def _discriminator(shapes: Shapes, network: str, family: str) -> ReferencePlan:
    if family == "stackgan":
        convs = sorted(int(m[1]) for k in shapes if (m := re.match(r"^encode_img\.(\d+)\.weight$", k))
                       and len(shapes[k]) == 4)
        encoder = [(f"encode_img.{i}", f"encode_img.{i + 1}" if i else None) for i in convs]
        joint, cond, uncond = "get_cond_logits.outlogits.0", "get_cond_logits.outlogits.3", "get_uncond_logits.outlogits.0"
        joint_bn = "get_cond_logits.outlogits.1"
    else:
        encoder = [("img_code_s16.0", None)] + [(f"img_code_s16.{i}", f"img_code_s16.{i + 1}") for i in (2, 5, 8)]
        for name in ("img_code_s32", "img_code_s64", "img_code_s32_1", "img_code_s64_1", "img_code_s64_2"):
            if f"{name}.0.weight" in shapes:
                encoder.append((f"{name}.0", f"{name}.1"))
        encoder.sort(key=lambda e: _D_ORDER.index(e[0].rsplit(".", 1)[0]))
        if family == "attngan":
            joint, joint_bn = "COND_DNET.jointConv.0", "COND_DNET.jointConv.1"
            cond, uncond = "COND_DNET.outlogits.0", "UNCOND_DNET.outlogits.0"
        else:
            joint, joint_bn, cond, uncond = "jointConv.0", "jointConv.1", "logits.0", "uncond_logits.0"
    down = sum(1 for conv, _ in encoder if shapes.get(f"{conv}.weight", (0, 0, 0))[2:] == (4, 4))
    ndf = _need(shapes, f"{encoder[0][0]}.weight", network)[0]
    cond_dim = _need(shapes, f"{joint}.weight", network)[1] - 8 * ndf
    has_uncond = f"{uncond}.weight" in shapes
    resolution = 4 * 2 ** down
    kwargs = dict(resolution=resolution, ndf=ndf, cond_dim=cond_dim, uncond=has_uncond, init="default")
    plan = ReferencePlan(f"{network}{resolution}" if family != "stackgan" else
                         ("StackGAN STAGE2_D" if has_uncond else "StackGAN STAGE1_D"), family, "discriminator",
                         {"target": DISCRIMINATOR, "kwargs": kwargs},
                         info=dict(resolution=resolution, ndf=ndf, cond_dim=cond_dim, uncond=has_uncond))

    def ref_key(key: str) -> str | None:
        m = re.match(r"^encoder\.(\d+)\.([01])\.(.*)$", key)
        if m:
            i = int(m[1])
            if i >= len(encoder):
                return None
            prefix = encoder[i][int(m[2])]
            return f"{prefix}.{m[3]}" if prefix else None
        heads = {"joint.0": joint, "joint.1": joint_bn, "cond_head": cond, "uncond_head": uncond}
        for ours, theirs in heads.items():
            if key.startswith(ours + "."):
                return theirs + key[len(ours):]
        return None

    def transform(key: str, module: torch.nn.Module) -> Transform | None:
        if key == "joint.0.weight" and family == "stackgan2":  # StackGAN++ D reads [c, x]; t2i [x, c]
            return _swap_inputs(cond_dim)
        return None

    return _fill(plan, ref_key, transform)


_D_ORDER = ("img_code_s16", "img_code_s32", "img_code_s64", "img_code_s32_1", "img_code_s64_1", "img_code_s64_2")


# ------------------------------------------------------------------------------------------ DAMSM encoders
def _text_encoder(shapes: Shapes, network: str) -> ReferencePlan:
    vocab_size, word_dim = _need(shapes, "encoder.weight", network)
    gates, _ = _need(shapes, "rnn.weight_ih_l0", network)
    hidden = _need(shapes, "rnn.weight_hh_l0", network)[1]
    if gates not in (3 * hidden, 4 * hidden):
        raise CheckpointError(f"rnn.weight_ih_l0 of this {network} has {gates} rows for {hidden} hidden units; "
                              "neither an LSTM (4x) nor a GRU (3x)")
    kwargs = dict(vocab_size=vocab_size, word_dim=word_dim, hidden_dim=hidden,
                  num_layers=_count(shapes, r"^rnn\.weight_ih_l(\d+)$"),
                  bidirectional="rnn.weight_ih_l0_reverse" in shapes, dropout=0.5,
                  rnn_type="lstm" if gates == 4 * hidden else "gru")
    plan = ReferencePlan(network, "attngan", "text_encoder", {"target": TEXT_ENCODER, "kwargs": kwargs}, info=kwargs)
    return _fill(plan, lambda k: k, lambda k, m: None)


def _image_encoder(shapes: Shapes, network: str, align_corners: bool = True) -> ReferencePlan:
    embed_dim = _need(shapes, "emb_cnn_code.weight", network)[0]
    kwargs = dict(embed_dim=embed_dim, pretrained=None, freeze_trunk=True, trunk_bn_train=False,
                  align_corners=align_corners)
    plan = ReferencePlan(network, "attngan", "image_encoder", {"target": IMAGE_ENCODER, "kwargs": kwargs},
                         info=dict(embed_dim=embed_dim, align_corners=align_corners))
    return _fill(plan, lambda k: k, lambda k, m: None)


# ------------------------------------------------------------------------------------------ plans
def _apply_rules(rules, key: str) -> str | None:
    for pattern, target in rules:
        m = re.match(pattern, key)
        if m:
            return target(m)
    return None


def _fill(plan: ReferencePlan, ref_key: Callable[[str], str | None],
          transform: Callable[[str, torch.nn.Module], Transform | None]) -> ReferencePlan:
    module = plan.build("meta")
    for key in module.state_dict():
        source = ref_key(key)
        if source is None:
            raise CheckpointError(f"no reference key for {key} of the t2i module built for this {plan.network}; "
                                  "the converter does not know this variant")
        plan.source[key] = source
        fn = transform(key, module)
        if fn is not None:
            plan.transforms[key] = fn
    return plan


def plan_reference(shapes: Shapes, image_align_corners: bool = True) -> ReferencePlan:
    """Recognise a reference state dict (key -> shape) and plan its conversion.

    Args:
        shapes: ``{key: shape}`` of the released state dict (``module.`` prefix already stripped).
        image_align_corners: the converted DAMSM image encoder resizes to 299 with ``align_corners=True``, the
            behaviour of the PyTorch the released encoders were trained with.

    Raises:
        CheckpointError: an unknown network, or shapes this converter cannot read.
    """
    network, family, role = identify(shapes)
    if role == "generator":
        return _stackgan_generator(shapes, network) if family == "stackgan" else \
            _attngan_like_generator(shapes, network, family)
    if role == "discriminator":
        return _discriminator(shapes, network, family)
    if role == "text_encoder":
        return _text_encoder(shapes, network)
    return _image_encoder(shapes, network, image_align_corners)


def convert_state(state: Mapping[str, Tensor], plan: ReferencePlan, module: torch.nn.Module,
                  source: str = "the file") -> dict[str, Tensor]:
    """The t2i state dict of ``module`` from a reference ``state`` by ``plan``, checked strictly.

    ``num_batches_tracked`` buffers, which checkpoints of PyTorch < 0.4.1 lack, are filled with 0 when absent.

    Raises:
        CheckpointError: a reference key the plan does not use, one it needs that is missing, or a shape that differs
            (one line, naming the key and the network the file looks like).
    """
    own = module.state_dict()
    used = set(plan.source.values())
    unexpected = [k for k in state if k not in used]
    if unexpected:
        raise CheckpointError(f"{source} looks like the reference {plan.network} but has {len(unexpected)} unexpected keys "
                              f"(first: {unexpected[0]}); it is another variant or not a released checkpoint")
    missing = [ref for key, ref in plan.source.items() if ref not in state and not key.endswith("num_batches_tracked")]
    if missing:
        raise CheckpointError(f"{source} looks like the reference {plan.network} but lacks {len(missing)} of its keys "
                              f"(first: {missing[0]})")
    out: dict[str, Tensor] = {}
    for key, target in own.items():
        ref = plan.source[key]
        if ref not in state:  # a num_batches_tracked of an old checkpoint
            out[key] = torch.zeros((), dtype=torch.long)
            continue
        value = state[ref]
        if not isinstance(value, Tensor):
            raise CheckpointError(f"{source}: {ref} is a {type(value).__name__}, not a tensor")
        value = value.detach()
        if key in plan.transforms:
            if value.dim() < 2:
                raise CheckpointError(f"{source}: {ref} has shape {tuple(value.shape)}; expected a weight matrix")
            value = plan.transforms[key](value)
        if tuple(value.shape) != tuple(target.shape):
            raise CheckpointError(f"{source} looks like the reference {plan.network} but {ref} has shape {tuple(state[ref].shape)}, "
                                  f"which does not fit (t2i {key} needs {tuple(target.shape)})")
        out[key] = value.to(dtype=target.dtype).contiguous()
    return out
