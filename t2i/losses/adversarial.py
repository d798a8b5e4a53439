"""Per-stage adversarial losses of the text-conditional GANs (matching-aware discriminators).

Discriminator (AttnGAN ``miscc/losses.py: discriminator_loss``, identical to StackGAN-Pytorch's
``compute_discriminator_loss``): real image + right text -> real, real image + wrong text -> fake,
fake image + right text -> fake; with the unconditional head also real -> real and fake -> fake, and

    loss_d = (uncond_real + cond_real) / 2 + (uncond_fake + cond_fake + cond_wrong) / 3
    loss_d = cond_real + (cond_fake + cond_wrong) / 2                         (no unconditional head)

The wrong pairs are, as in the references, real image ``i`` with the condition of sample ``i + 1``
(``B - 1`` pairs), unless explicit ``wrong_cond`` (e.g. encoded mismatched captions) is given.
StackGAN++ (``scheme="stackgan2"``) instead scores *wrong images* with the right condition and sums:
``(cond_real + u uncond_real) + (cond_wrong + u uncond_wrong) + (cond_fake + u uncond_fake)`` with the
wrong images counted real by the unconditional head.

Generator (AttnGAN ``generator_loss`` adversarial part, StackGAN ``compute_generator_loss``): per stage
``cond_fake -> real + uncond_fake -> real``, summed over stages.

Discriminators output logits: ``bce`` is BCE-with-logits (the references' Sigmoid + BCELoss, but stable
and autocast-safe); ``hinge`` is the hinge loss (D: ``relu(1 - x)`` for real targets, ``relu(1 + x)`` for
fake ones; G: ``-x``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

LOSS_KINDS = ("bce", "hinge")
SCHEMES = ("attngan", "stackgan2")


def _check(loss: str, scheme: str = "attngan") -> None:
    if loss not in LOSS_KINDS:
        raise ValueError(f"unknown adversarial loss {loss!r}; choose one of {', '.join(LOSS_KINDS)}")
    if scheme not in SCHEMES:
        raise ValueError(f"unknown discriminator loss scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")


def d_term(logits: Tensor, real: bool, loss: str = "bce") -> Tensor:
    """Discriminator loss pushing ``logits [N]`` towards real (True) or fake (False), mean over N."""
    logits = logits.float()
    if loss == "hinge":
        return F.relu(1 - logits).mean() if real else F.relu(1 + logits).mean()
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


def g_term(logits: Tensor, loss: str = "bce") -> Tensor:
    """Generator loss making fake ``logits [N]`` look real, mean over N."""
    logits = logits.float()
    if loss == "hinge":
        return -logits.mean()
    return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))


@dataclass
class DiscriminatorLoss:
    """The total discriminator loss of one stage and its terms (scalars; None where absent)."""

    total: Tensor
    cond_real: Tensor
    cond_fake: Tensor
    cond_wrong: Tensor
    uncond_real: Tensor | None = None
    uncond_fake: Tensor | None = None
    uncond_wrong: Tensor | None = None

    def logs(self, prefix: str = "") -> dict[str, float]:
        """Detached floats for logging, e.g. ``{"loss_d0": ..., "loss_d0/cond_real": ...}``."""
        out = {prefix: self.total.item()} if prefix else {"total": self.total.item()}
        for name in ("cond_real", "cond_fake", "cond_wrong", "uncond_real", "uncond_fake", "uncond_wrong"):
            value = getattr(self, name)
            if value is not None:
                out[f"{prefix}/{name}" if prefix else name] = value.item()
        return out


def discriminator_loss_from_logits(cond_real: Tensor, cond_fake: Tensor, cond_wrong: Tensor,
                                   uncond_real: Tensor | None = None, uncond_fake: Tensor | None = None,
                                   uncond_wrong: Tensor | None = None, loss: str = "bce",
                                   scheme: str = "attngan", uncond_weight: float = 1.0) -> DiscriminatorLoss:
    """Combine the logits of one stage's discriminator into its loss (see the module docstring).

    Args:
        cond_real / cond_fake / cond_wrong: ``[N]`` conditional logits of real-right, fake-right and
            wrong pairs (``cond_wrong`` may have fewer entries).
        uncond_real / uncond_fake: ``[N]`` unconditional logits, or None without that head.
        uncond_wrong: ``[N]`` unconditional logits of the wrong images (``stackgan2`` only).
        loss: ``bce`` or ``hinge``.
        scheme: ``attngan`` (AttnGAN, StackGAN v1) or ``stackgan2``.
        uncond_weight: StackGAN++'s ``TRAIN.COEFF.UNCOND_LOSS`` (``stackgan2`` only).
    """
    _check(loss, scheme)
    real = d_term(cond_real, True, loss)
    fake = d_term(cond_fake, False, loss)
    wrong = d_term(cond_wrong, False, loss)
    if uncond_real is None:
        return DiscriminatorLoss(real + (fake + wrong) / 2, real, fake, wrong)
    u_real = d_term(uncond_real, True, loss)
    u_fake = d_term(uncond_fake, False, loss)
    if scheme == "attngan":
        total = (u_real + real) / 2 + (u_fake + fake + wrong) / 3
        return DiscriminatorLoss(total, real, fake, wrong, u_real, u_fake)
    u_wrong = d_term(uncond_wrong, True, loss)  # StackGAN++: wrong images are real images
    total = (real + uncond_weight * u_real) + (wrong + uncond_weight * u_wrong) + (fake + uncond_weight * u_fake)
    return DiscriminatorLoss(total, real, fake, wrong, u_real, u_fake, u_wrong)


def discriminator_loss(discriminator, real_images: Tensor, fake_images: Tensor, cond: Tensor,
                       wrong_cond: Tensor | None = None, wrong_images: Tensor | None = None,
                       loss: str = "bce", scheme: str = "attngan", uncond_weight: float = 1.0) -> DiscriminatorLoss:
    """Loss of one :class:`~t2i.models.discriminator.StageDiscriminator` (fake images are detached).

    Args:
        discriminator: a ``StageDiscriminator`` of the images' resolution.
        real_images / fake_images: ``[B, 3, R, R]``.
        cond: ``[B, cond_dim]`` conditions of the right text (sentence vectors, or CA ``mu``); detached.
        wrong_cond: ``[B, cond_dim]`` conditions of mismatched texts for the real images; None: the
            references' shift (image ``i`` with condition ``i + 1``).
        wrong_images: ``[B, 3, R, R]`` real images of other classes (``scheme="stackgan2"``).
        loss / scheme / uncond_weight: see :func:`discriminator_loss_from_logits`.
    """
    _check(loss, scheme)
    cond = cond.detach()
    real_code = discriminator.encode(real_images)
    fake_code = discriminator.encode(fake_images.detach())
    uncond = discriminator.has_uncond
    wrong_code = None
    if scheme == "stackgan2":
        if wrong_images is None:
            raise ValueError("scheme='stackgan2' scores mismatched real images; pass wrong_images")
        wrong_code = discriminator.encode(wrong_images)
        cond_wrong = discriminator.cond_logits(wrong_code, cond)
    elif wrong_cond is not None:
        cond_wrong = discriminator.cond_logits(real_code, wrong_cond.detach())
    else:
        cond_wrong = discriminator.cond_logits(real_code[:-1], cond[1:])  # AttnGAN: real[:B-1] with cond[1:B]
    return discriminator_loss_from_logits(
        discriminator.cond_logits(real_code, cond), discriminator.cond_logits(fake_code, cond), cond_wrong,
        discriminator.uncond_logits(real_code) if uncond else None,
        discriminator.uncond_logits(fake_code) if uncond else None,
        discriminator.uncond_logits(wrong_code) if uncond and wrong_code is not None else None,
        loss=loss, scheme=scheme, uncond_weight=uncond_weight)


def generator_loss_from_logits(cond_fake: Tensor, uncond_fake: Tensor | None = None, loss: str = "bce",
                               uncond_weight: float = 1.0) -> Tensor:
    """One stage's adversarial generator loss: ``cond_fake -> real (+ uncond_weight * uncond_fake -> real)``."""
    _check(loss)
    total = g_term(cond_fake, loss)
    if uncond_fake is not None:
        total = total + uncond_weight * g_term(uncond_fake, loss)
    return total


