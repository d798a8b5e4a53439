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
        pad_mask: ``[B, T]`` True at padding.
        gamma: sharpness multiplying the scores before the softmax (DAMSM's gamma1; 1 in the generator).

    Returns:
        context: ``[B, N, D]`` word-context vector for each query, AttnGAN Eq. (2) ``c_j = sum_i beta_ji e_i``.
        attn: ``[B, N, T]`` attention weights, summing to 1 over the words (Eq. (3)).
    """
    scores = gamma * torch.bmm(query, words.transpose(1, 2))  # (B, N, T)  Eq. (3): s'_ji = h_j^T e'_i
    mask = pad_mask[:, None, :] if pad_mask is not None else None
    attn = masked_softmax(scores, mask, dim=-1).to(words.dtype)  # (B, N, T)
    context = torch.bmm(attn, words)  # (B, N, D)
    return context, attn


class WordAttention(nn.Module):
    """AttnGAN's attention model F^attn (Eq. (1)-(3)) for a feature map.

    Word features ``e`` (``[B, T, word_dim]``) are mapped into the image feature space by
    ``U`` (a 1x1 convolution without bias in the reference: ``word_dim x channels`` weights), then
    every pixel of the ``[B, C, H, W]`` feature map attends over the words.
    """

    def __init__(self, channels: int, word_dim: int):
        super().__init__()
        self.project = nn.Linear(word_dim, channels, bias=False)  # U in Eq. (2): e' = U e

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
        context, attn = word_attention(query, keys, pad_mask)
        context = context.transpose(1, 2).reshape(b, c, h, w)  # (B, C, H, W)
        attn = attn.transpose(1, 2).reshape(b, -1, h, w)  # (B, T, H, W)
        return context, attn
