"""DRAW / alignDRAW negative ELBO in nats per image (Gregor et al., 2015, Eq. (9)-(12)).

``L = L^x + L^z``: the reconstruction loss ``L^x = -log D(x | c_T)`` (Eq. (9)) with a Bernoulli D whose
means are sigmoid(c_T), computed as binary cross-entropy with logits summed over pixels, plus the latent
loss ``L^z = sum_t KL(Q(Z_t | .) || P(Z_t))`` summed over steps (Eq. (10)); for DRAW's N(0, I) prior that
is Eq. (11). alignDRAW (Mansimov et al., 2016) replaces P(Z_t) by a learned Gaussian p(Z_t | h_gen_{t-1});
the general Gaussian KL below covers both. Averaged over a data set, ``L`` is the NLL upper bound reported
in DRAW's Table 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

LIKELIHOODS = ("bernoulli", "gaussian")


def _f32(t: Tensor) -> Tensor:
    """At least float32 (bf16/fp16 activations from autocast lose too much in exp and sums)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


@dataclass
class ElboTerms:
    """Per-image terms of the negative ELBO, all ``[B]`` in nats.

    Attributes:
        recon: L^x, Eq. (9).
        kl: L^z, Eq. (10), summed over steps.
        total: L^x + L^z, Eq. (12) (before the expectation over z).
    """

    recon: Tensor
    kl: Tensor
    total: Tensor

    @property
    def loss(self) -> Tensor:
        """Mean over the batch (the quantity to minimise)."""
        return self.total.mean()


def gaussian_kl(mu: Tensor, logvar: Tensor, prior_mu: Tensor | None = None,
                prior_logvar: Tensor | None = None) -> Tensor:
    """KL(N(mu, e^logvar) || N(prior_mu, e^prior_logvar)), summed over all but the batch dimension.

    Args:
        mu, logvar: ``[B, ...]`` posterior parameters.
        prior_mu, prior_logvar: same shape, or None for the standard normal (DRAW Eq. (11)).

    Returns:
        ``[B]`` KL in nats.
    """
    mu, logvar = _f32(mu), _f32(logvar)
    if prior_mu is None:
        kl = 0.5 * (mu ** 2 + logvar.exp() - logvar - 1)  # DRAW Eq. (11), per dimension and step
    else:
        prior_mu, prior_logvar = _f32(prior_mu), _f32(prior_logvar)
        kl = 0.5 * (prior_logvar - logvar + (logvar.exp() + (mu - prior_mu) ** 2) / prior_logvar.exp() - 1)
    return kl.flatten(1).sum(1)


def reconstruction_nll(x: Tensor, canvas_logits: Tensor, likelihood: str = "bernoulli",
                       gaussian_std: float = 0.1) -> Tensor:
    """-log D(x | c_T), DRAW Eq. (9), summed over pixels.

    Args:
        x: ``[B, C, H, W]`` targets in [0, 1].
        canvas_logits: ``[B, C, H, W]`` final canvas c_T.
        likelihood: ``bernoulli`` (means sigmoid(c_T); the DRAW and alignDRAW reference choice, also for
            RGB intensities in [0, 1]) or ``gaussian`` (mean sigmoid(c_T), fixed std ``gaussian_std``).

    Returns:
        ``[B]`` nats.
    """
    if likelihood == "bernoulli":
        nll = F.binary_cross_entropy_with_logits(_f32(canvas_logits), _f32(x).to(_f32(canvas_logits).dtype), reduction="none")
    elif likelihood == "gaussian":
        mean = torch.sigmoid(_f32(canvas_logits))
        nll = 0.5 * ((_f32(x) - mean) / gaussian_std) ** 2 + math.log(gaussian_std) + 0.5 * math.log(2 * math.pi)
    else:
        raise ValueError(f"unknown likelihood {likelihood!r}; choose one of {', '.join(LIKELIHOODS)}")
    return nll.flatten(1).sum(1)


def draw_elbo(x: Tensor, canvas_logits: Tensor, mu: Tensor, logvar: Tensor, prior_mu: Tensor | None = None,
              prior_logvar: Tensor | None = None, likelihood: str = "bernoulli",
              gaussian_std: float = 0.1) -> ElboTerms:
    """Negative ELBO of DRAW / alignDRAW, DRAW Eq. (9)-(12).

    Args:
        x: ``[B, C, H, W]`` targets in [0, 1].
        canvas_logits: ``[B, C, H, W]`` c_T.
        mu, logvar: ``[B, T, Z]`` posterior parameters of every step.
        prior_mu, prior_logvar: ``[B, T, Z]`` prior parameters (alignDRAW), or None for N(0, I) (DRAW).
        likelihood, gaussian_std: see :func:`reconstruction_nll`.

    Returns:
        :class:`ElboTerms` with per-image ``recon``, ``kl`` and ``total`` in nats.
    """
    recon = reconstruction_nll(x, canvas_logits, likelihood, gaussian_std)  # Eq. (9)
    kl = gaussian_kl(mu, logvar, prior_mu, prior_logvar)  # Eq. (10)-(11), summed over t and z
    return ElboTerms(recon=recon, kl=kl, total=recon + kl)  # Eq. (12)
