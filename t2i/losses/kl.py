"""KL divergence of conditioning augmentation (StackGAN Eq. (3) regulariser; AttnGAN's ``KL_loss``)."""

from __future__ import annotations

import torch
from torch import Tensor


def kl_loss(mu: Tensor, logvar: Tensor) -> Tensor:
    """``KL(N(mu, diag(exp(logvar))) || N(0, I))`` averaged over batch *and* dimensions, as the references.

    The references' ``KL_loss`` takes ``-0.5 * mean(1 + logvar - mu^2 - exp(logvar))`` over all elements
    (not the sum over dimensions), so the weight (AttnGAN 1.0, StackGAN 2.0) applies to this mean.

    Args:
        mu: ``[B, C]`` means.
        logvar: ``[B, C]`` log-variances.

    Returns:
        scalar loss (float32 under autocast).
    """
    mu, logvar = mu.float(), logvar.float()
    return -0.5 * torch.mean(1 + logvar - mu.pow(2) - logvar.exp())
