"""ImageFolderSource: the Hugging Face image-folder layout (metadata.jsonl / metadata.csv), splits, classes,
the training-caption vocabulary, and every bad input as one line naming the file and line (or skipped)."""

import json
import logging

import pytest
from t2i.config import compose
from t2i.data.dataset import TextImageDataset
from t2i.data.imagefolder import ImageFolderSource
from t2i.data.text import Vocabulary, tokenize
from t2i.errors import DataError
from t2i.recipes.data import build_datasets


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_jsonl_list_captions_and_seeded_split(tmp_path, make_imagefolder):
    root = make_imagefolder(tmp_path / "f", n=10, captions=3)
    src = ImageFolderSource(root, test_fraction=0.2, split_seed=0)
    train, test = src.records("train"), src.records("test")
    assert (len(train), len(test)) == (8, 2)
    assert {r.key for r in train} | {r.key for r in test} == {f"img_{i:03d}" for i in range(10)}
    assert all(len(r.captions) == 3 for r in train + test)
    assert train[0].image_path == root / f"{train[0].key}.{'png' if int(train[0].key[-1]) % 2 else 'jpg'}"
    # no class column: every image its own class, so mismatched captions come from other images
    assert len({r.class_id for r in train + test}) == 10
    # the split is a function of the seed
    again = ImageFolderSource(root, test_fraction=0.2, split_seed=0).records("test")
    other = ImageFolderSource(root, test_fraction=0.2, split_seed=5).records("test")
    assert [r.key for r in again] == [r.key for r in test] and {r.key for r in other} != {r.key for r in test}


def test_vocabulary_from_training_captions_only(tmp_path, make_imagefolder):
    root = make_imagefolder(tmp_path / "f", n=4, captions=1)
    rows = _rows(root / "metadata.jsonl")
    rows[0]["text"] = ["zebra giraffe"]  # only in one image
    rows[1]["text"] = ["a bird", "okapi"]
    _write_rows(root / "metadata.jsonl", rows)
    src = ImageFolderSource(root, test_fraction=0.5, split_seed=1)
    train_words = {t for r in src.records("train") for c in r.captions for t in tokenize(c)}
    vocab = src.vocabulary()
    assert set(vocab.itos[1:]) == train_words
    for r in src.records("test"):  # every test caption kept has a known word
        assert all(any(t in vocab for t in tokenize(c)) for c in r.captions)
    assert not (root / "vocab.json").exists()  # nothing is written into the user's folder


def test_csv_repeated_rows_equal_jsonl_lists(tmp_path, make_imagefolder):
    a = ImageFolderSource(make_imagefolder(tmp_path / "j", n=6, captions=2, fmt="jsonl"))
    b = ImageFolderSource(make_imagefolder(tmp_path / "c", n=6, captions=2, fmt="csv"))
    c = ImageFolderSource(make_imagefolder(tmp_path / "r", n=6, captions=2, fmt="jsonl", repeated_rows=True))
    for split in ("train", "test"):
        want = [(r.key, r.captions, r.class_id) for r in a.records(split)]
        assert [(r.key, r.captions, r.class_id) for r in b.records(split)] == want
        assert [(r.key, r.captions, r.class_id) for r in c.records(split)] == want


def test_train_test_folders_and_class_column(tmp_path, make_imagefolder):
    root = make_imagefolder(tmp_path / "f", n=9, classes=3, folders=True, fmt="csv")
    src = ImageFolderSource(root, class_column="label", max_captions=1)
    train, test = src.records("train"), src.records("test")
    assert (len(train), len(test)) == (6, 3)
    assert all(r.key.startswith("train/") for r in train) and all(r.key.startswith("test/") for r in test)
    assert test[0].image_path == root / "test" / "img_002.jpg"
    assert all(len(r.captions) == 1 for r in train)
    # label "class_k" -> id k (sorted labels), the same ids in both splits
    assert [r.class_id for r in train] == [0, 1, 0, 1, 0, 1] and {r.class_id for r in test} == {2}


def test_split_by_class_holds_out_whole_classes(tmp_path, make_imagefolder):
    root = make_imagefolder(tmp_path / "f", n=12, classes=4)
    src = ImageFolderSource(root, class_column="label", split_by="class", test_fraction=0.25)
    train_ids = {r.class_id for r in src.records("train")}
    test_ids = {r.class_id for r in src.records("test")}
    assert len(test_ids) == 1 and len(train_ids) == 3 and not train_ids & test_ids
    with pytest.raises(DataError, match="class_column"):
        ImageFolderSource(root, split_by="class")


