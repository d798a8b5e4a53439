"""Word attention, shared by the AttnGAN generator and the DAMSM matching loss.

AttnGAN (Xu et al., 2018), Eq. (1)-(3): every image sub-region (query) attends over the words of its
caption; padding words get zero weight.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def masked_softmax(scores: Tensor, pad_mask: Tensor | None, dim: int = -1) -> Tensor:
    """Softmax over ``dim`` with masked positions given exactly zero weight.

    Args:
        scores: ``[..., T]`` unnormalised scores (any float dtype; computed in float32).
        pad_mask: bool, broadcastable to ``scores``, True where the position must get no weight.
    """
    scores = scores.float()
    if pad_mask is not None:
        scores = scores.masked_fill(pad_mask, float("-inf"))
    weights = torch.softmax(scores, dim=dim)
    # A row whose positions are all masked would be NaN; give it zeros instead.
    return torch.nan_to_num(weights, nan=0.0)


def word_attention(query: Tensor, words: Tensor, pad_mask: Tensor | None = None,
                   gamma: float = 1.0) -> tuple[Tensor, Tensor]:
    """Attend from every query vector over the words.

    Args:
        query: ``[B, N, D]`` query vectors (image sub-regions).
        words: ``[B, T, D]`` word features in the same space as the query.
        pad_mask: ``[B, T]`` True at padding (or ``[B, N, T]``, one mask per query).
        gamma: sharpness multiplying the scores before the softmax (DAMSM's gamma1; 1 in the generator).

    Returns:
        context: ``[B, N, D]`` word-context vector for each query, AttnGAN Eq. (2) ``c_j = sum_i beta_ji e_i``.
        attn: ``[B, N, T]`` attention weights, summing to 1 over the words (Eq. (3)).
    """
    scores = gamma * torch.bmm(query, words.transpose(1, 2))  # (B, N, T)  Eq. (3): s'_ji = h_j^T e'_i
    mask = None if pad_mask is None else pad_mask if pad_mask.dim() == 3 else pad_mask[:, None, :]
    attn = masked_softmax(scores, mask, dim=-1).to(words.dtype)  # (B, N, T)
    context = torch.bmm(attn, words)  # (B, N, D)
    return context, attn


class WordAttention(nn.Module):
    """AttnGAN's attention model F^attn (Eq. (1)-(3)) for a feature map.

    Word features ``e`` (``[B, T, word_dim]``) are mapped into the image feature space by
    ``U`` (a 1x1 convolution without bias in the reference: ``word_dim x channels`` weights), then
    every pixel of the ``[B, C, H, W]`` feature map attends over the words.

    Args:
        channels: C of the feature map; word_dim: size of the word features.
        reference_mask: mask as the released AttnGAN code does. Its ``GlobalAttentionGeneral`` flattens the scores
            to ``[B * HW, T]`` (row ``b * HW + q``) and masks them with ``mask.repeat(queryL, 1)``, whose row ``r`` is
            the mask of caption ``r % B``, not of caption ``b`` (a per-sample repeat was meant). With captions of
            different lengths in a batch, pixels then ignore real words or attend to padding (whose features are
            zero). False (default): each sample's own mask, as the paper.
    """

    def __init__(self, channels: int, word_dim: int, reference_mask: bool = False):
        super().__init__()
        self.project = nn.Linear(word_dim, channels, bias=False)  # U in Eq. (2): e' = U e
        self.reference_mask = reference_mask

    def forward(self, features: Tensor, words: Tensor, pad_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """
        Args:
            features: ``[B, C, H, W]`` image features h.
            words: ``[B, T, word_dim]`` word features e.
            pad_mask: ``[B, T]`` True at padding.

        Returns:
            context: ``[B, C, H, W]`` word-context features.
            attn: ``[B, T, H, W]`` attention maps (sum to 1 over T at every pixel).
        """
        b, c, h, w = features.shape
        query = features.flatten(2).transpose(1, 2)  # (B, HW, C)
        keys = self.project(words)  # (B, T, C)
        if self.reference_mask and pad_mask is not None:
            rows = torch.arange(b, device=words.device)[:, None] * (h * w) + torch.arange(h * w, device=words.device)
            pad_mask = pad_mask[rows % b]  # (B, HW, T): the released mask.repeat(queryL, 1), row b*HW+q -> caption (b*HW+q) % B
        context, attn = word_attention(query, keys, pad_mask)
        context = context.transpose(1, 2).reshape(b, c, h, w)  # (B, C, H, W)
        attn = attn.transpose(1, 2).reshape(b, -1, h, w)  # (B, T, H, W)
        return context, attn
