"""DRAW: Gaussian filterbank attention and the recurrent VAE (Gregor et al., 2015, arXiv:1502.04623v2).

Equation numbers are those of the arXiv v2 paper:

* Eq. (1)-(6)   one DRAW step: error image, read, encoder, sample, decoder, canvas update
* Eq. (7)-(8)   Q(Z_t | h_enc_t) = N(mu_t, sigma_t) from linear maps of the encoder state
* Eq. (9)-(12)  reconstruction loss, KL loss, total loss (see :mod:`t2i.losses.draw`)
* Eq. (13)-(16) generation from the prior
* Eq. (17)-(18) read and write without attention
* Eq. (19)-(20) filter mean locations; Eq. (21) the five attention parameters from the decoder state;
  Eq. (22)-(24) grid centre and stride; Eq. (25)-(26) the filterbanks; Eq. (27) attentive read;
  Eq. (28)-(29) attentive write.

Coordinates follow the paper: the filter index ``i`` runs over ``1..N`` and the pixel index ``a`` over
``1..A`` (width ``A``, height ``B``), so that ``g_X = (A + 1) / 2`` with ``g~X = 0`` is exactly the centre
of the image and of the grid. (ericjang/draw and jbornschein/draw index both from 0; the filterbanks are
the same up to that half-pixel bookkeeping, and both give the identity for a centred stride-1 window of
``N = A`` filters.)

Images handled here are intensities in ``[0, 1]`` of any size ``[B, C, H, W]`` (``H = B``, ``W = A`` in the
paper's letters); the same filterbank is applied to every channel, as in alignDRAW's RGB reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from t2i.models.factory import register_model

FILTER_EPS = 1e-8  # guards the row normalisation of Eq. (25)-(26), as in ericjang/draw


@dataclass
class AttentionWindow:
    """Filterbanks and scalars of one attention glimpse.

    Attributes:
        f_x: ``[B, N, W]`` horizontal filterbank F_X (rows sum to 1).
        f_y: ``[B, N, H]`` vertical filterbank F_Y (rows sum to 1).
        gamma: ``[B]`` intensity gamma.
        g_x / g_y: ``[B]`` grid centre in pixels (1-based).
        delta: ``[B]`` stride in pixels.
        sigma2: ``[B]`` isotropic filter variance.
    """

    f_x: Tensor
    f_y: Tensor
    gamma: Tensor
    g_x: Tensor
    g_y: Tensor
    delta: Tensor
    sigma2: Tensor


def filterbank(g_x: Tensor, g_y: Tensor, sigma2: Tensor, delta: Tensor, n: int, height: int, width: int,
               eps: float = FILTER_EPS) -> tuple[Tensor, Tensor]:
    """Gaussian filterbanks F_X and F_Y, DRAW Eq. (19)-(20) and (25)-(26).

    Args:
        g_x, g_y: ``[B]`` grid centre (1-based pixel coordinates).
        sigma2: ``[B]`` filter variance.
        delta: ``[B]`` stride.
        n: number of filters per axis N.
        height, width: image size (B x A in the paper).
        eps: floor for the row normaliser Z_X, Z_Y.

    Returns:
        f_x: ``[B, N, width]``, f_y: ``[B, N, height]``, each row normalised to sum to 1.
    """
    idx = torch.arange(1, n + 1, device=g_x.device, dtype=g_x.dtype)  # i = 1..N
    offsets = idx - n / 2 - 0.5  # (N,)
    mu_x = g_x[:, None] + offsets[None, :] * delta[:, None]  # (B, N)  Eq. (19)
    mu_y = g_y[:, None] + offsets[None, :] * delta[:, None]  # (B, N)  Eq. (20)
    a = torch.arange(1, width + 1, device=g_x.device, dtype=g_x.dtype)  # pixel columns 1..A
    b = torch.arange(1, height + 1, device=g_x.device, dtype=g_x.dtype)  # pixel rows 1..B
    var2 = 2 * sigma2[:, None, None]
    f_x = torch.exp(-(a[None, None, :] - mu_x[:, :, None]) ** 2 / var2)  # (B, N, A)  Eq. (25)
    f_y = torch.exp(-(b[None, None, :] - mu_y[:, :, None]) ** 2 / var2)  # (B, N, B)  Eq. (26)
    f_x = f_x / f_x.sum(-1, keepdim=True).clamp_min(eps)  # 1/Z_X
    f_y = f_y / f_y.sum(-1, keepdim=True).clamp_min(eps)  # 1/Z_Y
    return f_x, f_y


def attention_window(params: Tensor, n: int, height: int, width: int) -> AttentionWindow:
    """Turn the five linear outputs of DRAW Eq. (21) into filterbanks.

    Args:
        params: ``[B, 5]`` = (g~X, g~Y, log sigma^2, log delta~, log gamma), Eq. (21).
        n: filters per axis N.
        height, width: image size.

    Returns:
        The :class:`AttentionWindow`.
    """
    if params.dtype in (torch.float16, torch.bfloat16):  # exp() and the Gaussians need float32 range
        params = params.float()
    gx_t, gy_t, log_sigma2, log_delta_t, log_gamma = params.unbind(-1)
    g_x = (width + 1) / 2 * (gx_t + 1)  # Eq. (22)
    g_y = (height + 1) / 2 * (gy_t + 1)  # Eq. (23)
    # Eq. (24); with a single filter the stride is irrelevant (its offset is 0), so avoid dividing by 0.
    delta = (max(width, height) - 1) / max(n - 1, 1) * torch.exp(log_delta_t)
    sigma2 = torch.exp(log_sigma2)
    f_x, f_y = filterbank(g_x, g_y, sigma2, delta, n, height, width)
    return AttentionWindow(f_x, f_y, torch.exp(log_gamma), g_x, g_y, delta, sigma2)


def filterbank_read(images: Tensor, f_x: Tensor, f_y: Tensor) -> Tensor:
    """Extract an N x N glimpse per channel: ``F_Y x F_X^T`` (DRAW Eq. (27) without gamma).

    Args:
        images: ``[B, C, H, W]``.
        f_x: ``[B, N, W]``; f_y: ``[B, N, H]``.

    Returns:
        ``[B, C, N, N]`` glimpse (rows indexed by F_Y's filters, columns by F_X's).
    """
    return torch.einsum("bih,bchw,bjw->bcij", f_y, images.to(f_x.dtype), f_x)


def filterbank_write(patch: Tensor, f_x: Tensor, f_y: Tensor) -> Tensor:
    """Spread an N x N patch per channel onto the image: ``F_Y^T w F_X`` (DRAW Eq. (29) without 1/gamma).

    Args:
        patch: ``[B, C, N, N]``.
        f_x: ``[B, N, W]``; f_y: ``[B, N, H]``.

    Returns:
        ``[B, C, H, W]``.
    """
    return torch.einsum("bih,bcij,bjw->bchw", f_y, patch.to(f_x.dtype), f_x)


class AttentionReader(nn.Module):
    """Attentive read, DRAW Eq. (21)-(27): gamma [F_Y x F_X^T, F_Y x_hat F_X^T].

    Its own linear layer maps the previous decoder state to the five attention parameters (Eq. (21)).

    Args:
        hidden_dim: size of the decoder state.
        read_n: N, filters per axis.
        channels: image channels C.
    """

    def __init__(self, hidden_dim: int, read_n: int, channels: int = 1):
        super().__init__()
        if read_n < 1:
            raise ValueError(f"read_n must be >= 1, got {read_n}")
        self.read_n, self.channels = read_n, channels
        self.params = nn.Linear(hidden_dim, 5)  # Eq. (21)

    def output_dim(self, height: int, width: int) -> int:
        return 2 * self.channels * self.read_n ** 2

    def forward(self, x: Tensor, x_hat: Tensor, h_dec: Tensor) -> tuple[Tensor, AttentionWindow]:
        """
        Args:
            x: ``[B, C, H, W]`` image; x_hat: ``[B, C, H, W]`` error image (Eq. (1)).
            h_dec: ``[B, hidden_dim]`` previous decoder state.

        Returns:
            r: ``[B, 2 * C * N * N]`` glimpse vector; the :class:`AttentionWindow` used.
        """
        _, _, height, width = x.shape
        window = attention_window(self.params(h_dec), self.read_n, height, width)
        glimpse = torch.cat([filterbank_read(x, window.f_x, window.f_y),
                             filterbank_read(x_hat, window.f_x, window.f_y)], dim=1)  # (B, 2C, N, N)
        r = window.gamma[:, None] * glimpse.flatten(1)  # Eq. (27)
        return r.to(h_dec.dtype), window


class PlainReader(nn.Module):
    """Read without attention, DRAW Eq. (17): the whole image and error image, concatenated."""

    def __init__(self, channels: int = 1):
        super().__init__()
        self.channels = channels

    def output_dim(self, height: int, width: int) -> int:
        return 2 * self.channels * height * width

    def forward(self, x: Tensor, x_hat: Tensor, h_dec: Tensor) -> tuple[Tensor, None]:
        return torch.cat([x.flatten(1), x_hat.flatten(1)], dim=1).to(h_dec.dtype), None  # Eq. (17)


class AttentionWriter(nn.Module):
    """Attentive write, DRAW Eq. (28)-(29): ``1/gamma_hat F_Y^T w_t F_X`` for any canvas size.

    One linear layer emits the write patch ``w_t`` (C x N x N, Eq. (28)), another the five attention
    parameters (Eq. (21), separate from the reader's). The canvas size is a forward argument, so the same
    module serves DRAW's 28 x 28 canvas, alignDRAW's 32 x 32 RGB canvas and a GAN refinement stage.

    Args:
        hidden_dim: size of the LSTM state that drives the writer.
        write_n: N, patch size.
        channels: canvas channels C.
    """

    def __init__(self, hidden_dim: int, write_n: int, channels: int = 1):
        super().__init__()
        if write_n < 1:
            raise ValueError(f"write_n must be >= 1, got {write_n}")
        self.write_n, self.channels = write_n, channels
        self.patch = nn.Linear(hidden_dim, channels * write_n * write_n)  # Eq. (28): w_t = W(h_dec_t)
        self.params = nn.Linear(hidden_dim, 5)  # Eq. (21) for the write window

    def forward(self, h: Tensor, height: int, width: int, return_window: bool = False):
        """
        Args:
            h: ``[B, hidden_dim]`` LSTM state.
            height, width: canvas size.
            return_window: also return the :class:`AttentionWindow`.

        Returns:
            ``[B, C, height, width]`` canvas increment (and the window when asked).
        """
        n = self.write_n
        w = self.patch(h).view(-1, self.channels, n, n)  # (B, C, N, N)
        window = attention_window(self.params(h), n, height, width)
        out = filterbank_write(w, window.f_x, window.f_y) / window.gamma[:, None, None, None]  # Eq. (29)
        out = out.to(h.dtype)
        return (out, window) if return_window else out


class PlainWriter(nn.Module):
    """Write without attention, DRAW Eq. (18): a linear map from the decoder state to the whole canvas."""

    def __init__(self, hidden_dim: int, channels: int, height: int, width: int):
        super().__init__()
        self.shape = (channels, height, width)
        self.linear = nn.Linear(hidden_dim, channels * height * width)

    def forward(self, h: Tensor, height: int, width: int, return_window: bool = False):
        if (height, width) != self.shape[1:]:
            raise ValueError(f"PlainWriter was built for {self.shape[1]}x{self.shape[2]} canvases, got {height}x{width}")
        out = self.linear(h).view(-1, *self.shape)  # Eq. (18)
        return (out, None) if return_window else out


@dataclass
class DrawOutput:
    """What a DRAW / alignDRAW forward pass returns.

    Attributes:
        canvas_logits: ``[B, C, H, W]`` final canvas c_T (logits of the Bernoulli means).
        canvases: ``[B, T, C, H, W]`` sigmoid(c_t) after every step.
        mu / logvar: ``[B, T, Z]`` posterior Q(Z_t | .) parameters.
        prior_mu / prior_logvar: ``[B, T, Z]`` prior parameters, or None for the N(0, I) prior of DRAW.
        align: ``[B, T, L]`` alignDRAW word weights per step (None for DRAW).
    """

    canvas_logits: Tensor
    canvases: Tensor
    mu: Tensor | None = None
    logvar: Tensor | None = None
    prior_mu: Tensor | None = None
    prior_logvar: Tensor | None = None
    align: Tensor | None = None


def make_reader(attention: bool, hidden_dim: int, read_n: int, channels: int) -> nn.Module:
    return AttentionReader(hidden_dim, read_n, channels) if attention else PlainReader(channels)


def make_writer(attention: bool, hidden_dim: int, write_n: int, channels: int, height: int, width: int) -> nn.Module:
    return AttentionWriter(hidden_dim, write_n, channels) if attention else PlainWriter(hidden_dim, channels, height, width)


@register_model
class DRAW(nn.Module):
    """The DRAW recurrent VAE (Gregor et al., 2015, Sec. 2-3), as in ericjang/draw.

    Args:
        height, width: image size (28 x 28 for MNIST).
        channels: image channels.
        steps: glimpses T (paper: 64 on MNIST; 10 in ericjang/draw).
        z_dim: latent size per step (paper: 100; ericjang/draw: 10).
        enc_dim, dec_dim: LSTM sizes (256 in both).
        read_n, write_n: glimpse sizes (paper MNIST: 2 and 5).
        read_attention, write_attention: use the filterbank (else Eq. (17)-(18)).
    """

    def __init__(self, height: int = 28, width: int = 28, channels: int = 1, steps: int = 10, z_dim: int = 10,
                 enc_dim: int = 256, dec_dim: int = 256, read_n: int = 2, write_n: int = 5,
                 read_attention: bool = True, write_attention: bool = True):
        super().__init__()
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.height, self.width, self.channels = height, width, channels
        self.steps, self.z_dim, self.dec_dim = steps, z_dim, dec_dim
        self.reader = make_reader(read_attention, dec_dim, read_n, channels)
        self.encoder = nn.LSTMCell(self.reader.output_dim(height, width) + dec_dim, enc_dim)  # Eq. (3)
        self.posterior = nn.Linear(enc_dim, 2 * z_dim)  # Eq. (7)-(8): mu and log sigma^2
        self.decoder = nn.LSTMCell(z_dim, dec_dim)  # Eq. (5)
        self.writer = make_writer(write_attention, dec_dim, write_n, channels, height, width)

    def _check(self, x: Tensor) -> None:
        if x.dim() != 4 or tuple(x.shape[1:]) != (self.channels, self.height, self.width):
            raise ValueError(f"DRAW expects images [B, {self.channels}, {self.height}, {self.width}], got {tuple(x.shape)}")

    def forward(self, x: Tensor) -> DrawOutput:
        """Encode and reconstruct, DRAW Eq. (1)-(6).

        Args:
            x: ``[B, C, H, W]`` pixel intensities in [0, 1] (binary for MNIST).

        Returns:
            :class:`DrawOutput` with ``prior_mu = prior_logvar = None`` (standard normal prior).
        """
        self._check(x)
        bsz = x.shape[0]
        canvas = x.new_zeros(x.shape)
        h_dec = x.new_zeros(bsz, self.dec_dim)
        enc_state = dec_state = None
        canvases, mus, logvars = [], [], []
        for _ in range(self.steps):
            x_hat = x - torch.sigmoid(canvas)  # Eq. (1)
            r, _ = self.reader(x, x_hat, h_dec)  # Eq. (2)
            enc_state = self.encoder(torch.cat([r, h_dec], dim=1), enc_state)  # Eq. (3)
            mu, logvar = self.posterior(enc_state[0]).chunk(2, dim=1)  # Eq. (7)-(8)
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)  # Eq. (4), reparameterised
            dec_state = self.decoder(z, dec_state)  # Eq. (5)
            h_dec = dec_state[0]
            canvas = canvas + self.writer(h_dec, self.height, self.width)  # Eq. (6)
            canvases.append(torch.sigmoid(canvas))
            mus.append(mu)
            logvars.append(logvar)
        return DrawOutput(canvas, torch.stack(canvases, 1), torch.stack(mus, 1), torch.stack(logvars, 1))

    @torch.no_grad()
    def generate(self, num: int, generator: torch.Generator | None = None) -> Tensor:
        """Sample from the prior, DRAW Eq. (13)-(16).

        Args:
            num: number of images.
            generator: optional RNG for the latents.

        Returns:
            ``[num, T, C, H, W]`` canvas progression sigmoid(c_t); the last step is the image mean.
        """
        device = next(self.parameters()).device
        canvas = torch.zeros(num, self.channels, self.height, self.width, device=device)
        dec_state = None
        canvases = []
        for _ in range(self.steps):
            z = torch.randn(num, self.z_dim, device=device, generator=generator)  # Eq. (13)
            dec_state = self.decoder(z, dec_state)  # Eq. (14)
            canvas = canvas + self.writer(dec_state[0], self.height, self.width)  # Eq. (15)
            canvases.append(torch.sigmoid(canvas))
        return torch.stack(canvases, 1)
