"""COCOSource: AttnGAN layout and the official captions json."""

import pytest

from t2i.data.coco import COCOSource
from t2i.errors import DataError


def test_attngan_layout(tmp_path, make_coco_attngan):
    root = make_coco_attngan(tmp_path / "coco")
    src = COCOSource(root)
    train, test = src.records("train"), src.records("test")
    assert [r.key for r in test] == ["COCO_val2014_000000000001", "COCO_val2014_000000000002"]
    assert [r.class_id for r in train] == [0, 1, 2]  # every image its own class (AttnGAN arange)
    assert train[1].image_path == root / "images" / "COCO_train2014_000000000002.jpg"
    assert len(train[0].captions) == 5 and train[0].captions[0] == "a red bus parked near a red house 0"
    assert train[0].bbox is None and train[0].attributes is None
    assert len(src.vocabulary()) > 5


def test_json_layout_annotation_id_order(tmp_path, make_coco_json):
    root = make_coco_json(tmp_path / "coco")
    src = COCOSource(root, layout="json")
    train = src.records("train")
    assert [r.key for r in train] == [f"COCO_train2014_{i:012d}" for i in (7, 14, 21)]  # sorted by image id
    assert [r.class_id for r in train] == [0, 1, 2]
    assert train[0].image_path == root / "train2014" / "COCO_train2014_000000000007.jpg"
    # image 7 was written last, captions 6 down to 1 with decreasing ids: the smallest 5 ids come last
    caps = train[0].captions
    assert len(caps) == 5 and caps[0] == "A white cat on image 7 id 982." and caps[-1] == "A green cat on image 7 id 986."
    assert len(src.records("test")) == 2


def test_json_layout_short_images(tmp_path, make_coco_json):
    root = make_coco_json(tmp_path / "coco", short_image=True)
    with pytest.raises(DataError, match=r"COCO_train2014_000000000007 has 2 usable captions"):
        COCOSource(root, layout="json").records("train")
    src = COCOSource(root, layout="json", on_short="skip")
    assert len(src.records("train")) == 2 and src.skipped == {"train": 1}
    assert [r.class_id for r in src.records("train")] == [0, 1]


def test_missing_roots(tmp_path):
    with pytest.raises(DataError, match=r"attngan layout.*data/README\.md"):
        COCOSource(tmp_path / "none")
    with pytest.raises(DataError, match=r"json layout.*captions_\{train,val\}2014\.json"):
        COCOSource(tmp_path / "none", layout="json")
    (tmp_path / "c" / "annotations").mkdir(parents=True)
    with pytest.raises(DataError, match="captions_val2014.json does not exist"):
        COCOSource(tmp_path / "c", layout="json").records("test")
