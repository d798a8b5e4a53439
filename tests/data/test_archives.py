"""t2i.data.archives: CUB-200-2011 and COCO 2014 built from tiny archives in the published formats; checksums,
truncated / partial / unknown archives, bad caption files, and the readers on what was built."""

import hashlib
import json
from pathlib import Path

import pytest
from archive_fixtures import (SPECIES, coco_captions, cub_keys, truncate, write_coco_zips, write_cub_tgz,
                              write_reed_tgz)

from t2i.data import archives
from t2i.data.archives import PUBLISHED, Published, prepare_coco, prepare_cub
from t2i.data.coco import COCOSource
from t2i.data.cub import CUBSource
from t2i.errors import DataError


@pytest.fixture
def cub_archives(tmp_path):
    return write_cub_tgz(tmp_path / "dl" / "CUB_200_2011.tgz"), write_reed_tgz(tmp_path / "dl" / "cvpr2016_cub.tar.gz")


def _no_leftovers(parent: Path):
    return not [p.name for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name]


def test_cub_from_the_official_archives(tmp_path, cub_archives):
    images, captions = cub_archives
    root = tmp_path / "birds"
    manifest = prepare_cub(images, captions, root, checksum="record")
    keys = cub_keys()
    assert json.loads((root / "train" / "filenames.json").read_text()) == keys[:4]  # trainval species, images.txt order
    assert json.loads((root / "test" / "filenames.json").read_text()) == keys[4:]
    assert json.loads((root / "test" / "class_info.json").read_text()) == [3, 3, 4, 4]
    assert (root / "attributes.txt").is_file() and (root / "CUB_200_2011" / "parts" / "parts.txt").is_file()
    assert not (root / "train" / "filenames.pickle").exists() and _no_leftovers(tmp_path)
    # the manifest records what was used
    on_disk = json.loads((root / "prepared.json").read_text())
    assert on_disk == manifest and manifest["images"] == {"train": 4, "test": 4}
    assert manifest["classes"] == {"train": 2, "test": 2}
    rec_images, rec_captions = manifest["archives"]
    assert rec_images["sha256"] == hashlib.sha256(images.read_bytes()).hexdigest()
    assert rec_images["md5"] == hashlib.md5(images.read_bytes()).hexdigest() and rec_images["size"] == images.stat().st_size
    assert rec_images["verified"] is False and rec_images["published_sha256"] == PUBLISHED["cub_images"].sha256
    assert rec_captions["verified"] is None and rec_captions["published_sha256"] is None
    # the reader takes it as AttnGAN's layout: JSON lists, boxes, attributes, Reed's captions
    source = CUBSource(root)
    train, test = source.records("train"), source.records("test")
    assert [r.key for r in train] == keys[:4] and [r.class_id for r in train] == [1, 1, 2, 2]
    assert {r.key.split("/")[0] for r in test} == set(SPECIES[2:])
    assert train[0].bbox == (4.0, 4.0, 21.0, 18.0) and len(train[0].captions) == 10
    assert train[0].captions[0] == "this bird has red wings and a yellow crown"
    assert source.attribute_schema() == {"wing_color": ["red", "green", "blue", "yellow"]}
    assert len(source.vocabulary()) > 5


def test_reed_archive_under_a_top_folder(tmp_path, cub_archives):
    images, _ = cub_archives
    captions = write_reed_tgz(tmp_path / "cvpr2016_cub.tar.gz", prefix="cvpr2016_cub/")
    manifest = prepare_cub(images, captions, tmp_path / "birds", checksum="record")
    assert manifest["images"] == {"train": 4, "test": 4}


def test_published_checksum_is_verified(tmp_path, cub_archives, monkeypatch):
    images, captions = cub_archives
    with pytest.raises(DataError, match=r"sha256 .* is not the published CUB_200_2011.tgz's .* where the published "
                                        r"one has 1,150,585,339.*checksum=record") as info:
        prepare_cub(images, captions, tmp_path / "birds")
    assert "\n" not in str(info.value) and not (tmp_path / "birds").exists()
    digest = hashlib.sha256(images.read_bytes()).hexdigest()
    monkeypatch.setitem(PUBLISHED, "cub_images", Published("CUB_200_2011.tgz", images.stat().st_size, digest))
    manifest = prepare_cub(images, captions, tmp_path / "birds")
    assert manifest["archives"][0]["verified"] is True


