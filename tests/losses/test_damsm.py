"""DAMSM losses against a per-caption loop transcribing AttnGAN's words_loss / func_attention / sent_loss."""

import math

import pytest
import torch
import torch.nn.functional as F

from t2i.losses.damsm import DAMSMLoss, damsm_loss, sentence_loss, word_loss


def _func_attention(query, context, gamma1):
    """AttnGAN GlobalAttention.func_attention. query: [B, D, L]; context: [B, D, h, w]."""
    b, l = query.shape[0], query.shape[2]
    ih, iw = context.shape[2], context.shape[3]
    ctx = context.reshape(b, -1, ih * iw)  # B x D x N
    attn = torch.bmm(ctx.transpose(1, 2), query)  # B x N x L  Eq. 7
    attn = torch.softmax(attn.reshape(b * ih * iw, l), dim=1).reshape(b, ih * iw, l)  # Eq. 8
    attn = attn.transpose(1, 2).reshape(b * l, ih * iw)
    attn = torch.softmax(attn * gamma1, dim=1).reshape(b, l, ih * iw)  # Eq. 9
    weighted = torch.bmm(ctx, attn.transpose(1, 2))  # B x D x L
    return weighted, attn.reshape(b, l, ih, iw)


def _cos(x1, x2, eps=1e-8):
    return (x1 * x2).sum(1) / (x1.norm(dim=1) * x2.norm(dim=1)).clamp(min=eps)


def _loop_words_loss(img_features, words_emb, cap_lens, class_ids, g1, g2, g3, released):
    """AttnGAN words_loss, one caption at a time; words_emb: [B, D, T] (reference layout)."""
    b = img_features.shape[0]
    sims, maps = [], []
    for i in range(b):
        n = int(cap_lens[i])
        word = words_emb[i, :, :n].unsqueeze(0).repeat(b, 1, 1)  # B x D x n
        wctx, attn = _func_attention(word, img_features, g1)
        maps.append(attn[i])
        word = word.transpose(1, 2).reshape(b * n, -1)
        wctx = wctx.transpose(1, 2).reshape(b * n, -1)
        row = _cos(word, wctx).reshape(b, n)
        row = torch.log(torch.exp(row * g2).sum(1, keepdim=True))  # Eq. 10 as released
        if not released:
            row = row / g2
        sims.append(row)
    sims = torch.cat(sims, 1) * g3
    if class_ids is not None:
        mask = (class_ids[None, :] == class_ids[:, None]) & ~torch.eye(b, dtype=torch.bool)
        sims = sims.masked_fill(mask, -math.inf)
    labels = torch.arange(b)
    return F.cross_entropy(sims, labels), F.cross_entropy(sims.t(), labels), maps, sims


def _loop_sent_loss(cnn_code, rnn_code, class_ids, g3):
    b = cnn_code.shape[0]
    scores = torch.zeros(b, b)
    for i in range(b):
        for j in range(b):
            scores[i, j] = g3 * _cos(cnn_code[i:i + 1], rnn_code[j:j + 1])[0]
    if class_ids is not None:
        mask = (class_ids[None, :] == class_ids[:, None]) & ~torch.eye(b, dtype=torch.bool)
        scores = scores.masked_fill(mask, -math.inf)
    labels = torch.arange(b)
    return F.cross_entropy(scores, labels), F.cross_entropy(scores.t(), labels)


def _inputs(seed=0, b=5, d=8, t=6, h=3, w=3):
    g = torch.Generator().manual_seed(seed)
    regions = torch.randn(b, d, h, w, generator=g)
    words = torch.randn(b, t, d, generator=g)
    lengths = torch.tensor([6, 4, 6, 1, 3])[:b]
    pad_mask = torch.arange(t)[None, :] >= lengths[:, None]
    words = words.masked_fill(pad_mask[..., None], 0.0)  # the BiLSTM's zero padding
    return regions, words, lengths, pad_mask


@pytest.mark.parametrize("released", [False, True])
@pytest.mark.parametrize("class_ids", [None, torch.tensor([3, 1, 3, 2, 1])])
def test_word_loss_matches_reference_loop(released, class_ids):
    regions, words, lengths, pad_mask = _inputs()
    l0, l1, scores, maps = word_loss(regions, words, pad_mask, class_ids, 4.0, 5.0, 10.0, released_eq10=released)
    r0, r1, rmaps, rsims = _loop_words_loss(regions, words.transpose(1, 2), lengths, class_ids, 4.0, 5.0, 10.0, released)
    assert torch.allclose(l0, r0, atol=1e-5) and torch.allclose(l1, r1, atol=1e-5)
    finite = torch.isfinite(rsims)
    assert torch.allclose(scores[finite], rsims[finite], atol=1e-4)
    for i, m in enumerate(rmaps):
        n = int(lengths[i])
        assert torch.allclose(maps[i, :n], m, atol=1e-6)
        assert maps[i, n:].abs().sum() == 0  # zero at padding words
        assert torch.allclose(maps[i, :n].sum(dim=(1, 2)), torch.ones(n), atol=1e-5)  # Eq. 9 sums to 1 over regions


