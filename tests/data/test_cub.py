"""CUBSource on a tiny CUB written in AttnGAN's exact layout (tests/conftest.py)."""

import logging
import os
import pickle

import numpy as np
import pytest

from t2i.data.cub import CUBSource, read_caption_file
from t2i.data.text import Vocabulary, tokenize
from t2i.errors import DataError


def test_records(cub_root):
    src = CUBSource(cub_root)
    train, test = src.records("train"), src.records("test")
    assert len(train) == 6 and len(test) == 2  # species 1-3 train, species 4 test
    r = train[0]
    assert r.key == "001.Species_1/Species_1_0001"
    assert r.image_path == cub_root / "CUB_200_2011" / "images" / f"{r.key}.jpg" and r.image_path.is_file()
    assert r.class_id == 1 and [t.class_id for t in test] == [4, 4]
    assert r.bbox == (10.0, 5.0, 40.0, 30.0)
    assert len(r.captions) == 10 and r.captions[0] == "this bird has a red crown and yellow wings number0."
    # species c has crown colour COLOURS[c], wing COLOURS[c+1], belly COLOURS[c+2] (0-based c)
    assert r.attributes == {"crown_color": "red", "wing_color": "green", "belly_color": "blue"}
    schema = src.attribute_schema()
    assert list(schema) == ["crown_color", "wing_color", "belly_color"] and len(schema["crown_color"]) == 8
    with pytest.raises(ValueError):
        src.records("val")


def test_first_present_attribute_wins_and_optional(cub_root, make_cub, tmp_path):
    labels = cub_root / "CUB_200_2011" / "attributes" / "image_attribute_labels.txt"
    lines = labels.read_text().splitlines()
    # image 1: also mark crown 'black' (attribute id 5) present; 'red' (id 1) has the lower id
    lines = [ln.replace("1 5 0", "1 5 1", 1) if ln.startswith("1 5 0") else ln for ln in lines]
    lines.append("1 9 1 3 1.5 0")  # real CUB has lines with an extra column; wing 'red' (id 9) < 'green'
    labels.write_text("\n".join(lines))
    r = CUBSource(cub_root).records("train")[0]
    assert r.attributes["crown_color"] == "red" and r.attributes["wing_color"] == "red"
    plain = make_cub(tmp_path / "noattr", attributes=False)
    src = CUBSource(plain)
    assert src.records("train")[0].attributes is None and src.attribute_schema() is None


def test_official_split_and_missing_class_info(cub_root, make_cub, tmp_path):
    src = CUBSource(cub_root, split_source="official")
    assert [r.class_id for r in src.records("test")] == [4, 4]
    assert len(src.records("train")) == 6
    root = make_cub(tmp_path / "noinfo", class_info=False)  # falls back to image_class_labels.txt
    assert [r.class_id for r in CUBSource(root).records("train")] == [1, 1, 2, 2, 3, 3]


def test_python2_and_numpy_pickles(cub_root):
    keys = pickle.loads((cub_root / "train" / "filenames.pickle").read_bytes())
    # as Python 2 writes str: SHORT_BINSTRING opcodes
    body = b"".join(b"U" + bytes([len(k)]) + k.encode("latin1") for k in keys)
    (cub_root / "train" / "filenames.pickle").write_bytes(b"\x80\x02](" + body + b"e.")
    (cub_root / "train" / "class_info.pickle").write_bytes(pickle.dumps(np.array([1, 1, 2, 2, 3, 3]), protocol=2))
    recs = CUBSource(cub_root).records("train")
    assert [r.key for r in recs] == keys and [r.class_id for r in recs] == [1, 1, 2, 2, 3, 3]


def test_malicious_filenames_pickle(cub_root, tmp_path):
    marker = tmp_path / "marker"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (cub_root / "test" / "filenames.pickle").write_bytes(pickle.dumps([Evil()], protocol=2))
    with pytest.raises(DataError, match=r"test/filenames\.pickle"):
        CUBSource(cub_root).records("test")
    assert not marker.exists()


def test_vocabulary_cached(cub_root):
    src = CUBSource(cub_root)
    vocab = src.vocabulary()
    assert (cub_root / "vocab.json").is_file()
    words = [w for r in src.records("train") + src.records("test") for c in r.captions for w in tokenize(c)]
    assert vocab == Vocabulary.build([words])
    assert vocab.counts["bird"] == 80
    (cub_root / "text" / "001.Species_1" / "Species_1_0001.txt").unlink()
    assert CUBSource(cub_root).vocabulary() == vocab  # read from vocab.json, captions not needed


def test_vocabulary_prefers_attngan_captions_pickle(cub_root):
    ixtoword = {0: "<end>", 1: "zebra", 2: "this"}
    with open(cub_root / "captions.pickle", "wb") as f:
        pickle.dump([[[1]], [[2]], ixtoword, {v: k for k, v in ixtoword.items()}], f, protocol=2)
    assert CUBSource(cub_root).vocabulary().itos == ["<end>", "zebra", "this"]


def test_missing_root(tmp_path):
    with pytest.raises(DataError, match=r"CUB_200_2011.*data/README\.md"):
        CUBSource(tmp_path / "nowhere")


def test_caption_file_errors(cub_root, caplog):
    text = cub_root / "text" / "002.Species_2" / "Species_2_0001.txt"
    text.unlink()
    with pytest.raises(DataError, match="Species_2_0001.txt does not exist"):
        CUBSource(cub_root).records("train")
    text.write_text("")
    with pytest.raises(DataError, match=r"Species_2_0001.txt has 0 usable captions"):
        CUBSource(cub_root).records("train")
    text.write_text("\n".join(f"caption {i}" for i in range(7)))
    with pytest.raises(DataError, match=r"has 7 usable captions, fewer than captions_per_image=10"):
        CUBSource(cub_root).records("train")
    assert len(CUBSource(cub_root, captions_per_image=7).records("train")) == 6


def test_read_caption_file_skips_like_attngan(tmp_path):
    p = tmp_path / "c.txt"
    p.write_bytes("first one\r\n\n...\n  \nsecond \xe9t\xe9\n\xff\xfe broken\nthird\nfourth\n".encode("utf-8")
                  .replace(b"\xc3\xbf\xc3\xbe", b"\xff\xfe"))
    caps = read_caption_file(p, 3)
    assert caps == ["first one", "second \xe9t\xe9", "\ufffd\ufffd broken"]
    assert tokenize(caps[2]) == ["broken"]


def test_vocabulary_cache_rebuilt_when_data_changes(cub_root):
    v1 = CUBSource(cub_root).vocabulary()
    assert "zebra" not in v1
    text = cub_root / "text" / "004.Species_4" / "Species_4_0001.txt"
    text.write_text("\n".join(f"a zebra finch {i}" for i in range(10)))
    assert CUBSource(cub_root).vocabulary() == v1  # same split files: the cache is used
    names = cub_root / "test" / "filenames.pickle"
    names.write_bytes(pickle.dumps(pickle.loads(names.read_bytes()), protocol=2) + b"")
    os.utime(names, ns=(1, 1))  # a re-render rewrites the split files
    assert "zebra" in CUBSource(cub_root).vocabulary()
    assert CUBSource(cub_root, captions_per_image=3).vocabulary() != CUBSource(cub_root).vocabulary()