@pytest.mark.parametrize("which", ["images", "captions"])
def test_truncated_cub_archives(tmp_path, cub_archives, which):
    images, captions = cub_archives
    truncate(images if which == "images" else captions, 0.6)
    with pytest.raises(DataError, match=r"is truncated or not a .* archive .*download it again") as info:
        prepare_cub(images, captions, tmp_path / "birds", checksum="record")
    assert str(images if which == "images" else captions) in str(info.value)
    assert not (tmp_path / "birds").exists() and _no_leftovers(tmp_path)


def test_partial_and_unknown_cub_archives(tmp_path, cub_archives):
    images, captions = cub_archives
    dl = tmp_path / "dl"
    key = cub_keys()[5]
    cases = [
        (write_cub_tgz(dl / "partial.tgz", drop_image=key), captions,
         rf"partial.tgz is partial: 1 of the 8 images listed in CUB_200_2011/images.txt are not in it \(first: {key}.jpg\)"),
        (images, write_reed_tgz(dl / "partial_text.tgz", drop_text=key),
         rf"partial_text.tgz is partial: 1 of 8 images have no caption file text_c10/<key>.txt \(first: {key}.txt\)"),
        (captions, captions, r"is not the CUB-200-2011 archive: it has no CUB_200_2011/images.txt"),
        (images, images, r"is not Reed et al.'s caption archive"),
        (images, write_reed_tgz(dl / "other.tgz", extra_key="005.Crested_Auklet/Crested_Auklet_0001_794941"),
         r"does not belong to this CUB archive: 1 caption files name no image .*005.Crested_Auklet"),
        (write_coco_zips(dl)["annotations"], captions, r"is truncated or not a CUB-200-2011 archive"),
        (dl / "nothing.tgz", captions, r"archives.images=.*nothing.tgz: no such file"),
        (None, captions, r"no CUB_200_2011.tgz given: pass archives.images=PATH/CUB_200_2011.tgz"),
    ]
    for images_path, captions_path, message in cases:
        with pytest.raises(DataError, match=message) as info:
            prepare_cub(images_path, captions_path, tmp_path / "birds", checksum="record")
        assert "\n" not in str(info.value), message
    assert not (tmp_path / "birds").exists() and _no_leftovers(tmp_path)


def test_short_caption_file_stops_or_is_skipped(tmp_path, cub_archives):
    images, _ = cub_archives
    key = cub_keys()[1]
    captions = write_reed_tgz(tmp_path / "short.tgz", short=key)
    with pytest.raises(DataError, match=rf"text_c10/{key}.txt has 3 usable captions, fewer than 10 \(skip_bad=true"):
        prepare_cub(images, captions, tmp_path / "birds", checksum="record")
    manifest = prepare_cub(images, captions, tmp_path / "birds", checksum="record", skip_bad=True)
    assert manifest["skipped"] == {"short caption file": 1} and manifest["images"]["train"] == 3
    assert key not in json.loads((tmp_path / "birds" / "train" / "filenames.json").read_text())


def test_existing_root_is_kept_unless_forced(tmp_path, cub_archives):
    images, captions = cub_archives
    root = tmp_path / "birds"
    (root / "mine").mkdir(parents=True)
    with pytest.raises(DataError, match="already exists and is not empty; pass force=true"):
        prepare_cub(tmp_path / "not_read_yet.tgz", captions, root, checksum="record")  # before any archive is read
    assert (root / "mine").is_dir()
    prepare_cub(images, captions, root, checksum="record", force=True)
    assert not (root / "mine").exists() and (root / "prepared.json").is_file() and _no_leftovers(tmp_path)


# ---------------------------------------------------------------------------- COCO
def test_coco_attngan_layout(tmp_path):
    zips = write_coco_zips(tmp_path / "dl", n_train=3, n_val=2)
    root = tmp_path / "coco"
    manifest = prepare_coco(zips["train"], zips["val"], zips["annotations"], root, checksum="record")
    assert manifest["images"] == {"train": 3, "test": 2} and manifest["layout"] == "attngan"
    assert [r["role"] for r in manifest["archives"]] == ["coco_train", "coco_val", "coco_annotations"]
    assert json.loads((root / "train" / "filenames.json").read_text()) == [
        f"COCO_train2014_{i:012d}" for i in (9, 16, 23)]  # image-id order
    source = COCOSource(root, layout="attngan")
    record = source.records("train")[1]  # image 16: 6 captions, annotation ids decrease in file order
    expected = [" ".join(c.split()) for c in reversed(coco_captions(16, 6))]
    assert (root / "text" / "COCO_train2014_000000000016.txt").read_text().splitlines() == expected
    assert record.captions == expected[:5] and record.image_path == root / "images" / "COCO_train2014_000000000016.jpg"
    assert [r.key for r in source.records("test")] == ["COCO_val2014_000000000042", "COCO_val2014_000000000049"]


