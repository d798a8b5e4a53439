"""DAMSM matching losses (AttnGAN, Xu et al. 2018, Sec. 3.2, Eq. 7-14), vectorised over the batch.

Matches ``words_loss``/``sent_loss`` in taoxugit/AttnGAN ``code/miscc/losses.py`` and ``func_attention`` in
``code/GlobalAttention.py``, except that Eq. (10) keeps the paper's ``1/gamma2`` exponent unless
``released_eq10=True``. All maths runs in float32 with autocast off.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from t2i.models.attention import masked_softmax

EPS = 1e-8  # AttnGAN cosine_similarity eps


@dataclass
class DAMSMLossOutput:
    """Losses and scores of one DAMSM evaluation.

    Attributes:
        loss: ``word_i2t + word_t2i + sent_i2t + sent_t2i`` (AttnGAN pretrain_DAMSM: w_loss0 + w_loss1 + s_loss0 + s_loss1).
        word_i2t / word_t2i: word-level losses: ``i2t`` picks the caption of each image (softmax over
            captions, the reference's ``w_loss0``, Eq. 12's ``L_2^w``); ``t2i`` picks the image of each
            caption (``w_loss1``, ``L_1^w``, from P(D|Q) of Eq. 11).
        sent_i2t / sent_t2i: the sentence-level losses likewise (Eq. 13-14).
        word_scores / sent_scores: ``[B_img, B_cap]`` gamma3-scaled scores before masking.
        attn_maps: ``[B, T, h, w]`` attention of each caption's words over its own image's regions
            (AttnGAN Eq. 9), zero at padding words.
    """

    loss: Tensor
    word_i2t: Tensor
    word_t2i: Tensor
    sent_i2t: Tensor
    sent_t2i: Tensor
    word_scores: Tensor
    sent_scores: Tensor
    attn_maps: Tensor


@dataclass
class CaptionNegatives:
    """Extra negative captions of each image, ranked against its own caption in the image -> caption direction.

    Compositional hard negatives (Yuksekgonul et al. 2023, NegCLIP): image ``i``'s caption with one colour word
    swapped names a colour the image does not have, so only an encoder that binds colours to parts can rank it
    below the true caption; the in-batch negatives of other species can be told apart by the species alone.

    Attributes:
        words: ``[B, K, T, D]`` word features of the ``K`` negatives of each image.
        sentence: ``[B, K, D]`` their sentence vectors.
        pad_mask: ``[B, K, T]`` True at padding.
        valid: ``[B, K]`` False where a caption had no colour word to swap (that negative is left out).
    """

    words: Tensor
    sentence: Tensor
    pad_mask: Tensor
    valid: Tensor


def same_class_mask(class_ids: Tensor | None, batch_size: int, device: torch.device) -> Tensor | None:
    """``[B, B]`` True where samples i != j share a class (AttnGAN masks those scores with -inf)."""
    if class_ids is None:
        return None
    class_ids = class_ids.to(device)
    mask = class_ids[:, None] == class_ids[None, :]
    return mask & ~torch.eye(batch_size, dtype=torch.bool, device=device)


def _cosine(x: Tensor, y: Tensor, dim: int = -1) -> Tensor:
    """AttnGAN's cosine: ``x.y / max(|x||y|, eps)``."""
    return (x * y).sum(dim) / (x.norm(dim=dim) * y.norm(dim=dim)).clamp(min=EPS)


