"""Tokenizer and vocabulary against AttnGAN's load_captions / build_dictionary (hand-derived expectations)."""

import json
import pickle

import pytest

from t2i.data.text import END_TOKEN, UNK_TOKEN, Vocabulary, is_usable_caption, tokenize
from t2i.errors import CaptionError, DataError


@pytest.mark.parametrize("text, expected", [
    ("This bird's crown is GREEN!!", ["this", "bird", "s", "crown", "is", "green"]),
    ("café-colored wings", ["caf", "colored", "wings"]),        # 'café' is one \w+ token, é removed
    ("\ufffd\ufffd", []),
    ("red\ufffd\ufffdwings", ["red", "wings"]),                  # the pair becomes a space
    ("red\ufffdwings", ["red", "wings"]),                        # a lone U+FFFD is not \w either
    ("naïve bird", ["nave", "bird"]),
    ("日本 bird", ["bird"]),                                     # all-non-ASCII token dropped
    ("ÉTÉ small", ["t", "small"]),                               # lower() first: 'été' -> 't'
    ("under_score 3rd,bird", ["under_score", "3rd", "bird"]),    # \w includes _ and digits
    ("  a   b\tc\n", ["a", "b", "c"]),
    ("", []),
])
def test_tokenize_matches_attngan(text, expected):
    assert tokenize(text) == expected


def test_usable_caption_rule():
    assert is_usable_caption("a bird")
    assert not is_usable_caption("")
    assert not is_usable_caption("...!!")
    assert is_usable_caption("日本")  # AttnGAN counts it (it yields an empty token list)


def test_build_order_counts_and_specials():
    caps = [["a", "red", "bird"], ["a", "blue", "bird"], ["bird"]]
    v = Vocabulary.build(caps)
    assert v.itos == [END_TOKEN, "a", "red", "bird", "blue"]  # first appearance, <end> at 0
    assert len(v) == 5 and v.stoi["bird"] == 3
    assert v.most_common(2) == [("bird", 3), ("a", 2)]
    assert Vocabulary.build(caps, min_count=2).itos == [END_TOKEN, "a", "bird"]
    vu = Vocabulary.build(caps, unk=True)
    assert vu.itos[:2] == [END_TOKEN, UNK_TOKEN] and vu.unk_id == 1


def test_encode_drop_unk_and_reporting():
    v = Vocabulary.build([["a", "red", "bird"]])
    unknown = []
    assert v.encode(["a", "green", "bird", "<end>"], unknown_words=unknown) == [1, 3]
    assert unknown == ["green", "<end>"]  # <end> is never produced by encode
    vu = Vocabulary.build([["a", "red", "bird"]], unk=True)
    assert vu.encode(["a", "green", "bird"], unknown="unk") == [2, 1, 4]
    with pytest.raises(ValueError):
        v.encode(["a"], unknown="unk")
    assert v.decode([1, 2, 3, 0, 0]) == ["a", "red", "bird"]
    assert v.decode([1, 0], strip_end=False) == ["a", "<end>"]
    assert v.encode_text("A RED bird!") == [1, 2, 3]
    with pytest.raises(CaptionError, match="green"):
        v.encode_text("green!")


def test_json_round_trip(tmp_path):
    v = Vocabulary.build([["a", "red", "bird"], ["a", "caf"]], unk=True)
    path = v.save(tmp_path / "sub" / "vocab.json")
    data = json.loads(path.read_text())  # plain JSON, no pickle
    assert data["itos"] == v.itos and data["counts"]["a"] == 2
    w = Vocabulary.load(path)
    assert w == v and w.has_unk and w.counts == v.counts


def test_load_bad_files(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        Vocabulary.load(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="bad.json"):
        Vocabulary.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"itos": ["a"]}))
    with pytest.raises(DataError, match="other.json"):
        Vocabulary.load(tmp_path / "other.json")


def test_from_attngan_captions_pickle(tmp_path):
    ixtoword = {0: "<end>", 1: "this", 2: "bird", 3: "red"}
    wordtoix = {w: i for i, w in ixtoword.items()}
    path = tmp_path / "captions.pickle"
    with open(path, "wb") as f:
        pickle.dump([[[1, 2], [3, 2]], [[1, 3, 2]], ixtoword, wordtoix], f, protocol=2)
    v = Vocabulary.from_attngan_captions_pickle(path)
    assert v.itos == ["<end>", "this", "bird", "red"]
    assert v.counts == {"this": 2, "bird": 3, "red": 2}
    with open(path, "wb") as f:
        pickle.dump([[], [], {1: "x"}, {}], f, protocol=2)
    with pytest.raises(DataError, match="ixtoword"):
        Vocabulary.from_attngan_captions_pickle(path)
