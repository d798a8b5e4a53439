"""The one caption path: the dataset (training), the pipeline (generation) and the DAMSM scorer (evaluation)
give a text encoder the same input for the same caption."""

from pathlib import Path

import pytest
import torch

from t2i.data.dataset import TextImageDataset, collate
from t2i.data.text import Vocabulary, pad_ids
from t2i.errors import CaptionError
from t2i.models.generator import MultiStageGenerator
from t2i.models.text_encoders import BertTextEncoder, RNNTextEncoder
from t2i.pipeline import Text2ImagePipeline
from t2i.structures import Record

CAPTION = "This bird has a RED crown, black wings & a white belly!"  # case, punctuation, an unknown '&'


def _tiny_bert(folder: Path) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "this", "bird", "has", "a", "red", "crown", "black",
             "wing", "##s", "and", "white", "belly", ",", "!", "&"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    return folder


def _pipeline(text_encoder, vocab):
    gen = MultiStageGenerator(["init", "attention"], ngf=4, z_dim=6, c_dim=5, sent_dim=text_encoder.out_dim,
                              word_dim=text_encoder.out_dim, res_blocks=1, base_size=8)
    return Text2ImagePipeline(gen, text_encoder, vocab, z_dim=6, words_num=18)


def test_a_tokenising_encoder_reads_the_same_text_at_training_and_generation(tmp_path, monkeypatch):
    vocab = Vocabulary(["this", "bird", "has", "a", "red", "crown", "black", "wings", "white", "belly"])
    encoder = BertTextEncoder(str(_tiny_bert(tmp_path / "bert")), out_dim=8).eval()
    seen: list[list[str]] = []
    forward = encoder.forward_text
    monkeypatch.setattr(encoder, "forward_text", lambda texts: seen.append(list(texts)) or forward(texts))
    record = Record(key="r0", image_path=tmp_path / "none.jpg", captions=[CAPTION], class_id=1)
    dataset = TextImageDataset([record], vocab, base_size=8, num_stages=1, train=False, wrong_captions=False,
                               load_images=False)
    with torch.no_grad():
        trained = encoder.encode(collate([dataset[0]], wrong_captions=False))  # what training feeds it
        pipe = _pipeline(encoder, vocab)
        generated = pipe.embed(pipe.encode_captions([CAPTION]))  # what generation feeds it
    assert seen == [[CAPTION], [CAPTION]]
    torch.testing.assert_close(trained.sentence, generated.sentence)
    torch.testing.assert_close(trained.words, generated.words)


def test_a_vocabulary_encoder_gets_the_same_ids_at_training_and_generation(tmp_path):
    vocab = Vocabulary(["this", "bird", "has", "a", "red", "crown", "black", "wings", "white", "belly"])
    torch.manual_seed(0)
    encoder = RNNTextEncoder(len(vocab), word_dim=8, hidden_dim=4).eval()
    record = Record(key="r0", image_path=tmp_path / "none.jpg", captions=[CAPTION], class_id=1)
    dataset = TextImageDataset([record], vocab, base_size=8, num_stages=1, train=False, wrong_captions=False,
                               load_images=False)
    batch = collate([dataset[0]], wrong_captions=False)
    pipe = _pipeline(encoder, vocab)
    encoded = pipe.encode_captions(CAPTION)
    assert torch.equal(encoded.ids, batch.captions) and torch.equal(encoded.lengths, batch.lengths)
    assert encoded.texts == batch.caption_texts == [CAPTION] and encoded.unknown == [[]]
    assert encoded.words == [["this", "bird", "has", "a", "red", "crown", "black", "wings", "a", "white", "belly"]]
    with torch.no_grad():
        torch.testing.assert_close(encoder.encode(batch).sentence, pipe.embed(encoded).sentence)


def test_encode_captions_drops_unknown_words_truncates_and_refuses_empty_captions(caplog):
    vocab = Vocabulary(["red", "crown", "bird"])
    encoded = vocab.encode_captions(["a red crown bird", "red red red red"], words_num=3)
    assert encoded.ids.tolist() == [[vocab.stoi["red"], vocab.stoi["crown"], vocab.stoi["bird"]],
                                    [vocab.stoi["red"]] * 3]
    assert encoded.lengths.tolist() == [3, 3] and encoded.unknown == [["a"], []]
    with pytest.raises(CaptionError, match="has no words"):
        vocab.encode_captions(["  "])
    with pytest.raises(CaptionError, match="none of the words"):
        vocab.encode_captions(["green wings"])
    scored = vocab.encode_captions(["green wings", "red bird"], empty="end")  # scoring: one <end> token
    assert scored.ids.tolist() == [[0, 0], [vocab.stoi["red"], vocab.stoi["bird"]]]
    assert scored.lengths.tolist() == [1, 2]
    ids, lengths = pad_ids([[3, 4, 5], [6]])
    assert ids.tolist() == [[3, 4, 5], [6, 0, 0]] and lengths.tolist() == [3, 1]