def generator_adversarial_loss(discriminators: Sequence, fake_images: Sequence[Tensor], cond: Tensor,
                               loss: str = "bce", uncond_weight: float = 1.0) -> tuple[Tensor, list[Tensor]]:
    """Adversarial generator loss summed over stages (AttnGAN ``generator_loss`` without the DAMSM part).

    Args:
        discriminators: one ``StageDiscriminator`` per stage.
        fake_images: one ``[B, 3, R_s, R_s]`` per stage (not detached: gradients reach the generator).
        cond: ``[B, cond_dim]`` conditions (sentence vectors for AttnGAN, CA ``mu`` for StackGAN); detached.
        loss: ``bce`` or ``hinge``.

    Returns:
        total (scalar) and the per-stage losses.
    """
    if len(discriminators) != len(fake_images):
        raise ValueError(f"{len(discriminators)} discriminators for {len(fake_images)} generator stages")
    cond = cond.detach()
    per_stage = []
    for discriminator, images in zip(discriminators, fake_images):
        code = discriminator.encode(images)
        uncond = discriminator.uncond_logits(code) if discriminator.has_uncond else None
        per_stage.append(generator_loss_from_logits(discriminator.cond_logits(code, cond), uncond, loss,
                                                    uncond_weight))
    return torch.stack(per_stage).sum(), per_stage
