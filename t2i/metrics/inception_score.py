"""Inception Score (Salimans et al. 2016), as computed by improved-gan's ``inception_score.py``.

``IS = exp(E_x KL(p(y|x) || p(y)))`` over 10 splits at ``k*N//10``, mean and std (ddof 0) of the split
scores. The class posterior comes from logits via log-softmax in float64.

COCO / ImageNet protocol (improved-gan, torch-fidelity ``logits_unbiased``, stylegan3): the logits are the
FID Inception's ``pool3 @ fc.weight.T`` *without the bias* (:class:`t2i.metrics.inception.FIDInceptionV3`
returns them so); the softmax covers all 1008 outputs of the 2015 graph (8 of them unused classes), so they
are passed unchanged; ``num_classes`` restricts to the first K (e.g. 1000) only when a protocol asks for it.

CUB protocol (StackGAN's ``StackGAN-inception-model/inception_score.py``, used by StackGAN, StackGAN++ and
AttnGAN for birds): a fine-tuned Inception-v3 with ``50 + 1`` outputs whose output 0 is a background class;
the softmax covers outputs ``1..50`` only (``skip_first=True``); the images are shuffled, fed in batches of
64 and the last incomplete batch is dropped (``batch_size=64``: ``64 * floor(N / 64)`` images), 10 splits.
Its input preparation is the ``stackgan-cub`` profile (:mod:`t2i.metrics.profiles`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from t2i.errors import DataError

CUB_PROFILE = "stackgan-cub"  # input preparation of a user-supplied CUB classifier (t2i.metrics.profiles)


def inception_score(logits: torch.Tensor | np.ndarray, splits: int = 10, num_classes: int | None = None,
                    skip_first: bool = False, batch_size: int | None = None,
                    rng: np.random.Generator | int | None = None) -> tuple[float, float]:
    """Inception Score of ``logits [N, K]``: ``(mean, std)`` over ``splits`` splits.

    Args:
        logits: ``[N, K]`` class logits (unbiased for the FID Inception).
        splits: number of splits (10).
        num_classes: keep only the first ``num_classes`` logits (after ``skip_first``); None: all.
        skip_first: leave out logit 0 (StackGAN's background class) before the softmax.
        batch_size: keep ``batch_size * floor(N / batch_size)`` images, as StackGAN's loop over full batches.
        rng: shuffle the images first (numpy generator or seed), as StackGAN does; None keeps the order.

    Raises:
        DataError: fewer images than splits, a wrong shape, or non-finite logits.
    """
    logits = torch.as_tensor(logits).to(torch.float64)
    if logits.dim() == 2:
        logits = logits[:, int(skip_first):][:, :num_classes]
        if rng is not None:
            logits = logits[torch.from_numpy(np.random.default_rng(rng).permutation(logits.shape[0]))]
        if batch_size:
            logits = logits[:batch_size * (logits.shape[0] // batch_size)]
    n = logits.shape[0] if logits.dim() == 2 else 0
    if n < splits:
        raise DataError(f"the Inception Score needs at least {splits} images (one per split"
                        f"{f', in full batches of {batch_size}' if batch_size else ''}) as logits [N, K]; "
                        f"got shape {tuple(logits.shape)}")
    if not torch.isfinite(logits).all():
        raise DataError("the Inception Score got NaN/inf logits; check the generated images and the classifier")
    log_p = torch.log_softmax(logits, dim=1)  # log p(y|x)
    scores = []
    for k in range(splits):
        part = log_p[k * n // splits:(k + 1) * n // splits]
        log_py = torch.logsumexp(part, dim=0) - math.log(part.shape[0])  # log p(y), the split's marginal
        kl = (part.exp() * (part - log_py)).sum(dim=1).mean()  # E_x KL(p(y|x) || p(y))
        scores.append(math.exp(kl.item()))
    return float(np.mean(scores)), float(np.std(scores))
