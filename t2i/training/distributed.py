"""Data-parallel helpers for ``torchrun`` launches.

The GAN and DAMSM trainers call their networks through methods other than ``forward`` (a
discriminator's ``encode``/``cond_logits``), which ``DistributedDataParallel``'s reducer does not see, so
gradients are averaged explicitly after each backward: one flattened all-reduce per parameter group,
which is what DDP does, without the overlap with the backward pass.
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.distributed as dist
from torch import nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors


def average_gradients(params: Iterable[nn.Parameter], world_size: int) -> None:
    """Average ``p.grad`` over all ranks (parameters without a gradient are skipped on every rank alike)."""
    if world_size <= 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = _flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    flat.div_(world_size)
    for g, synced in zip(grads, _unflatten_dense_tensors(flat, grads)):
        g.copy_(synced)


def broadcast_parameters(module: nn.Module, src: int = 0) -> None:
    """Make every rank start from rank ``src``'s parameters and buffers."""
    if not dist.is_initialized() or dist.get_world_size() <= 1:
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src)


def rank_slice(global_batch: int, rank: int, world_size: int) -> slice:
    """This rank's rows of a tensor drawn for the whole global batch (identical on every rank)."""
    per = global_batch // world_size
    return slice(rank * per, (rank + 1) * per)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """SyncBatchNorm (CUDA only in PyTorch); a no-op elsewhere."""
    if device.type != "cuda":
        return module
    return nn.SyncBatchNorm.convert_sync_batchnorm(module)