def _matching_ce(scores: Tensor, mask: Tensor | None, extra: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Cross-entropy with labels ``arange(B)`` over rows (image -> captions) and columns (caption -> images).

    ``extra``: ``[B, K]`` scores of each image's own negative captions (-inf where left out), appended to its
    row only: they enter the image -> caption loss and not the caption -> image one.
    """
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))
    labels = torch.arange(scores.shape[0], device=scores.device)
    rows = scores if extra is None else torch.cat([scores, extra], dim=1)
    return F.cross_entropy(rows, labels), F.cross_entropy(scores.t(), labels)


def _attend_and_score(s: Tensor, regions: Tensor, words: Tensor, pad_mask: Tensor, gamma1: float, gamma2: float,
                      released_eq10: bool, pairs: str) -> tuple[Tensor, Tensor]:
    """Eq. 8-10 from the word-region products ``s`` (``[..., N, T]``); ``pairs`` names the einsum layout."""
    s = masked_softmax(s, pad_mask[..., None, :], dim=-1)  # Eq. (8): normalise over the caption's words
    attn = torch.softmax(gamma1 * s.transpose(-1, -2), dim=-1)  # (..., T, N)  Eq. (9)
    context = torch.einsum(pairs, attn, regions)  # (..., T, D)  c_t = sum_n alpha_{t,n} v_n
    rel = _cosine(context, words, dim=-1)  # (..., T)  R(c_t, e_t)
    rel = (gamma2 * rel).masked_fill(pad_mask, float("-inf"))
    scores = torch.logsumexp(rel, dim=-1)  # Eq. (10): log sum_t exp(gamma2 R(c_t, e_t))
    if not released_eq10:
        scores = scores / gamma2  # Eq. (10)'s exponent 1/gamma2
    return scores, attn


def word_region_scores(regions: Tensor, words: Tensor, pad_mask: Tensor, gamma1: float = 4.0, gamma2: float = 5.0,
                       released_eq10: bool = False) -> tuple[Tensor, Tensor]:
    """Image-caption matching scores ``R(Q_j, D_i)`` for every pair (AttnGAN Eq. 7-10).

    Args:
        regions: ``[B_img, D, h, w]`` region features v.
        words: ``[B_cap, T, D]`` word features e.
        pad_mask: ``[B_cap, T]`` True at padding words.
        gamma1: attention sharpness over regions (Eq. 9).
        gamma2: word-importance sharpness (Eq. 10).
        released_eq10: drop Eq. 10's ``1/gamma2`` exponent, as the released code does.

    Returns:
        scores: ``[B_img, B_cap]`` R(Q_j, D_i) (not yet multiplied by gamma3).
        attn: ``[B_img, B_cap, T, h*w]`` attention of each caption's words over each image's regions.
    """
    regions = regions.float().flatten(2).transpose(1, 2)  # (Bi, N, D)
    words = words.float()  # (Bc, T, D)
    s = torch.einsum("ind,jtd->ijnt", regions, words)  # (Bi, Bc, N, T)  Eq. (7): s = e^T v
    b_img = regions.shape[0]
    return _attend_and_score(s, regions, words[None], pad_mask[None].expand(b_img, -1, -1), gamma1, gamma2,
                             released_eq10, "ijtn,ind->ijtd")


def paired_word_region_scores(regions: Tensor, words: Tensor, pad_mask: Tensor, gamma1: float = 4.0,
                              gamma2: float = 5.0, released_eq10: bool = False) -> Tensor:
    """``R(Q_ik, D_i)`` of each image with its own ``K`` captions only (the diagonal of :func:`word_region_scores`).

    Args:
        regions: ``[B, D, h, w]``; words: ``[B, K, T, D]``; pad_mask: ``[B, K, T]``.

    Returns:
        ``[B, K]`` scores (not yet multiplied by gamma3).
    """
    regions = regions.float().flatten(2).transpose(1, 2)  # (B, N, D)
    words = words.float()
    s = torch.einsum("bnd,bktd->bknt", regions, words)  # (B, K, N, T)
    scores, _ = _attend_and_score(s, regions, words, pad_mask, gamma1, gamma2, released_eq10, "bktn,bnd->bktd")
    return scores


def word_loss(regions: Tensor, words: Tensor, pad_mask: Tensor, class_ids: Tensor | None = None,
              gamma1: float = 4.0, gamma2: float = 5.0, gamma3: float = 10.0, released_eq10: bool = False,
              negatives: CaptionNegatives | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Word-level DAMSM loss (Eq. 7-12) for a batch of matching image/caption pairs.

    Args:
        regions: ``[B, D, h, w]`` region features of the images.
        words: ``[B, T, D]`` word features of their captions.
        pad_mask: ``[B, T]`` True at padding.
        class_ids: ``[B]`` classes; other samples of the same class are not used as negatives.
        negatives: each image's extra negative captions (:class:`CaptionNegatives`; None: AttnGAN's loss).

    Returns:
        loss_i2t, loss_t2i: scalars (reference ``w_loss0``, ``w_loss1``).
        scores: ``[B, B]`` gamma3 * R(Q_j, D_i), rows images, columns captions.
        attn_maps: ``[B, T, h, w]`` attention of caption i's words over image i's regions.
    """
    with torch.autocast(device_type=regions.device.type, enabled=False):
        b, _, h, w = regions.shape
        r, attn = word_region_scores(regions, words, pad_mask, gamma1, gamma2, released_eq10)
        scores = gamma3 * r  # Eq. (11)
        extra = None
        if negatives is not None:
            extra = gamma3 * paired_word_region_scores(regions, negatives.words, negatives.pad_mask, gamma1, gamma2,
                                                       released_eq10)
            extra = extra.masked_fill(~negatives.valid, float("-inf"))
        loss_i2t, loss_t2i = _matching_ce(scores, same_class_mask(class_ids, b, scores.device), extra)
        idx = torch.arange(b, device=regions.device)
        attn_maps = attn[idx, idx].masked_fill(pad_mask[:, :, None], 0.0).reshape(b, -1, h, w)  # (B, T, h, w)
    return loss_i2t, loss_t2i, scores, attn_maps


def sentence_loss(global_feat: Tensor, sent_emb: Tensor, class_ids: Tensor | None = None,
                  gamma3: float = 10.0, negatives: CaptionNegatives | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Sentence-level DAMSM loss (Eq. 13-14): cosine of image and sentence vectors, gamma3-scaled softmax.

    Args:
        global_feat: ``[B, D]`` global image features.
        sent_emb: ``[B, D]`` sentence vectors.
        class_ids: ``[B]`` classes for masking same-class negatives.
        negatives: each image's extra negative captions (None: AttnGAN's loss).

    Returns:
        loss_i2t, loss_t2i: scalars (reference ``s_loss0``, ``s_loss1``).
        scores: ``[B, B]`` gamma3 * cos(image i, sentence j).
    """
    with torch.autocast(device_type=global_feat.device.type, enabled=False):
        g, s = global_feat.float(), sent_emb.float()
        norms = g.norm(dim=1)[:, None] * s.norm(dim=1)[None, :]  # (B, B)
        scores = gamma3 * (g @ s.t()) / norms.clamp(min=EPS)  # Eq. (13): R(Q, D) = cos(v̄, ē)
        extra = None
        if negatives is not None:
            extra = gamma3 * _cosine(g[:, None, :], negatives.sentence.float(), dim=-1)  # (B, K)
            extra = extra.masked_fill(~negatives.valid, float("-inf"))
        loss_i2t, loss_t2i = _matching_ce(scores, same_class_mask(class_ids, g.shape[0], g.device), extra)
    return loss_i2t, loss_t2i, scores


def damsm_loss(regions: Tensor, global_feat: Tensor, words: Tensor, sent_emb: Tensor, pad_mask: Tensor,
               class_ids: Tensor | None = None, gamma1: float = 4.0, gamma2: float = 5.0, gamma3: float = 10.0,
               released_eq10: bool = False, negatives: CaptionNegatives | None = None) -> DAMSMLossOutput:
    """The full DAMSM loss (AttnGAN Eq. 14: ``L_DAMSM = L_1^w + L_2^w + L_1^s + L_2^s``).

    Args:
        regions: ``[B, D, h, w]``; global_feat: ``[B, D]`` (image encoder outputs).
        words: ``[B, T, D]``; sent_emb: ``[B, D]``; pad_mask: ``[B, T]`` (text encoder outputs).
        class_ids: ``[B]`` or None.
        negatives: each image's extra negative captions for both image -> caption losses (None: AttnGAN).
    """
    w0, w1, word_scores, attn_maps = word_loss(regions, words, pad_mask, class_ids, gamma1, gamma2, gamma3,
                                               released_eq10, negatives)
    s0, s1, sent_scores = sentence_loss(global_feat, sent_emb, class_ids, gamma3, negatives)
    return DAMSMLossOutput(loss=w0 + w1 + s0 + s1, word_i2t=w0, word_t2i=w1, sent_i2t=s0, sent_t2i=s1,
                           word_scores=word_scores, sent_scores=sent_scores, attn_maps=attn_maps)


class DAMSMLoss:
    """The DAMSM loss with its gammas fixed (for GAN trainers: ``lambda * DAMSMLoss(...)(...)``).

    Args:
        gamma1, gamma2, gamma3: AttnGAN's smoothing factors (4, 5, 10 for birds and COCO).
        released_eq10: use the released code's Eq. (10) (no ``1/gamma2`` exponent).
    """

    def __init__(self, gamma1: float = 4.0, gamma2: float = 5.0, gamma3: float = 10.0, released_eq10: bool = False):
        self.gamma1, self.gamma2, self.gamma3, self.released_eq10 = gamma1, gamma2, gamma3, released_eq10

    def __call__(self, regions: Tensor, global_feat: Tensor, words: Tensor, sent_emb: Tensor, pad_mask: Tensor,
                 class_ids: Tensor | None = None, negatives: CaptionNegatives | None = None) -> DAMSMLossOutput:
        return damsm_loss(regions, global_feat, words, sent_emb, pad_mask, class_ids,
                          self.gamma1, self.gamma2, self.gamma3, self.released_eq10, negatives)
