"""alignDRAW: DRAW conditioned on a caption through soft alignment over its words.

Mansimov, Parisotto, Ba & Salakhutdinov, "Generating Images from Captions with Attention" (ICLR 2016),
Sec. 3; checked against the authors' Theano code (mansimov/text2image, ``coco/alignDraw.py``):

* language model: a bidirectional LSTM over the caption; ``h_lang_k = [h_fwd_k, h_bwd_k]``;
* align operator, every step: ``e_k = v^T tanh(U h_lang_k + W h_gen_{t-1} + b)``, ``alpha = softmax(e)``
  over the (non-padding) words, ``s_t = sum_k alpha_k h_lang_k``;
* generative LSTM input ``[z_t, s_t]``; canvas ``c_t = c_{t-1} + write(h_gen_t)`` (DRAW write attention);
* learned prior ``p(Z_t | Z_<t) = N(mu(h_gen_{t-1}), sigma(h_gen_{t-1}))`` with
  ``mu = tanh(W_mu h)``, ``sigma = exp(tanh(W_sigma h))``; the first step's prior is N(0, I), as in the
  reference (``mu_prior_0 = log_sigma_prior_0 = 0``);
* inference: ``x_hat = x - sigmoid(c_{t-1})``, ``r_t = read(x, x_hat, h_gen_{t-1})``,
  ``h_infer_t = LSTM([r_t, h_gen_{t-1}])``, ``q(Z_t | .) = N(mu(h_infer_t), sigma(h_infer_t))``;
* loss: reconstruction + ``sum_t KL(q(Z_t | .) || p(Z_t | Z_<t))`` (see :func:`t2i.losses.draw.draw_elbo`).

Likelihood: Bernoulli on RGB intensities in [0, 1] (binary cross-entropy with logits on sigmoid(c_T)),
as the reference code does for COCO at 32 x 32; :mod:`t2i.losses.draw` also offers a fixed-variance
Gaussian. Differences from the reference: Adam instead of its RMSProp variant in the trainer, padded
captions handled by masking the alignment (the reference batches captions of equal length).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from t2i.models.attention import masked_softmax
from t2i.models.draw import DrawOutput, make_reader, make_writer
from t2i.models.factory import register_model
from t2i.models.text_encoders import RNNTextEncoder
from t2i.structures import TextEmbedding


class WordAlignment(nn.Module):
    """The align operator (additive attention over words) of alignDRAW, Sec. 3.2.

    Args:
        word_dim: size of ``h_lang_k`` (both directions).
        state_dim: size of the generative LSTM state.
        align_dim: hidden size of the scoring MLP (reference: 512).
    """

    def __init__(self, word_dim: int, state_dim: int, align_dim: int):
        super().__init__()
        self.word_proj = nn.Linear(word_dim, align_dim, bias=False)  # U
        self.state_proj = nn.Linear(state_dim, align_dim)  # W, with the bias b
        self.score = nn.Linear(align_dim, 1, bias=False)  # v

    def project_words(self, words: Tensor) -> Tensor:
        """``[B, L, word_dim]`` -> ``[B, L, align_dim]``: U h_lang, computed once per caption."""
        return self.word_proj(words)

    def forward(self, words: Tensor, words_proj: Tensor, state: Tensor, pad_mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """
        Args:
            words: ``[B, L, word_dim]`` h_lang; words_proj: ``[B, L, align_dim]`` U h_lang.
            state: ``[B, state_dim]`` h_gen_{t-1}.
            pad_mask: ``[B, L]`` True at padding.

        Returns:
            s_t ``[B, word_dim]`` and alpha ``[B, L]`` (sums to 1 over the real words).
        """
        scores = self.score(torch.tanh(words_proj + self.state_proj(state)[:, None, :])).squeeze(-1)  # (B, L)
        alpha = masked_softmax(scores, pad_mask, dim=-1).to(words.dtype)  # (B, L)
        sentence = torch.bmm(alpha[:, None, :], words).squeeze(1)  # (B, word_dim)  s_t = sum_k alpha_k h_k
        return sentence, alpha


@register_model
class AlignDRAW(nn.Module):
    """Caption-conditioned DRAW with word alignment and a learned prior (Mansimov et al., 2016).

    Defaults are a small CPU preset; the paper's COCO 32 x 32 model uses ``steps=32``, ``z_dim=275``,
    ``enc_dim = dec_dim = 550``, ``read_n = write_n = 9``, ``lang_dim=128`` per direction, ``align_dim=512``.

    Args:
        vocab_size: caption vocabulary size (0 is padding).
        height, width, channels: image size (32 x 32 x 3 in the paper).
        steps: T.
        z_dim: latent size per step.
        enc_dim, dec_dim: inference and generative LSTM sizes.
        read_n, write_n: glimpse sizes.
        read_attention, write_attention: filterbank attention (else DRAW Eq. (17)-(18)).
        word_dim: word embedding size of the caption encoder.
        lang_dim: caption LSTM units per direction.
        align_dim: alignment MLP size.
    """

    def __init__(self, vocab_size: int, height: int = 32, width: int = 32, channels: int = 3, steps: int = 16,
                 z_dim: int = 32, enc_dim: int = 256, dec_dim: int = 256, read_n: int = 5, write_n: int = 5,
                 read_attention: bool = True, write_attention: bool = True, word_dim: int = 128,
                 lang_dim: int = 128, align_dim: int = 256):
        super().__init__()
        self.height, self.width, self.channels = height, width, channels
        self.steps, self.z_dim, self.dec_dim = steps, z_dim, dec_dim
        self.text_encoder = RNNTextEncoder(vocab_size, word_dim=word_dim, hidden_dim=lang_dim, dropout=0.0)
        words_out = self.text_encoder.out_dim
        self.align = WordAlignment(words_out, dec_dim, align_dim)
        self.reader = make_reader(read_attention, dec_dim, read_n, channels)
        self.encoder = nn.LSTMCell(self.reader.output_dim(height, width) + dec_dim, enc_dim)  # LSTM^infer
        self.posterior = nn.Linear(enc_dim, 2 * z_dim)  # mu and log sigma^2 of q(Z_t | .)
        self.decoder = nn.LSTMCell(z_dim + words_out, dec_dim)  # LSTM^gen([z_t, s_t])
        self.prior = nn.Linear(dec_dim, 2 * z_dim)  # mu = tanh(.), log sigma = tanh(.)
        self.writer = make_writer(write_attention, dec_dim, write_n, channels, height, width)

    def encode_text(self, captions: Tensor, lengths: Tensor) -> TextEmbedding:
        """BiLSTM caption features h_lang ``[B, L, 2 * lang_dim]`` with the pad mask."""
        return self.text_encoder(captions, lengths)

    def _prior(self, h_dec: Tensor) -> tuple[Tensor, Tensor]:
        mu, log_sigma = torch.tanh(self.prior(h_dec)).chunk(2, dim=1)  # mu = tanh(W_mu h), sigma = exp(tanh(W_sigma h))
        return mu, 2 * log_sigma  # as (mean, log variance)

    def forward(self, x: Tensor, captions: Tensor, lengths: Tensor) -> DrawOutput:
        """Infer and reconstruct ``x`` given its caption.

        Args:
            x: ``[B, C, H, W]`` intensities in [0, 1].
            captions: ``[B, L]`` token ids, 0 at padding; lengths: ``[B]``.

        Returns:
            :class:`DrawOutput` with the learned prior's parameters and the word alignments.
        """
        if x.dim() != 4 or tuple(x.shape[1:]) != (self.channels, self.height, self.width):
            raise ValueError(f"AlignDRAW expects images [B, {self.channels}, {self.height}, {self.width}], got {tuple(x.shape)}")
        text = self.encode_text(captions, lengths)
        words_proj = self.align.project_words(text.words)
        bsz = x.shape[0]
        canvas = x.new_zeros(x.shape)
        h_dec = x.new_zeros(bsz, self.dec_dim)
        prior_mu = x.new_zeros(bsz, self.z_dim)  # p(Z_1) = N(0, I)
        prior_logvar = x.new_zeros(bsz, self.z_dim)
        enc_state = dec_state = None
        record = {k: [] for k in ("canvases", "mu", "logvar", "prior_mu", "prior_logvar", "align")}
        for _ in range(self.steps):
            x_hat = x - torch.sigmoid(canvas)  # error image
            r, _ = self.reader(x, x_hat, h_dec)
            enc_state = self.encoder(torch.cat([r, h_dec], dim=1), enc_state)
            mu, logvar = self.posterior(enc_state[0]).chunk(2, dim=1)
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
            s, alpha = self.align(text.words, words_proj, h_dec, text.pad_mask)  # align(h_gen_{t-1}, h_lang)
            dec_state = self.decoder(torch.cat([z, s], dim=1), dec_state)
            h_dec = dec_state[0]
            canvas = canvas + self.writer(h_dec, self.height, self.width)
            for key, value in (("canvases", torch.sigmoid(canvas)), ("mu", mu), ("logvar", logvar),
                               ("prior_mu", prior_mu), ("prior_logvar", prior_logvar), ("align", alpha)):
                record[key].append(value)
            prior_mu, prior_logvar = self._prior(h_dec)  # p(Z_{t+1} | Z_<=t) from h_gen_t
        stacked = {k: torch.stack(v, 1) for k, v in record.items()}
        return DrawOutput(canvas_logits=canvas, **stacked)

    @torch.no_grad()
    def generate(self, captions: Tensor, lengths: Tensor, generator: torch.Generator | None = None) -> DrawOutput:
        """Draw images for captions by sampling the learned prior at every step.

        Args:
            captions: ``[B, L]`` token ids; lengths: ``[B]``.
            generator: optional RNG for the latents.

        Returns:
            :class:`DrawOutput` whose ``canvases`` ``[B, T, C, H, W]`` are sigmoid(c_t) (the last is the
            image mean) and ``align`` ``[B, T, L]`` the word weights of every step.
        """
        was_training = self.training
        self.eval()
        text = self.encode_text(captions, lengths)
        words_proj = self.align.project_words(text.words)
        bsz, device = captions.shape[0], captions.device
        canvas = torch.zeros(bsz, self.channels, self.height, self.width, device=device)
        h_dec = torch.zeros(bsz, self.dec_dim, device=device)
        prior_mu = torch.zeros(bsz, self.z_dim, device=device)
        prior_logvar = torch.zeros(bsz, self.z_dim, device=device)
        dec_state = None
        canvases, aligns = [], []
        for _ in range(self.steps):
            eps = torch.randn(bsz, self.z_dim, device=device, generator=generator)
            z = prior_mu + torch.exp(0.5 * prior_logvar) * eps  # z_t ~ p(Z_t | Z_<t)
            s, alpha = self.align(text.words, words_proj, h_dec, text.pad_mask)
            dec_state = self.decoder(torch.cat([z, s], dim=1), dec_state)
            h_dec = dec_state[0]
            canvas = canvas + self.writer(h_dec, self.height, self.width)
            canvases.append(torch.sigmoid(canvas))
            aligns.append(alpha)
            prior_mu, prior_logvar = self._prior(h_dec)
        self.train(was_training)
        return DrawOutput(canvas_logits=canvas, canvases=torch.stack(canvases, 1), align=torch.stack(aligns, 1))
