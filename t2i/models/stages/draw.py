"""DRAW refinement stage: the last stage of ``model=attngan_draw`` (DESIGN.md §3).

An AttnGAN generator whose last stage, instead of convolving features into an image, *draws* it: the
previous stage's image, upsampled x2, is the starting canvas, and an LSTM that attends over the caption's
words writes ``steps`` patches onto it with DRAW's Gaussian-filterbank write attention (Gregor et al.,
2015, arXiv:1502.04623v2; equation numbers below are that paper's, as in :mod:`t2i.models.draw`).

One step ``t = 1..T`` (all in the canvas's pre-tanh space):

* ``s = W_s avgpool(h_prev)``: a summary of the previous stage's features (computed once);
* ``c_t = sum_i beta_ti e'_i``, ``beta_t = softmax_i(h_{t-1}^T e'_i)``, ``e' = U e``: word context of the
  LSTM state, AttnGAN's dot-product word attention (AttnGAN Eq. (2)-(3)), padding words get weight 0;
* ``h_t = LSTM([s, c_t, p_t, c_code, z], h_{t-1})`` (DRAW Eq. (14), conditioned on the words as in
  alignDRAW), ``p_t`` a learned code of the step index standing in for DRAW's fresh ``z_t`` per step;
* ``C_t = C_{t-1} + write(h_t)`` with the attentive write ``1/gamma F_Y^T w_t F_X`` (DRAW Eq. (28)-(29),
  canvas update Eq. (6)/(15)).

Canvas space: ``C_0 = atanh(clamp(up(x_prev), -L, L))`` with ``L = 1 - 1e-3``, so ``tanh(C_0)`` is the
upsampled previous image (clamped at 0.999) and the stage's image is ``tanh(C_T)``, in [-1, 1] like every
other stage's. Working in the pre-tanh space keeps the additive writes of DRAW Eq. (29) unbounded while the
image stays in range (DRAW works in the same way with ``sigmoid(c_T)``); the clamp bounds ``atanh``'s
gradient (at most ``1 / (1 - L^2) ~ 500``) and its value (``|C_0| <= 3.8``). The canvas is kept in float32
under autocast (the image comes out in float32).

Window prior: the generator initialises every linear layer orthogonally (AttnGAN), which leaves the writer's
five window parameters (DRAW Eq. (21)) near 0: a grid spanning the whole canvas with 1-pixel filters, i.e.
sparse dots. The writer therefore adds a learned offset, initialised so that the ``N x N`` grid spans
``window_span`` of the canvas side, ``sigma = delta / 2`` (neighbouring filters overlap smoothly) and
``gamma = 1 / delta^2`` (a constant patch of 1 adds about 1 to the canvas inside the window). The offset is
a plain parameter, so ``init_weights`` leaves it alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from t2i.errors import ConfigError
from t2i.models.attention import word_attention
from t2i.models.draw import AttentionWriter, attention_window, filterbank_write
from t2i.models.stages.base import GeneratorStage, StageContext, StageOutput, StageSpec, register_stage

CANVAS_LIMIT = 1.0 - 1e-3  # |tanh(C_0)| <= CANVAS_LIMIT, so atanh stays finite with a bounded gradient


class PriorAttentionWriter(AttentionWriter):
    """DRAW's attentive write (Eq. (28)-(29)) with a learned offset on the five window parameters.

    ``(g~X, g~Y, log sigma^2, log delta~, log gamma) = W h + b + prior`` (DRAW Eq. (21) plus ``prior``).

    Args:
        hidden_dim: size of the LSTM state.
        write_n: N, the patch size.
        channels: canvas channels.
        canvas_size: canvas side the prior is computed for.
        window_span: fraction of the canvas side that the N x N grid spans at initialisation.
    """

    def __init__(self, hidden_dim: int, write_n: int, channels: int, canvas_size: int, window_span: float = 0.5):
        super().__init__(hidden_dim, write_n, channels)
        if not 0 < window_span <= 1:
            raise ConfigError(f"draw stage window_span must be in (0, 1], got {window_span}")
        delta = window_span * canvas_size / write_n  # N * delta = span * side
        log_delta_t = math.log(delta * max(write_n - 1, 1) / (canvas_size - 1))  # Eq. (24) inverted
        sigma2 = (delta / 2) ** 2
        prior = torch.tensor([0.0, 0.0, math.log(sigma2), log_delta_t, -2 * math.log(delta)])
        self.window_prior = nn.Parameter(prior)

    def forward(self, h: Tensor, height: int, width: int, return_window: bool = False):
        """
        Args:
            h: ``[B, hidden_dim]`` LSTM state.
            height, width: canvas size.
            return_window: also return the :class:`t2i.models.draw.AttentionWindow`.

        Returns:
            ``[B, C, height, width]`` canvas increment (and the window when asked).
        """
        n = self.write_n
        w = self.patch(h).view(-1, self.channels, n, n)  # (B, C, N, N)  Eq. (28)
        window = attention_window(self.params(h) + self.window_prior, n, height, width)  # Eq. (21)-(26)
        out = filterbank_write(w, window.f_x, window.f_y) / window.gamma[:, None, None, None]  # Eq. (29)
        return (out, window) if return_window else out


@dataclass
class DrawStageResult:
    """Everything one pass of the DRAW stage computes.

    Attributes:
        canvas_logits: ``[B, steps + 1, 3, H, W]`` pre-tanh canvases ``C_0 .. C_T`` (``C_0`` from the
            previous image).
        word_attn: ``[B, steps, T]`` word weights of every step (sum to 1 over real words, 0 at padding).
        windows: ``[B, steps, 3]`` write windows per step: centre ``(g_x, g_y)`` and stride ``delta`` in
            canvas pixels (1-based, DRAW Eq. (22)-(24)).
    """

    canvas_logits: Tensor
    word_attn: Tensor
    windows: Tensor

    @property
    def image(self) -> Tensor:
        """``[B, 3, H, W]`` the stage's image ``tanh(C_T)``."""
        return torch.tanh(self.canvas_logits[:, -1])


