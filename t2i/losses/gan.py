"""The complete objective of the text-conditional GANs, per stage and for the generator.

Generator (AttnGAN ``generator_loss`` + ``KL_loss``)::

    loss_g = sum_s adv_s(G) + lambda_damsm * L_DAMSM(x_last, text) + kl_weight * KL(N(mu, sigma) || N(0, I))

Discriminator of stage s: the matching-aware loss of :mod:`t2i.losses.adversarial`, optionally plus
DF-GAN's matching-aware gradient penalty (Tao et al. 2022, Eq. 3) on real images with their own sentences::

    MA-GP = k * E[ ||(grad_x D(x, e), grad_e D(x, e))||_2 ^ p ]          (DF-GAN: k = 2, p = 6)

and optionally with DiffAugment (:mod:`t2i.augment`) applied to every image a discriminator sees, real
and fake, in both the D and the G step. The references use neither (``ma_gp_weight=0``, ``augment=None``).

Optionally the generator also pays MSGAN's mode-seeking term (Mao et al. 2019, Eq. 3 as their code minimises it),
on a second draw of the noise for the same texts (:func:`mode_seeking_loss`; ``mode_seeking_weight=0``: off)::

    L_ms = w / (mean|G(c, z1) - G(c, z2)| / mean|z1 - z2| + 1e-5)
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from t2i.augment import diff_augment, parse_policy
from t2i.losses.adversarial import discriminator_loss, generator_loss_from_logits
from t2i.losses.damsm import DAMSMLoss
from t2i.losses.kl import kl_loss
from t2i.models.image_encoders import fast_pool_branches
from t2i.models.layers import fold_batchnorm
from t2i.structures import Batch, GeneratorOutput, TextEmbedding

CONDITIONS = ("sentence", "mu")


def mismatch_index(class_ids: Tensor) -> Tensor:
    """For every sample, the index of another sample of a different class (``i+1, i+2, ...`` first).

    Falls back to ``i + 1`` when the whole batch is one class.
    """
    b = class_ids.shape[0]
    idx = torch.arange(b, device=class_ids.device)
    out = (idx + 1) % b
    for shift in range(b - 1, 0, -1):  # the smallest shift with another class wins
        cand = (idx + shift) % b
        out = torch.where(class_ids[cand] != class_ids, cand, out)
    return out


class GANLoss(nn.Module):
    """Losses of a multi-stage text-conditional GAN.

    Args:
        image_encoder: frozen DAMSM image encoder (``images -> (regions, global)``), or None when
            ``lambda_damsm`` is 0 (StackGAN, StackGAN++).
        lambda_damsm: weight of the DAMSM term (AttnGAN: 5 birds, 50 COCO).
        kl_weight: weight of the conditioning-augmentation KL term (1 in AttnGAN, 2 in StackGAN v1? see configs).
        adversarial: ``bce`` (the references, on logits) or ``hinge``.
        scheme: ``attngan`` (AttnGAN, StackGAN v1) or ``stackgan2`` discriminator loss.
        condition: what discriminators are conditioned on: ``sentence`` (AttnGAN) or the CA ``mu``
            (StackGAN, StackGAN++).
        uncond_weight: weight of the unconditional terms (StackGAN++'s ``COEFF.UNCOND_LOSS``).
        gammas: DAMSM smoothing factors (4, 5, 10); ``released_eq10`` as in :class:`DAMSMLoss` (the released
            AttnGAN's generator loss leaves out Eq. 10's 1/gamma2).
        mismatched: ``other_class`` (t2i: the data layer's captions of other classes) or ``next_in_batch`` (the
            released code: real image ``i`` with the caption of sample ``i + 1`` of the batch).
        ma_gp_weight / ma_gp_power: DF-GAN's matching-aware gradient penalty ``k`` and ``p`` (2 and 6 in
            DF-GAN; weight 0 turns it off, as in AttnGAN).
        augment: DiffAugment policy for D's inputs, e.g. ``"translation,cutout"`` (None: no augmentation).
        mode_seeking_weight: weight of MSGAN's mode-seeking term on the last active stage's images (0: off, as in
            AttnGAN); the trainer then runs the generator a second time with new noise.
    """

    def __init__(self, image_encoder: nn.Module | None = None, lambda_damsm: float = 0.0, kl_weight: float = 1.0,
                 adversarial: str = "bce", scheme: str = "attngan", condition: str = "sentence",
                 uncond_weight: float = 1.0, gamma1: float = 4.0, gamma2: float = 5.0, gamma3: float = 10.0,
                 released_eq10: bool = False, mismatched: str = "other_class", ma_gp_weight: float = 0.0,
                 ma_gp_power: float = 6.0, augment: str | None = None, mode_seeking_weight: float = 0.0):
        super().__init__()
        if ma_gp_weight < 0:
            raise ValueError(f"ma_gp_weight must be >= 0, got {ma_gp_weight}")
        if mode_seeking_weight < 0:
            raise ValueError(f"mode_seeking_weight must be >= 0, got {mode_seeking_weight}")
        self.mode_seeking_weight = float(mode_seeking_weight)
        self.augment = parse_policy(augment)
        self.ma_gp_weight, self.ma_gp_power = float(ma_gp_weight), float(ma_gp_power)
        if condition not in CONDITIONS:
            raise ValueError(f"unknown discriminator condition {condition!r}; choose one of {CONDITIONS}")
        if lambda_damsm > 0 and image_encoder is None:
            raise ValueError("lambda_damsm > 0 needs the DAMSM image encoder")
        self.image_encoder = image_encoder.eval().requires_grad_(False) if image_encoder is not None else None
        if mismatched not in ("other_class", "next_in_batch"):
            raise ValueError(f"mismatched must be other_class or next_in_batch, got {mismatched!r}")
        self.mismatched = mismatched
        self.damsm = DAMSMLoss(gamma1, gamma2, gamma3, released_eq10)
        self.lambda_damsm, self.kl_weight = lambda_damsm, kl_weight
        self.adversarial, self.scheme, self.condition, self.uncond_weight = adversarial, scheme, condition, uncond_weight
        self.image_channels_last = False

    def fast_image_encoder(self) -> int:
        """Run the frozen DAMSM image encoder faster, computing the same function: BatchNorms folded, channels-last.

        The encoder is frozen (eval mode, no parameter gradients), so each ``conv -> BN`` pair is one conv
        (:func:`t2i.models.layers.fold_batchnorm`) and the network runs in NHWC (oneDNN's fast layout; its pooling
        layers are several times faster there). The generator's images are converted to channels-last before it.
        Only the rounding changes; the caller's encoder object is left as it was (a copy is folded).

        Returns:
            How many BatchNorm layers were folded (0 without an image encoder).
        """
        if self.image_encoder is None:
            return 0
        encoder = copy.deepcopy(self.image_encoder).eval()
        folded = fold_batchnorm(encoder)
        fast_pool_branches(encoder)  # Inception's pool branches: a backward that runs the forward pool
        self.image_encoder = encoder.to(memory_format=torch.channels_last)
        self.image_channels_last = True
        return folded

    def train(self, mode: bool = True):
        super().train(mode)
        if self.image_encoder is not None:
            self.image_encoder.eval()  # frozen: BatchNorm statistics never move
        return self

    def conditions(self, output: GeneratorOutput, text: TextEmbedding, wrong: TextEmbedding | None,
                   generator: nn.Module) -> tuple[Tensor, Tensor | None]:
        """Discriminator conditions of the right and the mismatched texts ``[B, cond_dim]`` (detached).

        With ``mismatched="next_in_batch"`` the mismatched condition is None: the discriminator loss then pairs real
        image ``i`` with the condition of sample ``i + 1`` (``B - 1`` pairs), as the released AttnGAN / StackGAN code.
        """
        if self.mismatched == "next_in_batch":
            wrong = None
        if self.condition == "sentence":
            return text.sentence.detach(), (wrong.sentence.detach() if wrong is not None else None)
        wrong_mu = generator.ca.encode(wrong.sentence)[0].detach() if wrong is not None else None
        return output.mu.detach(), wrong_mu

    def discriminator(self, d: nn.Module, real: Tensor, fake: Tensor, cond: Tensor, wrong_cond: Tensor | None,
                      class_ids: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Matching-aware loss of one stage's discriminator (fake images detached)."""
        wrong_images = real[mismatch_index(class_ids)] if self.scheme == "stackgan2" else None
        fake = fake.detach()
        if self.augment:
            real, fake = self._augment(real), self._augment(fake)
            wrong_images = self._augment(wrong_images) if wrong_images is not None else None
        out = discriminator_loss(d, real, fake, cond, wrong_cond, wrong_images, loss=self.adversarial,
                                 scheme=self.scheme, uncond_weight=self.uncond_weight)
        total, logs = out.total, out.logs()
        if self.ma_gp_weight > 0:
            gp = matching_aware_gradient_penalty(d, real, cond, self.ma_gp_power)
            logs["ma_gp"] = gp.item()
            total = total + self.ma_gp_weight * gp
            logs["total"] = total.item()
        return total, logs

    def _augment(self, images: Tensor) -> Tensor:
        return diff_augment(images, self.augment)

    def generator(self, output: GeneratorOutput, discriminators, cond: Tensor, text: TextEmbedding, batch: Batch,
                  stages: list[int]) -> tuple[Tensor, dict[str, float]]:
        """Generator loss over the active ``stages``; DAMSM on the last active stage's image."""
        logs: dict[str, float] = {}
        total = torch.zeros((), device=cond.device)
        for i in stages:
            code = discriminators[i].encode(self._augment(output.images[i]) if self.augment else output.images[i])
            uncond = discriminators[i].uncond_logits(code) if discriminators[i].has_uncond else None
            adv = generator_loss_from_logits(discriminators[i].cond_logits(code, cond), uncond, self.adversarial,
                                             self.uncond_weight)
            logs[f"adv{i + 1}"] = adv.item()
            total = total + adv
        if self.lambda_damsm > 0:
            image = output.images[max(stages)]
            size = getattr(self.image_encoder, "image_size", None)
            if size and image.shape[-1] != size:
                image = F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False)
            if self.image_channels_last:
                image = image.contiguous(memory_format=torch.channels_last)
            regions, global_feat = self.image_encoder(image)
            damsm = self.damsm(regions, global_feat, text.words, text.sentence, text.pad_mask, batch.class_ids)
            logs.update(damsm_word=(damsm.word_i2t + damsm.word_t2i).item(),
                        damsm_sent=(damsm.sent_i2t + damsm.sent_t2i).item())
            total = total + self.lambda_damsm * damsm.loss
        if self.kl_weight > 0 and output.mu is not None:
            kl = kl_loss(output.mu.float(), output.logvar.float())
            logs["kl"] = kl.item()
            total = total + self.kl_weight * kl
        logs["total"] = total.item()
        return total, logs


