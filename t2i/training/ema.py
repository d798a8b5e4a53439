"""Exponential moving average of a model's parameters (AttnGAN/StackGAN++ average G with 0.999)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Keeps ``shadow``, a frozen copy of ``model`` whose parameters track ``model``'s.

    ``update()`` does ``p_ema <- beta * p_ema + (1 - beta) * p`` (buffers such as BatchNorm statistics
    are copied), as the references' ``avg_param_G`` (``avg_p.mul_(0.999).add_(0.001, p)``).
    """

    def __init__(self, model: nn.Module, beta: float = 0.999):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"EMA beta must be in [0, 1), got {beta}")
        self.beta = beta
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)
        self.model = model

    @torch.no_grad()
    def update(self) -> None:
        """One averaging step, as one multi-tensor ``lerp_`` (the same per-element maths as a loop over tensors)."""
        shadow, live = list(self.shadow.parameters()), [p.detach() for p in self.model.parameters()]
        if shadow:
            torch._foreach_lerp_(shadow, live, 1.0 - self.beta)
        for b_ema, b in zip(self.shadow.buffers(), self.model.buffers()):
            b_ema.copy_(b)

    def state_dict(self) -> dict:
        return self.shadow.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.shadow.load_state_dict(state)
