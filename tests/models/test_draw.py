"""DRAW filterbank attention (Eq. (19)-(29)), the DRAW VAE and alignDRAW."""

import math

import pytest
import torch

from t2i.losses.draw import draw_elbo
from t2i.models.aligndraw import AlignDRAW
from t2i.models.draw import (DRAW, AttentionReader, AttentionWriter, attention_window, filterbank,
                             filterbank_read, filterbank_write)


def _params(gx_t=0.0, gy_t=0.0, log_sigma2=0.0, log_delta_t=0.0, log_gamma=0.0, batch=1):
    return torch.tensor([[gx_t, gy_t, log_sigma2, log_delta_t, log_gamma]] * batch, dtype=torch.float64)


def test_filterbank_matches_loop_and_rows_sum_to_one():
    torch.manual_seed(0)
    b, n, height, width = 3, 4, 7, 9
    g_x, g_y = torch.rand(b, dtype=torch.float64) * width, torch.rand(b, dtype=torch.float64) * height
    sigma2, delta = torch.rand(b, dtype=torch.float64) + 0.3, torch.rand(b, dtype=torch.float64) + 0.5
    f_x, f_y = filterbank(g_x, g_y, sigma2, delta, n, height, width)
    assert f_x.shape == (b, n, width) and f_y.shape == (b, n, height)
    torch.testing.assert_close(f_x.sum(-1), torch.ones(b, n, dtype=torch.float64))
    torch.testing.assert_close(f_y.sum(-1), torch.ones(b, n, dtype=torch.float64))
    for k in range(b):  # independent loop over Eq. (19) and (25), 1-based indices
        for i in range(1, n + 1):
            mu = g_x[k] + (i - n / 2 - 0.5) * delta[k]
            row = [math.exp(-(a - mu.item()) ** 2 / (2 * sigma2[k].item())) for a in range(1, width + 1)]
            total = sum(row)
            torch.testing.assert_close(f_x[k, i - 1], torch.tensor([v / total for v in row], dtype=torch.float64))


def test_attention_window_eq_22_24():
    window = attention_window(_params(gx_t=0.5, gy_t=-0.5, log_sigma2=math.log(2.0), log_delta_t=math.log(0.5),
                                      log_gamma=math.log(3.0)), n=5, height=10, width=20)
    assert window.g_x.item() == pytest.approx(21 / 2 * 1.5)  # (A+1)/2 (g~X+1)
    assert window.g_y.item() == pytest.approx(11 / 2 * 0.5)
    assert window.delta.item() == pytest.approx((20 - 1) / 4 * 0.5)  # (max(A,B)-1)/(N-1) delta~
    assert window.sigma2.item() == pytest.approx(2.0) and window.gamma.item() == pytest.approx(3.0)


