"""Tiny GAN training data shared by the trainer and stage tests: real images per stage, padded captions,
mismatched captions (imported as ``from tiny_gan import ...``; pytest puts tests/ on sys.path)."""

import torch

from t2i.structures import Batch

WORDS = ["a", "bird", "green", "crown", "red", "wing", "small", "blue"]


def tiny_batches(n_batches=2, b=4, sizes=(32, 64), seed=0):
    """``n_batches`` batches of ``b`` random images per stage size, captions over :data:`WORDS` (ids 1..8)."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n_batches):
        lengths = torch.tensor(sorted(torch.randint(2, 6, (b,), generator=g).tolist(), reverse=True))
        caps = torch.randint(1, len(WORDS) + 1, (b, 5), generator=g)
        caps[torch.arange(5)[None] >= lengths[:, None]] = 0
        batches.append(Batch(images=[torch.rand(b, 3, s, s, generator=g) * 2 - 1 for s in sizes], captions=caps,
                             lengths=lengths, class_ids=torch.arange(b), wrong_captions=caps.flip(0),
                             wrong_lengths=lengths.flip(0)))
    return batches
