"""Inception Score (Salimans et al. 2016), as computed by improved-gan's ``inception_score.py``.

``IS = exp(E_x KL(p(y|x) || p(y)))`` over 10 splits at ``k*N//10``, mean and std (ddof 0) of the split
scores. The class posterior comes from logits via log-softmax in float64. All given logits are used: the
reference TF code takes the softmax over all 1008 outputs of the 2015 graph (8 of them are unused classes),
so the COCO protocol passes the FID Inception's 1008 logits unchanged; ``num_classes`` restricts to the
first K (e.g. 1000) only when a protocol asks for it. The CUB protocol passes a fine-tuned bird classifier's logits.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from t2i.errors import DataError


def inception_score(logits: torch.Tensor | np.ndarray, splits: int = 10,
                    num_classes: int | None = None) -> tuple[float, float]:
    """Inception Score of ``logits [N, K]``: ``(mean, std)`` over ``splits`` splits.

    Raises:
        DataError: fewer images than splits, a wrong shape, or non-finite logits.
    """
    logits = torch.as_tensor(logits).to(torch.float64)[:, :num_classes]
    n = logits.shape[0] if logits.dim() == 2 else 0
    if n < splits:
        raise DataError(f"the Inception Score needs at least {splits} images (one per split) as logits [N, K]; "
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
