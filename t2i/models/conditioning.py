"""Conditioning augmentation (StackGAN, Zhang et al. 2017, Sec. 3.1; used again by StackGAN++ and AttnGAN).

The sentence vector is mapped to the mean and log-variance of a Gaussian, and the conditioning code is
sampled from it with the reparametrisation trick, ``c = mu + sigma * eps``. The KL term lives in
:mod:`t2i.losses.kl`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ConditioningAugmentation(nn.Module):
    """The references' ``CA_NET``.

    ``activation="glu"`` (AttnGAN, StackGAN++): ``fc: sent_dim -> 4 c_dim`` (with bias), GLU -> ``2 c_dim``.
    ``activation="relu"`` (StackGAN v1, StackGAN-Pytorch): ``fc: sent_dim -> 2 c_dim``, ReLU.
    The first half is ``mu``, the second ``logvar``.

    Args:
        sent_dim: size of the sentence vector.
        c_dim: size of the conditioning code (``GAN.CONDITION_DIM`` / ``GAN.EMBEDDING_DIM``).
        activation: ``glu`` or ``relu``.
    """

    def __init__(self, sent_dim: int, c_dim: int, activation: str = "glu"):
        super().__init__()
        if activation not in ("glu", "relu"):
            raise ValueError(f"conditioning activation must be glu or relu, got {activation!r}")
        self.c_dim = c_dim
        self.fc = nn.Linear(sent_dim, c_dim * (4 if activation == "glu" else 2), bias=True)
        self.act = nn.GLU(dim=1) if activation == "glu" else nn.ReLU()

    def encode(self, sent_emb: Tensor) -> tuple[Tensor, Tensor]:
        """``[B, sent_dim]`` -> ``mu, logvar``, each ``[B, c_dim]``."""
        x = self.act(self.fc(sent_emb))  # (B, 2 c_dim)
        return x[:, :self.c_dim], x[:, self.c_dim:]

    def forward(self, sent_emb: Tensor, sample: bool = True) -> tuple[Tensor, Tensor, Tensor]:
        """
        Args:
            sent_emb: ``[B, sent_dim]`` sentence vectors.
            sample: draw ``c = mu + exp(logvar / 2) * eps`` (the references always sample); False gives ``mu``.

        Returns:
            c_code, mu, logvar: each ``[B, c_dim]``.
        """
        mu, logvar = self.encode(sent_emb)
        if not sample:
            return mu, mu, logvar
        std = torch.exp(0.5 * logvar)
        return mu + std * torch.randn_like(std), mu, logvar
