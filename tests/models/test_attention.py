"""Word attention (t2i/models/attention.py, AttnGAN Eq. (1)-(3)) against a loop over pixels and words."""

import torch

from t2i.models.attention import WordAttention, masked_softmax, word_attention


def test_masked_softmax_gives_padding_exactly_zero_and_an_all_masked_row_zeros():
    scores = torch.tensor([[1.0, 2.0, 3.0], [0.5, 0.5, 0.5]])
    mask = torch.tensor([[False, False, True], [True, True, True]])
    w = masked_softmax(scores, mask)
    torch.testing.assert_close(w[0, :2], torch.softmax(scores[0, :2], 0))
    assert w[0, 2] == 0 and torch.equal(w[1], torch.zeros(3))


def test_word_attention_matches_a_loop_and_sharpens_with_gamma():
    g = torch.Generator().manual_seed(0)
    query, words = torch.randn(2, 4, 3, generator=g), torch.randn(2, 5, 3, generator=g)
    pad = torch.arange(5)[None] >= torch.tensor([5, 2])[:, None]
    for gamma in (1.0, 4.0):
        context, attn = word_attention(query, words, pad, gamma=gamma)
        for b, n in ((0, 5), (1, 2)):
            for j in range(4):
                w = torch.softmax(gamma * (words[b, :n] @ query[b, j]), 0)  # Eq. (3), padding left out
                torch.testing.assert_close(attn[b, j, :n], w)
                torch.testing.assert_close(context[b, j], w @ words[b, :n])  # Eq. (2)
        assert torch.all(attn[1, :, 2:] == 0)


def test_word_attention_module_maps_words_into_the_feature_space_per_pixel():
    torch.manual_seed(0)
    module = WordAttention(channels=4, word_dim=6)
    features, words = torch.randn(2, 4, 3, 3), torch.randn(2, 5, 6)
    pad = torch.tensor([[False] * 5, [False, False, False, True, True]])
    context, attn = module(features, words, pad)
    assert context.shape == (2, 4, 3, 3) and attn.shape == (2, 5, 3, 3)
    torch.testing.assert_close(attn.sum(1), torch.ones(2, 3, 3))
    keys = words @ module.project.weight.T  # e' = U e
    w = torch.softmax(keys[1, :3] @ features[1, :, 2, 1], 0)
    torch.testing.assert_close(attn[1, :3, 2, 1], w)
    torch.testing.assert_close(context[1, :, 2, 1], w @ keys[1, :3])