@register_stage("draw")
class DrawStage(GeneratorStage):
    """Refine the previous image x2 by ``steps`` DRAW write-attention glimpses driven by word context.

    Input: the previous stage's features ``[B, C, h, w]`` and image ``ctx.images[-1]`` ``[B, 3, h, w]``.
    Output image ``tanh(C_T)`` ``[B, 3, 2h, 2w]`` (the stage draws it itself: ``makes_image``), the canvases
    ``tanh(C_0 .. C_T)`` ``[B, steps + 1, 3, 2h, 2w]`` (detached, for display) and, for a stage that may
    follow, the features ``[up(h_prev), tanh(C_T)]`` ``[B, C + 3, 2h, 2w]`` (no weights). The stage's word
    attention is over words per step, not per pixel, so ``attn`` is None; :meth:`draw` returns it.

    Args:
        in_channels: ``C``, channels of the previous features.
        in_size: ``h``, the previous stage's size; the canvas is ``2h x 2h``.
        word_dim: word feature size.
        z_dim / c_dim: noise and conditioning-code sizes (LSTM inputs when ``noise_input``).
        steps: number of writes T.
        hidden_dim: LSTM size (also the size of the feature summary and of the projected words).
        write_n: N, the write patch size.
        noise_input: feed ``[c_code, z]`` to the LSTM at every step.
        step_embedding: feed a learned code of the step index to the LSTM (see ``step_codes``).
        window_span: initial fraction of the canvas side covered by a write (see the module docstring).
        detach_prev: stop the gradient into the previous image (StackGAN v1 style); AttnGAN trains all
            stages jointly, so False by default.
        upsample_mode: how the previous image is enlarged for ``C_0`` (``bilinear`` or ``nearest``).
    """

    makes_image = True

    def __init__(self, in_channels: int, in_size: int, word_dim: int, z_dim: int, c_dim: int, steps: int = 12,
                 hidden_dim: int = 128, write_n: int = 12, noise_input: bool = True, step_embedding: bool = True,
                 window_span: float = 0.5, detach_prev: bool = False, upsample_mode: str = "bilinear"):
        super().__init__()
        if steps < 1:
            raise ConfigError(f"draw stage steps must be >= 1, got {steps}")
        if not 1 <= write_n <= 2 * in_size:
            raise ConfigError(f"draw stage write_n={write_n} must be between 1 and the canvas size {2 * in_size}")
        if upsample_mode not in ("bilinear", "nearest"):
            raise ConfigError(f"draw stage upsample_mode must be bilinear or nearest, got {upsample_mode!r}")
        self.steps, self.hidden_dim, self.noise_input = steps, hidden_dim, noise_input
        self.detach_prev, self.upsample_mode = detach_prev, upsample_mode
        self.summary = nn.Linear(in_channels, hidden_dim)  # s = W_s avgpool(h_prev)
        self.project_words = nn.Linear(word_dim, hidden_dim, bias=False)  # e' = U e (AttnGAN Eq. (2))
        # A learned code per step (N(0, 1), untouched by the generator's init) plays the part of DRAW's fresh
        # z_t per step (Eq. (13)): without it the LSTM's inputs are the same at every step at initialisation.
        self.step_codes = nn.Embedding(steps, hidden_dim) if step_embedding else None
        in_dim = (3 if step_embedding else 2) * hidden_dim + (z_dim + c_dim if noise_input else 0)
        self.lstm = nn.LSTMCell(in_dim, hidden_dim)
        self.writer = PriorAttentionWriter(hidden_dim, write_n, 3, 2 * in_size, window_span)
        self.out_channels = in_channels + 3
        self.out_size = 2 * in_size

    @classmethod
    def from_spec(cls, spec: StageSpec) -> DrawStage:
        if spec.in_channels is None or spec.in_size is None:
            raise ConfigError(f"stage {spec.index} is a draw stage and needs a stage before it; "
                              f"use e.g. stages [init, draw]")
        if spec.word_dim is None:
            raise ConfigError(f"stage {spec.index} is a draw stage but word_dim was not given; "
                              f"pass word_dim from the text encoder")
        return cls(spec.in_channels, spec.in_size, spec.word_dim, spec.z_dim, spec.c_dim, **spec.options)

    def initial_canvas(self, prev_image: Tensor) -> Tensor:
        """``C_0 = atanh(clamp(up(x_prev)))``.

        Args:
            prev_image: ``[B, 3, h, w]`` in [-1, 1].

        Returns:
            ``[B, 3, 2h, 2w]`` float32 pre-tanh canvas.
        """
        x = prev_image.detach() if self.detach_prev else prev_image
        kwargs = {"align_corners": False} if self.upsample_mode == "bilinear" else {}
        x = F.interpolate(x.float(), scale_factor=2, mode=self.upsample_mode, **kwargs)  # (B, 3, 2h, 2w)
        return torch.atanh(x.clamp(-CANVAS_LIMIT, CANVAS_LIMIT))

    def draw(self, features: Tensor, ctx: StageContext) -> DrawStageResult:
        """Run the T writes.

        Args:
            features: ``[B, C, h, w]`` previous features.
            ctx: the stage context (``images[-1]`` ``[B, 3, h, w]``, words ``[B, T, word_dim]``, ``pad_mask``,
                ``c_code``, ``z``).

        Returns:
            The :class:`DrawStageResult`.
        """
        canvas = self.initial_canvas(ctx.images[-1])  # (B, 3, H, W)
        height, width = canvas.shape[-2:]
        summary = self.summary(features.mean(dim=(2, 3)))  # (B, hidden)
        keys = self.project_words(ctx.text.words)  # (B, T, hidden)
        noise = [ctx.c_code, ctx.z] if self.noise_input else []
        h = summary.new_zeros(summary.shape[0], self.hidden_dim)
        state = (h, torch.zeros_like(h))  # DRAW starts from a zero state
        canvases, word_attn, windows = [canvas], [], []
        for t in range(self.steps):
            context, beta = word_attention(h[:, None, :], keys, ctx.text.pad_mask)  # (B, 1, hidden), (B, 1, T)
            step = [] if self.step_codes is None else [self.step_codes.weight[t].expand_as(h)]
            state = self.lstm(torch.cat([summary, context[:, 0], *step, *noise], dim=1), state)  # Eq. (14)
            h = state[0]
            write, window = self.writer(h, height, width, return_window=True)  # Eq. (28)-(29)
            canvas = canvas + write.float()  # DRAW Eq. (6): c_t = c_{t-1} + write(h_t)
            canvases.append(canvas)
            word_attn.append(beta[:, 0])
            windows.append(torch.stack([window.g_x, window.g_y, window.delta], dim=1))
        return DrawStageResult(torch.stack(canvases, 1), torch.stack(word_attn, 1), torch.stack(windows, 1))

    def forward(self, features: Tensor | None, ctx: StageContext) -> StageOutput:
        result = self.draw(features, ctx)
        image = result.image  # (B, 3, 2h, 2w)
        up = F.interpolate(features, scale_factor=2, mode="nearest")  # (B, C, 2h, 2w)
        out_features = torch.cat([up, image.to(up.dtype)], dim=1)  # (B, C + 3, 2h, 2w)
        return StageOutput(out_features, image=image, canvases=torch.tanh(result.canvas_logits.detach()))


__all__ = ["CANVAS_LIMIT", "DrawStage", "DrawStageResult", "PriorAttentionWriter"]