def test_coco_json_layout_is_read_by_coco_json(tmp_path):
    zips = write_coco_zips(tmp_path / "dl")
    root = tmp_path / "coco"
    prepare_coco(zips["train"], zips["val"], zips["annotations"], root, layout="json", checksum="record")
    assert (root / "annotations" / "captions_val2014.json").is_file()
    assert not (root / "annotations" / "instances_train2014.json").exists()
    source = COCOSource(root, layout="json")
    assert len(source.records("train")) == 3 and len(source.records("test")) == 2


def test_coco_bad_archives(tmp_path):
    dl = tmp_path / "dl"
    zips = write_coco_zips(dl)
    partial = write_coco_zips(tmp_path / "p", drop_image="COCO_val2014_000000000049.jpg")
    root = tmp_path / "coco"
    args = (zips["train"], zips["val"], zips["annotations"])
    cases = [
        ((zips["val"], zips["val"], zips["annotations"]), r"val2014.zip is not train2014.zip: it has no member under train2014/"),
        ((zips["train"], partial["val"], zips["annotations"]),
         r"val2014.zip is partial: 1 of the 2 images of annotations/captions_val2014.json are not in it"),
        ((zips["train"], zips["val"], zips["train"]),
         r"is not annotations_trainval2014.zip: it has no annotations/captions_train2014.json"),
        ((zips["train"], zips["val"], None), r"no annotations_trainval2014.zip given: pass archives.annotations="),
    ]
    for paths, message in cases:
        with pytest.raises(DataError, match=message) as info:
            prepare_coco(*paths, root, checksum="record")
        assert "\n" not in str(info.value)
    with pytest.raises(DataError, match=r"sha256 .* is not the published train2014.zip's"):
        prepare_coco(*args, root)
    for key in ("train", "val", "annotations"):
        broken = write_coco_zips(tmp_path / f"t_{key}")
        truncate(broken[key], 0.7)
        paths = [broken[k] for k in ("train", "val", "annotations")]
        with pytest.raises(DataError, match=rf"{broken[key].name} is truncated or not a .*zip archive"):
            prepare_coco(*paths, root, checksum="record")
    assert not root.exists() and _no_leftovers(tmp_path)


def test_coco_image_with_few_captions(tmp_path):
    zips = write_coco_zips(tmp_path / "dl", short_id=16)
    args = (zips["train"], zips["val"], zips["annotations"], tmp_path / "coco")
    with pytest.raises(DataError, match=r"captions_train2014.json: image 16 \(COCO_train2014_000000000016.jpg\) has 2 "
                                        r"usable captions, fewer than 5"):
        prepare_coco(*args, checksum="record")
    manifest = prepare_coco(*args, checksum="record", skip_bad=True)
    assert manifest["skipped"] == {"few captions": 1} and manifest["images"] == {"train": 2, "test": 2}


def test_member_names_that_leave_the_folder_are_not_extracted(tmp_path, cub_archives):
    import io
    import tarfile
    images, captions = cub_archives
    evil = tmp_path / "evil.tgz"
    with tarfile.open(images) as src, tarfile.open(evil, "w:gz") as dst:
        for m in src.getmembers():
            dst.addfile(m, src.extractfile(m) if m.isfile() else None)
        for name in ("../escaped.txt", "/tmp/absolute_t2i_test.txt"):
            info = tarfile.TarInfo(name)
            info.size = 1
            dst.addfile(info, io.BytesIO(b"x"))
        link = tarfile.TarInfo("CUB_200_2011/link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        dst.addfile(link)
    prepare_cub(evil, captions, tmp_path / "out" / "birds", checksum="record")
    assert not (tmp_path / "out" / "escaped.txt").exists() and not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path / "out" / "birds" / "CUB_200_2011" / "link").exists()
    assert not Path("/tmp/absolute_t2i_test.txt").exists()
    assert archives.MANIFEST == "prepared.json"