def mode_seeking_loss(images_a: Tensor, images_b: Tensor, z_a: Tensor, z_b: Tensor, eps: float = 1e-5) -> Tensor:
    """MSGAN's mode-seeking term (Mao et al., CVPR 2019): small when two noises give different images.

    The ratio ``mean|x_a - x_b| / mean|z_a - z_b|`` of image distance to noise distance (their Eq. 3, with the L1
    distances their code uses) is maximised by minimising its inverse, ``1 / (ratio + eps)``.

    Args:
        images_a / images_b: ``[B, 3, H, W]`` the generator's images of the same texts for noises ``z_a`` / ``z_b``.
        z_a / z_b: ``[B, z_dim]`` the two noises.
    """
    ratio = (images_a.float() - images_b.float()).abs().mean() / (z_a.float() - z_b.float()).abs().mean()
    return 1.0 / (ratio + eps)


def matching_aware_gradient_penalty(discriminator: nn.Module, real: Tensor, cond: Tensor, power: float = 6.0) -> Tensor:
    """DF-GAN's MA-GP term ``E[||(grad_x, grad_e) D_cond(x, e)||_2 ^ power]`` on real images with their own conditions.

    Args:
        discriminator: a ``StageDiscriminator`` (``encode`` + ``cond_logits``).
        real: ``[B, 3, R, R]`` real images (as D sees them, e.g. augmented).
        cond: ``[B, cond_dim]`` their matching sentence vectors.

    Returns:
        the penalty (scalar), differentiable with respect to D's parameters (``create_graph``).
    """
    images = real.detach().requires_grad_(True)
    sentence = cond.detach().float().requires_grad_(True)
    logits = discriminator.cond_logits(discriminator.encode(images), sentence.to(cond.dtype))
    grad_x, grad_e = torch.autograd.grad(logits.float().sum(), (images, sentence), create_graph=True)
    grad = torch.cat([grad_x.flatten(1).float(), grad_e.flatten(1).float()], dim=1)
    return grad.pow(2).sum(1).pow(power / 2).mean()  # ||g||^p without sqrt's infinite slope at 0