def test_paper_eq10_is_released_divided_by_gamma2():
    regions, words, _, pad_mask = _inputs(seed=1)
    *_, paper, _ = word_loss(regions, words, pad_mask, gamma3=1.0)
    *_, released, _ = word_loss(regions, words, pad_mask, gamma3=1.0, released_eq10=True)
    assert torch.allclose(paper * 5.0, released, atol=1e-5)


@pytest.mark.parametrize("class_ids", [None, torch.tensor([0, 0, 1, 2, 1])])
def test_sentence_loss_matches_loop(class_ids):
    g = torch.Generator().manual_seed(2)
    img, sent = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    l0, l1, _ = sentence_loss(img, sent, class_ids, gamma3=10.0)
    r0, r1 = _loop_sent_loss(img, sent, class_ids, 10.0)
    assert torch.allclose(l0, r0, atol=1e-5) and torch.allclose(l1, r1, atol=1e-5)


def test_perfect_match_gives_small_loss_and_gradients_flow():
    # Sentence vectors equal to the image vectors, orthogonal across the batch: loss -> B-way certainty.
    img = torch.eye(4, 8) * 3
    l0, l1, _ = sentence_loss(img, img.clone(), None, gamma3=10.0)
    expected = math.log(1 + 3 * math.exp(-10.0))  # softmax of [10, 0, 0, 0]
    assert abs(l0.item() - expected) < 1e-6 and abs(l1.item() - expected) < 1e-6
    regions, words, _, pad_mask = _inputs(seed=3)
    regions.requires_grad_(True)
    words.requires_grad_(True)
    sent = torch.randn(5, 8, requires_grad=True)
    out = DAMSMLoss()(regions, regions.mean((2, 3)), words, sent, pad_mask, torch.tensor([0, 1, 2, 3, 4]))
    out.loss.backward()
    assert torch.isfinite(regions.grad).all() and torch.isfinite(words.grad).all()
    assert words.grad[pad_mask].abs().sum() == 0  # padding words take no part in the word loss
    assert words.grad[~pad_mask].abs().sum() > 0
    assert out.attn_maps.shape == (5, 6, 3, 3)
    assert torch.allclose(out.loss, out.word_i2t + out.word_t2i + out.sent_i2t + out.sent_t2i)


def test_bf16_autocast_runs_in_float32():
    regions, words, _, pad_mask = _inputs(seed=4)
    ref = damsm_loss(regions, regions.mean((2, 3)), words, words.mean(1), pad_mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = damsm_loss(regions, regions.mean((2, 3)), words, words.mean(1), pad_mask)
    assert out.loss.dtype == torch.float32
    assert torch.allclose(out.loss, ref.loss, atol=1e-5)


# ------------------------------------------------------------------ colour-swapped hard negatives
def _negatives(words, pad_mask, sentence, valid):
    from t2i.losses.damsm import CaptionNegatives

    return CaptionNegatives(words=words, sentence=sentence, pad_mask=pad_mask, valid=valid)


@pytest.mark.parametrize("released", [False, True])
def test_paired_word_scores_are_the_diagonal_of_all_pairs(released):
    from t2i.losses.damsm import paired_word_region_scores, word_region_scores

    regions, words, _, pad_mask = _inputs(seed=3)
    all_pairs, _ = word_region_scores(regions, words, pad_mask, 4.0, 5.0, released)
    # image i with K = 2 captions: its own and the next image's
    nxt = torch.roll(torch.arange(5), -1)
    pw = torch.stack([words, words[nxt]], 1)
    pm = torch.stack([pad_mask, pad_mask[nxt]], 1)
    paired = paired_word_region_scores(regions, pw, pm, 4.0, 5.0, released)
    assert paired.shape == (5, 2)
    assert torch.allclose(paired[:, 0], all_pairs.diagonal(), atol=1e-5)
    assert torch.allclose(paired[:, 1], all_pairs[torch.arange(5), nxt], atol=1e-5)


def test_negatives_enter_the_image_to_caption_losses_only():
    regions, words, _, pad_mask = _inputs(seed=4)
    g = torch.Generator().manual_seed(5)
    glob, sent = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    plain = damsm_loss(regions, glob, words, sent, pad_mask, gamma3=10.0)
    # left-out negatives change nothing
    off = _negatives(words[:, None], pad_mask[:, None], sent[:, None], torch.zeros(5, 1, dtype=torch.bool))
    same = damsm_loss(regions, glob, words, sent, pad_mask, gamma3=10.0, negatives=off)
    assert torch.allclose(same.loss, plain.loss, atol=1e-6)
    # a negative equal to the true caption: i2t = mean_i [logsumexp(row_i, pos_i) - pos_i]; t2i unchanged
    on = _negatives(words[:, None], pad_mask[:, None], sent[:, None], torch.ones(5, 1, dtype=torch.bool))
    out = damsm_loss(regions, glob, words, sent, pad_mask, gamma3=10.0, negatives=on)
    for got, scores, t2i_got, t2i_plain in ((out.sent_i2t, plain.sent_scores, out.sent_t2i, plain.sent_t2i),
                                             (out.word_i2t, plain.word_scores, out.word_t2i, plain.word_t2i)):
        pos = scores.diagonal()
        want = (torch.logsumexp(torch.cat([scores, pos[:, None]], 1), 1) - pos).mean()
        assert torch.allclose(got, want, atol=1e-5)
        assert torch.allclose(t2i_got, t2i_plain, atol=1e-6)
    assert out.loss > plain.loss