def test_caption_column_option(tmp_path, make_imagefolder):
    root = make_imagefolder(tmp_path / "f", n=4)
    _write_rows(root / "metadata.jsonl", [{"file_name": r["file_name"], "caption": r["text"]}
                                          for r in _rows(root / "metadata.jsonl")])
    with pytest.raises(DataError, match=r"no caption column 'text' .*columns: caption, file_name.*caption_column"):
        ImageFolderSource(root).records("train")
    assert len(ImageFolderSource(root, caption_column="caption").records("train")) == 3


def test_build_datasets_through_the_config(tmp_path, make_imagefolder):
    root = make_imagefolder(tmp_path / "f", n=8, size=(50, 30))
    cfg = compose("train", ["data=imagefolder", f"data.root={root}", "data.source.test_fraction=0.25"])
    train, test, vocab = build_datasets(cfg.data, base_size=16, num_stages=2, seed=0)
    assert (len(train), len(test)) == (6, 2)
    item = train[0]
    assert [tuple(t.shape) for t in item["images"]] == [(3, 16, 16), (3, 32, 32)]
    assert item["wrong_key"] != item["key"]  # a caption of another image
    assert vocab.encode(tokenize(item["caption_text"])) == item["caption"].tolist()


def test_no_root_is_a_clear_error(tmp_path):
    cfg = compose("train", ["data=imagefolder"])
    from t2i.recipes.data import build_source
    with pytest.raises(DataError, match=r"needs data.root=DIR"):
        build_source(cfg.data)
    with pytest.raises(DataError, match="does not exist"):
        ImageFolderSource(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metadata.parquet").write_bytes(b"PAR1")
    with pytest.raises(DataError, match=r"no metadata.jsonl or metadata.csv .*metadata.parquet is not read"):
        ImageFolderSource(tmp_path / "empty")


# ---------------------------------------------------------------------------- bad input
def _break(kind, root):
    """Make one kind of bad input in a 6-image JSONL folder; returns the text the error must contain."""
    meta = root / "metadata.jsonl"
    rows = _rows(meta)
    if kind == "missing image":
        (root / rows[2]["file_name"]).unlink()
        return r"metadata.jsonl line 3: image 'img_002.jpg' does not exist"
    if kind == "image without a caption":
        _write_rows(meta, rows[:-1])
        return r"img_005.png: no row of .*metadata.jsonl names this image"
    if kind == "no caption":
        rows[1]["text"] = ["", "  "]
        _write_rows(meta, rows)
        return r"metadata.jsonl line 2: image 'img_001.png' has no caption in column 'text'"
    if kind == "caption not text":
        rows[1]["text"] = 42
        _write_rows(meta, rows)
        return r"metadata.jsonl line 2: the caption 42 is not text"
    if kind == "duplicate file name":
        (root / "img_000.png").write_bytes((root / "img_001.png").read_bytes())
        rows.append({"file_name": "img_000.png", "text": ["a red bird"]})
        _write_rows(meta, rows)
        return r"metadata.jsonl line 7: duplicate file name 'img_000.png': 'img_000.jpg' \(line 1\)"
    if kind == "not UTF-8":
        lines = meta.read_bytes().split(b"\n")
        lines[3] = lines[3].replace(b"bird", b"caf\xe9 bird")
        meta.write_bytes(b"\n".join(lines))
        return r"metadata.jsonl line 4: not UTF-8"
    if kind == "not JSON":
        meta.write_text(meta.read_text().replace('"file_name"', "file_name", 1))
        return r"metadata.jsonl line 1: not a JSON object"
    if kind == "outside the folder":
        rows.append({"file_name": "../../etc/passwd.jpg", "text": "a bird"})
        _write_rows(meta, rows)
        return r"metadata.jsonl line 7: file_name '../../etc/passwd.jpg' is not a path inside"
    if kind == "not an image":
        (root / "notes.txt").write_text("x")
        rows.append({"file_name": "notes.txt", "text": "a bird"})
        _write_rows(meta, rows)
        return r"metadata.jsonl line 7: 'notes.txt' is not an image file"
    raise AssertionError(kind)


BAD = ["missing image", "image without a caption", "no caption", "caption not text", "duplicate file name",
       "not UTF-8", "not JSON", "outside the folder", "not an image"]


@pytest.mark.parametrize("kind", BAD)
def test_bad_input_is_one_line_or_skipped_and_counted(kind, tmp_path, make_imagefolder, caplog):
    root = make_imagefolder(tmp_path / "f", n=6)
    message = _break(kind, root)
    with pytest.raises(DataError, match=message) as info:
        ImageFolderSource(root).records("train")
    assert "\n" not in str(info.value) and "skip_bad" in str(info.value)
    src = ImageFolderSource(root, skip_bad=True)
    with caplog.at_level(logging.WARNING, logger="t2i.data.imagefolder"):
        n = len(src.records("train")) + len(src.records("test"))
    # a row that cannot be read names no image, so its image is also one without a caption
    unread = {"image without a caption": 1} if kind == "not JSON" else {}
    assert src.skipped == {kind: 1, **unread}
    expected = 6 if kind in ("not an image", "duplicate file name", "outside the folder") else 5
    assert n == expected
    assert any("1 x " + kind in r.getMessage() for r in caplog.records)


def test_non_utf8_csv_names_its_line(tmp_path, make_imagefolder):
    root = make_imagefolder(tmp_path / "f", n=4, fmt="csv", captions=1)
    meta = root / "metadata.csv"
    lines = meta.read_bytes().split(b"\r\n")
    lines[2] = lines[2].replace(b"bird", b"\xff\xfe bird")
    meta.write_bytes(b"\r\n".join(lines))
    with pytest.raises(DataError, match=r"metadata.csv line 3: not UTF-8"):
        ImageFolderSource(root).records("train")
    src = ImageFolderSource(root, skip_bad=True)
    assert len(src.records("train")) + len(src.records("test")) == 3 and src.skipped == {"not UTF-8": 1}


def test_whole_file_problems_stop_even_with_skip_bad(tmp_path, make_imagefolder):
    root = make_imagefolder(tmp_path / "f", n=4)
    rows = _rows(root / "metadata.jsonl")
    _write_rows(root / "metadata.jsonl", [{**r, "text": ""} for r in rows])
    with pytest.raises(DataError, match=r"caption column 'text' is empty on every row"):
        ImageFolderSource(root, skip_bad=True).records("train")
    _write_rows(root / "metadata.jsonl", [{"name": r["file_name"], "text": r["text"]} for r in rows])
    with pytest.raises(DataError, match=r"no 'file_name' column"):
        ImageFolderSource(root, skip_bad=True).records("train")
    _write_rows(root / "metadata.jsonl", rows)
    (root / "metadata.csv").write_text("file_name,text\n")
    with pytest.raises(DataError, match=r"both metadata.jsonl and metadata.csv"):
        ImageFolderSource(root, skip_bad=True).records("train")


def test_conflicting_classes_of_repeated_rows(tmp_path, make_imagefolder):
    root = make_imagefolder(tmp_path / "f", n=6, classes=2, repeated_rows=True)
    rows = _rows(root / "metadata.jsonl")
    rows[1]["label"] = "class_9"  # second row of img_000
    _write_rows(root / "metadata.jsonl", rows)
    with pytest.raises(DataError, match=r"line 2: image 'img_000.jpg' has class 'class_9' here but 'class_0' on line 1"):
        ImageFolderSource(root, class_column="label").records("train")


def test_mixed_formats_and_sizes_are_converted(tmp_path, write_image_file):
    root = tmp_path / "mixed"
    specs = [("a.png", "RGBA", (30, 50)), ("b.jpg", "L", (64, 20)), ("c.gif", "P", (25, 25)),
             ("d.bmp", "RGB", (17, 40)), ("e.webp", "RGB", (90, 33)), ("f.tiff", "CMYK", (40, 40)),
             ("sub/g.JPEG", "RGB", (12, 12))]
    rows = []
    for i, (name, mode, size) in enumerate(specs):
        write_image_file(root / name, size, mode=mode, seed=i)
        rows.append({"file_name": name, "text": f"a {name[0]} shape"})
    _write_rows(root / "metadata.jsonl", rows)
    src = ImageFolderSource(root, test_fraction=0.3)
    records = src.records("train") + src.records("test")
    assert len(records) == 7
    vocab = Vocabulary.build([tokenize(c) for r in records for c in r.captions])
    ds = TextImageDataset(records, vocab, base_size=8, num_stages=2, train=False,
                          wrong_captions=False)
    for i in range(len(ds)):
        images = ds[i]["images"]
        assert [tuple(t.shape) for t in images] == [(3, 8, 8), (3, 16, 16)]
        assert float(images[1].min()) >= -1 and float(images[1].max()) <= 1
    # an unreadable image is named at load time, or skipped with skip_bad
    (root / "d.bmp").write_bytes(b"BM not really")
    bad = TextImageDataset(records, ds.vocab, base_size=8, num_stages=1, train=False, wrong_captions=False)
    index = [r.key for r in records].index("d")
    with pytest.raises(DataError, match=r"d\.bmp"):
        bad[index]
    skipping = TextImageDataset(records, ds.vocab, base_size=8, num_stages=1, train=False, wrong_captions=False,
                                skip_bad=True)
    assert skipping[index]["key"] != "d" and skipping.bad_count == 1


def test_unreadable_split_messages(tmp_path, make_imagefolder):
    root = make_imagefolder(tmp_path / "f", n=1)
    with pytest.raises(DataError, match="needs at least 2 captioned images"):
        ImageFolderSource(root).records("train")