@pytest.mark.parametrize("size", [6, 9])
def test_centred_stride_one_window_reads_back_the_image(size):
    torch.manual_seed(0)
    images = torch.rand(2, 3, size, size, dtype=torch.float64)
    window = attention_window(_params(log_sigma2=math.log(1e-3), batch=2), n=size, height=size, width=size)
    assert window.delta[0].item() == pytest.approx(1.0)
    torch.testing.assert_close(window.f_x[0], torch.eye(size, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(filterbank_read(images, window.f_x, window.f_y), images, atol=1e-6, rtol=0)


def test_write_of_read_patch_lands_where_it_was_read():
    # A 3x3 window of stride 1 and tiny variance centred on pixel (row 5, col 3) (1-based) of a 8x10 image.
    height, width, n = 8, 10, 3
    g_x, g_y = 3.0, 5.0
    params = _params(gx_t=2 * g_x / (width + 1) - 1, gy_t=2 * g_y / (height + 1) - 1,
                     log_sigma2=math.log(1e-3), log_delta_t=math.log((n - 1) / (max(height, width) - 1)))
    window = attention_window(params, n, height, width)
    image = torch.zeros(1, 1, height, width, dtype=torch.float64)
    image[0, 0, 3:6, 1:4] = torch.arange(1, 10, dtype=torch.float64).view(3, 3)  # rows 4-6, cols 2-4 (1-based)
    patch = filterbank_read(image, window.f_x, window.f_y)
    torch.testing.assert_close(patch[0, 0], image[0, 0, 3:6, 1:4], atol=1e-6, rtol=0)
    written = filterbank_write(patch, window.f_x, window.f_y)
    torch.testing.assert_close(written, image, atol=1e-6, rtol=0)


def test_read_and_write_match_matrix_products():
    torch.manual_seed(1)
    b, c, h, w, n = 2, 3, 5, 7, 4
    window = attention_window(torch.randn(b, 5, dtype=torch.float64), n, h, w)
    images = torch.randn(b, c, h, w, dtype=torch.float64)
    patch = torch.randn(b, c, n, n, dtype=torch.float64)
    read = filterbank_read(images, window.f_x, window.f_y)
    written = filterbank_write(patch, window.f_x, window.f_y)
    for k in range(b):
        for ch in range(c):
            torch.testing.assert_close(read[k, ch], window.f_y[k] @ images[k, ch] @ window.f_x[k].T)  # Eq. (27)
            torch.testing.assert_close(written[k, ch], window.f_y[k].T @ patch[k, ch] @ window.f_x[k])  # Eq. (29)


@pytest.mark.parametrize("channels,height,width", [(1, 12, 12), (3, 9, 14), (3, 16, 8)])
def test_reader_writer_shapes_and_gamma(channels, height, width):
    torch.manual_seed(0)
    reader, writer = AttentionReader(16, 3, channels), AttentionWriter(16, 4, channels)
    x = torch.rand(2, channels, height, width)
    h = torch.randn(2, 16)
    r, window = reader(x, x - 0.5, h)
    assert r.shape == (2, 2 * channels * 9) and reader.output_dim(height, width) == r.shape[1]
    glimpse = torch.cat([filterbank_read(x, window.f_x, window.f_y), filterbank_read(x - 0.5, window.f_x, window.f_y)], 1)
    torch.testing.assert_close(r, window.gamma[:, None] * glimpse.flatten(1))
    out, wwin = writer(h, height, width, return_window=True)
    assert out.shape == (2, channels, height, width)
    patch = writer.patch(h).view(2, channels, 4, 4)
    torch.testing.assert_close(out, filterbank_write(patch, wwin.f_x, wwin.f_y) / wwin.gamma[:, None, None, None])
    assert writer(h, 2 * height, width + 3).shape == (2, channels, 2 * height, width + 3)  # any canvas size


def test_gradients_reach_attention_parameters():
    torch.manual_seed(0)
    model = DRAW(height=10, width=12, steps=3, z_dim=4, enc_dim=16, dec_dim=16, read_n=2, write_n=3)
    x = (torch.rand(4, 1, 10, 12) > 0.5).float()
    out = model(x)
    draw_elbo(x, out.canvas_logits, out.mu, out.logvar).loss.backward()
    for name in ("reader.params.weight", "writer.params.weight", "writer.patch.weight", "encoder.weight_ih"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


@pytest.mark.parametrize("attention", [True, False])
@pytest.mark.parametrize("channels,height,width", [(1, 8, 8), (3, 6, 10)])
def test_draw_shapes(attention, channels, height, width):
    torch.manual_seed(0)
    model = DRAW(height, width, channels, steps=3, z_dim=5, enc_dim=12, dec_dim=12, read_n=2, write_n=3,
                 read_attention=attention, write_attention=attention)
    out = model(torch.rand(2, channels, height, width))
    assert out.canvas_logits.shape == (2, channels, height, width)
    assert out.canvases.shape == (2, 3, channels, height, width)
    assert out.mu.shape == out.logvar.shape == (2, 3, 5) and out.prior_mu is None
    torch.testing.assert_close(out.canvases[:, -1], torch.sigmoid(out.canvas_logits))
    samples = model.generate(4, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (4, 3, channels, height, width) and 0 <= samples.min() and samples.max() <= 1
    with pytest.raises(ValueError, match="expects images"):
        model(torch.rand(2, channels, height + 1, width))


def test_draw_step_follows_equations_1_to_6():
    """Re-run DRAW's recurrence by hand from the module's own layers, with the same noise."""
    torch.manual_seed(0)
    model = DRAW(height=6, width=7, steps=2, z_dim=3, enc_dim=8, dec_dim=8, read_n=2, write_n=2)
    x = torch.rand(2, 1, 6, 7)
    torch.manual_seed(5)
    out = model(x)
    torch.manual_seed(5)
    canvas, h_dec, enc, dec = torch.zeros_like(x), torch.zeros(2, 8), None, None
    for t in range(2):
        x_hat = x - torch.sigmoid(canvas)
        window = attention_window(model.reader.params(h_dec), 2, 6, 7)
        r = window.gamma[:, None] * torch.cat([window.f_y @ x[:, 0] @ window.f_x.transpose(1, 2),
                                               window.f_y @ x_hat[:, 0] @ window.f_x.transpose(1, 2)], 1).flatten(1)
        enc = model.encoder(torch.cat([r, h_dec], 1), enc)
        mu, logvar = model.posterior(enc[0]).chunk(2, 1)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        dec = model.decoder(z, dec)
        h_dec = dec[0]
        wwin = attention_window(model.writer.params(h_dec), 2, 6, 7)
        w = model.writer.patch(h_dec).view(2, 2, 2)
        canvas = canvas + (wwin.f_y.transpose(1, 2) @ w @ wwin.f_x / wwin.gamma[:, None, None])[:, None]
        torch.testing.assert_close(out.mu[:, t], mu)
    torch.testing.assert_close(out.canvas_logits, canvas, atol=1e-5, rtol=1e-5)


def test_aligndraw_shapes_alignment_and_prior():
    torch.manual_seed(0)
    model = AlignDRAW(vocab_size=20, height=8, width=10, channels=3, steps=4, z_dim=5, enc_dim=16, dec_dim=16,
                      read_n=2, write_n=3, word_dim=8, lang_dim=6, align_dim=12)
    captions = torch.tensor([[3, 4, 5, 6, 7], [8, 9, 2, 0, 0]])
    lengths = torch.tensor([5, 3])
    x = torch.rand(2, 3, 8, 10)
    out = model(x, captions, lengths)
    assert out.canvases.shape == (2, 4, 3, 8, 10)
    assert out.mu.shape == out.prior_mu.shape == out.prior_logvar.shape == (2, 4, 5)
    assert out.align.shape == (2, 4, 5)
    torch.testing.assert_close(out.align.sum(-1), torch.ones(2, 4))
    assert torch.all(out.align[1, :, 3:] == 0)  # padding words get no weight
    assert torch.all(out.prior_mu[:, 0] == 0) and torch.all(out.prior_logvar[:, 0] == 0)  # p(Z_1) = N(0, I)
    assert out.prior_mu[:, 1:].abs().max() < 1 and out.prior_logvar[:, 1:].abs().max() <= 2  # tanh-bounded
    terms = draw_elbo(x, out.canvas_logits, out.mu, out.logvar, out.prior_mu, out.prior_logvar)
    terms.loss.backward()
    for name in ("align.score.weight", "prior.weight", "text_encoder.encoder.weight", "writer.params.weight"):
        assert dict(model.named_parameters())[name].grad.abs().sum() > 0, name
    gen = model.generate(captions, lengths, generator=torch.Generator().manual_seed(0))
    assert gen.canvases.shape == (2, 4, 3, 8, 10) and gen.align.shape == (2, 4, 5)
    assert torch.all(gen.align[1, :, 3:] == 0)


def test_aligndraw_caption_changes_the_image():
    torch.manual_seed(0)
    model = AlignDRAW(vocab_size=20, height=8, width=8, channels=3, steps=3, z_dim=4, enc_dim=12, dec_dim=12,
                      read_n=2, write_n=2, word_dim=8, lang_dim=6, align_dim=8)
    lengths = torch.tensor([3])
    a = model.generate(torch.tensor([[3, 4, 5]]), lengths, generator=torch.Generator().manual_seed(1)).canvases
    b = model.generate(torch.tensor([[9, 9, 9]]), lengths, generator=torch.Generator().manual_seed(1)).canvases
    assert not torch.allclose(a, b)
