"""Tests of the synthetic bird renderer (t2i/data/synthbirds.py): layout, determinism, faithfulness."""

from __future__ import annotations

import pickle
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from t2i.data import synthbirds as sb
from t2i.errors import ConfigError, DataError

SETTINGS = dict(num_species=3, images_per_species=3, image_size=64, seed=3)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _rows(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sb.render_dataset(tmp_path_factory.mktemp("birds") / "a", **SETTINGS, workers=1, progress=False)


def test_render_is_byte_identical_whatever_the_workers(rendered: Path, tmp_path: Path) -> None:
    again = sb.render_dataset(tmp_path / "b", **SETTINGS, workers=2, progress=False)
    first, second = _tree(rendered), _tree(again)
    assert first.keys() == second.keys()
    assert [k for k in first if first[k] != second[k]] == []
    other = sb.render_dataset(tmp_path / "c", **{**SETTINGS, "seed": 4}, workers=1, progress=False)
    assert _tree(other) != first


def test_layout_parses_and_ids_agree(rendered: Path) -> None:
    cub = rendered / sb.CUB_DIR
    images = {int(i): name for i, name in _rows(cub / "images.txt")}
    assert sorted(images) == list(range(1, 10))
    classes = {int(i): name for i, name in _rows(cub / "classes.txt")}
    assert sorted(classes) == [1, 2, 3]
    labels = {int(i): int(c) for i, c in _rows(cub / "image_class_labels.txt")}
    for image_id, name in images.items():
        folder, file = name.split("/")
        assert folder == classes[labels[image_id]] and file.endswith(".jpg")
        with Image.open(cub / "images" / name) as img:
            assert img.format == "JPEG" and img.size == (64, 64) and img.mode == "RGB"
        captions = (rendered / "text" / name).with_suffix(".txt").read_text(encoding="utf-8").split("\n")
        assert captions[-1] == "" and len(captions[:-1]) == 10
        assert all(c.strip() for c in captions[:-1]) and len(set(captions[:-1])) == 10
    boxes = {int(r[0]): [float(v) for v in r[1:]] for r in _rows(cub / "bounding_boxes.txt")}
    assert sorted(boxes) == sorted(images)
    for x, y, w, h in boxes.values():
        assert 0 <= x and 0 <= y and x + w <= 64 and y + h <= 64 and w > 20 and h > 10
    assert "." in (cub / "bounding_boxes.txt").read_text().split()[1]  # floats, as CUB writes them

    split = {int(i): int(t) for i, t in _rows(cub / "train_test_split.txt")}
    keys, class_info = {}, {}
    for name in ("train", "test"):
        with open(rendered / name / "filenames.pickle", "rb") as f:
            keys[name] = pickle.load(f)
        with open(rendered / name / "class_info.pickle", "rb") as f:
            class_info[name] = pickle.load(f)
        assert all(isinstance(k, str) for k in keys[name]) and all(type(c) is int for c in class_info[name])
        assert len(keys[name]) == len(class_info[name])
    by_key = {name[:-4]: image_id for image_id, name in images.items()}
    assert sorted(keys["train"] + keys["test"]) == sorted(by_key)
    for name, flag in (("train", 1), ("test", 0)):
        for key, class_id in zip(keys[name], class_info[name]):
            assert labels[by_key[key]] == class_id and split[by_key[key]] == flag
    assert not set(class_info["train"]) & set(class_info["test"]) and class_info["test"]


def _labels(rendered: Path) -> tuple[dict[str, dict[str, str]], dict[str, set[str]]]:
    """image key -> {part: colour} and image key -> other present attributes, read like a CUB reader."""
    cub = rendered / sb.CUB_DIR
    names = {int(i): n for i, n in _rows(cub / "attributes" / "attributes.txt")}
    assert list(names.values()) == sb.attribute_names()
    images = {int(i): name[:-4] for i, name in _rows(cub / "images.txt")}
    colours: dict[str, dict[str, str]] = defaultdict(dict)
    others: dict[str, set[str]] = defaultdict(set)
    rows = _rows(cub / "attributes" / "image_attribute_labels.txt")
    assert len(rows) == len(images) * len(names)
    for image_id, attr_id, present, certainty, seconds in rows:
        assert certainty == "4" and float(seconds) == 0.0
        if present == "1":
            key, parsed = images[int(image_id)], sb.parse_attribute_name(names[int(attr_id)])
            if parsed is None:
                others[key].add(names[int(attr_id)])
            else:
                assert parsed[0] not in colours[key], "one colour per part"
                colours[key][parsed[0]] = parsed[1]
    return colours, others


def test_captions_only_name_what_the_labels_say(rendered: Path) -> None:
    colours, others = _labels(rendered)
    assert all(set(c) == set(sb.PARTS) for c in colours.values())
    named = 0
    for key, scheme in colours.items():
        for caption in (rendered / "text" / f"{key}.txt").read_text(encoding="utf-8").splitlines():
            claims = sb.caption_attributes(caption)
            assert 1 <= len(claims["colours"]) + (claims["size"] is not None) + (claims["beak_length"] is not None)
            for part, colour in claims["colours"]:
                assert scheme[part] == colour, (caption, part, scheme[part])
                named += 1
            if claims["size"]:
                assert sb.SIZE_ATTRIBUTES[claims["size"]] in others[key], caption
            if claims["beak_length"]:
                assert sb.BEAK_LENGTH_ATTRIBUTES[claims["beak_length"]] in others[key], caption
    assert named > 90


def test_caption_parser_and_generator_on_many_birds() -> None:
    species = sb.make_species(12, seed=1)
    lengths, words = [], set()
    for i in range(200):
        rng = np.random.default_rng(i)
        bird = sb.sample_bird(species[i % 12], rng)
        for caption in sb.make_captions(bird, rng):
            claims = sb.caption_attributes(caption)
            assert all(bird.species.colours[p] == c for p, c in claims["colours"]), caption
            assert claims["size"] in (None, bird.size) and claims["beak_length"] in (None, bird.species.beak_length)
            tokens = caption.replace(",", " ").split()
            lengths.append(len(tokens))
            words.update(tokens)
            assert not re.search(r"\ba [aeiou]|\ban [^aeiou]", caption), caption
    assert max(lengths) <= 18  # AttnGAN birds TEXT.WORDS_NUM: no caption is truncated
    assert len(words) < 150
    assert sb.caption_attributes("green crown bird")["colours"] == [("crown", "green")]
    assert sb.caption_attributes("this bird is gray with a red crowned head")["colours"] == [
        ("body", "grey"), ("crown", "red")]
    with pytest.raises(ValueError):
        sb.caption_attributes("a bird with red on its wings")


def test_species_differ_in_two_parts_and_avoid_background_clashes() -> None:
    species = sb.make_species(30, seed=0)
    assert len({s.name for s in species}) == 30
    for i, a in enumerate(species):
        assert len(a.backgrounds()) >= 2
        for b in species[:i]:
            assert sum(a.colours[p] != b.colours[p] for p in sb.CAPTION_PARTS) >= 2
        used = {a.colours[p] for p in sb.CAPTION_PARTS}
        assert all(not (sb.BACKGROUNDS[k].conflicts & used) for k in a.backgrounds())


SCHEMES = (  # together they paint every palette colour on a big part
    ("yellow", "black", "red", "blue", "green", "orange", "purple", "orange"),
    ("red", "red", "yellow", "grey", "grey", "yellow", "white", "orange"),
    ("brown", "brown", "red", "black", "black", "orange", "yellow", "yellow"),
)


@pytest.mark.parametrize("colours", SCHEMES)
def test_drawn_parts_have_their_named_colour(colours: tuple[str, ...]) -> None:
    scheme = dict(zip(("body", "head", "crown", "wing", "tail", "beak", "belly", "breast"), colours))
    scheme.update(eye="black", legs="grey")
    species = sb.Species(1, "Test_Bird", scheme, "long")
    for i, facing in enumerate(("left", "right")):
        rng = np.random.default_rng(i)
        bird = sb.sample_bird(species, rng)
        bird = sb.Bird(**{**bird.__dict__, "facing": facing, "shading": 0.24, "size": "small",
                          "width_fraction": 0.56})
        image, part_map, (x, y, w, h) = sb.draw_bird(bird, 128)
        pixels = np.asarray(image, dtype=np.float64)
        for part in ("body", "head", "crown", "wing", "tail", "beak", "belly", "breast"):
            inside = part_map == sb.PART_LABELS[part]
            # away from antialiased edges: pixels whose 4-neighbours are the same part
            core = inside.copy()
            core[1:-1, 1:-1] &= inside[:-2, 1:-1] & inside[2:, 1:-1] & inside[1:-1, :-2] & inside[1:-1, 2:]
            assert core.sum() >= 12, (part, core.sum())
            mean = pixels[core].mean(0)
            assert np.abs(mean - sb.COLOURS[scheme[part]]).max() < 40, (part, mean)
            nearest = min(sb.COLOURS, key=lambda c: np.sum((np.asarray(sb.COLOURS[c]) - mean) ** 2))
            assert nearest == scheme[part], (part, nearest)
        ys, xs = np.nonzero(part_map)
        box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        assert np.abs(box - [x, y, x + w, y + h]).max() <= 1, (box, (x, y, w, h))  # part map vs coverage
        head_x = np.nonzero(part_map == sb.PART_LABELS["beak"])[1].mean()
        tail_x = np.nonzero(part_map == sb.PART_LABELS["tail"])[1].mean()
        assert (head_x > tail_x) == (facing == "right")


def test_is_rendered_detects_incomplete_and_other_settings(rendered: Path, tmp_path: Path) -> None:
    assert sb.is_rendered(rendered, **SETTINGS)
    assert not sb.is_rendered(rendered, **{**SETTINGS, "seed": 5})
    assert not sb.is_rendered(rendered)  # defaults differ
    assert not sb.is_rendered(tmp_path / "nothing")
    copy = tmp_path / "copy"
    for rel, data in _tree(rendered).items():
        (copy / rel).parent.mkdir(parents=True, exist_ok=True)
        (copy / rel).write_bytes(data)
    assert sb.is_rendered(copy, **SETTINGS)
    (copy / sb.INCOMPLETE_MARKER).write_text("rendering\n")  # an interrupted re-render
    assert not sb.is_rendered(copy, **SETTINGS)
    (copy / sb.MARKER).unlink()  # interrupted first render: no marker yet
    assert not sb.is_rendered(copy, **SETTINGS)
    # a render over a previous (incomplete) one clears it; a foreign directory is refused
    sb.render_dataset(copy, num_species=2, images_per_species=2, image_size=64, workers=1, progress=False)
    assert len(list((copy / sb.CUB_DIR / "images").iterdir())) == 2
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(DataError):
        sb.render_dataset(foreign, num_species=2, images_per_species=2, image_size=64, workers=1, progress=False)


def test_contact_sheet(rendered: Path, tmp_path: Path) -> None:
    path = sb.contact_sheet(rendered, tmp_path / "sheet.png", count=9, columns=3, cell=64)
    with Image.open(path) as sheet:
        assert sheet.width == 3 * 64 and sheet.height == 3 * (64 + 4 * 11 + 4)


@pytest.mark.slow
def test_prepare_data_tool_renders_and_reports(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    root = tmp_path / "birds"
    args = [sys.executable, str(repo / "tools" / "prepare_data.py"), f"data.root={root}", "progress=false",
            "workers=1", "data.render.num_species=2", "data.render.images_per_species=2",
            "data.render.image_size=64", "data.render.seed=1"]
    run = subprocess.run(args, capture_output=True, text=True, cwd=repo, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "images:        4 (64 px)" in run.stdout and "1 train / 1 test" in run.stdout
    assert sb.is_rendered(root, num_species=2, images_per_species=2, image_size=64, seed=1)
    assert (root / "contact_sheet.png").is_file()
    bad = subprocess.run([*args, "+data.render.colour=red"], capture_output=True, text=True, cwd=repo, timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "colour" in bad.stderr
    with pytest.raises(ConfigError):
        sb.is_rendered(root, colour="red")


def test_fixed_variation_keeps_species_and_captions_and_holds_pose_and_background(rendered: Path, tmp_path: Path) -> None:
    fixed = sb.render_dataset(tmp_path / "f", **SETTINGS, fixed=["background", "pose"], workers=1, progress=False)
    text = sorted((rendered / "text").rglob("*.txt"))
    assert [p.read_bytes() for p in text] == [(fixed / p.relative_to(rendered)).read_bytes() for p in text]
    species = sb.make_species(SETTINGS["num_species"], SETTINGS["seed"])
    birds = [sb.fix_variation(sb.sample_bird(sp, sb.image_rng(SETTINGS["seed"], sb.image_index(sp, n, 3))),
                              ["pose", "background"]) for sp in species for n in (1, 2, 3)]
    assert {(b.facing, b.width_fraction, b.centre, b.tilt, b.wing_angle, b.gradient) for b in birds} == \
        {("left", 0.8, (0.5, 0.5), 0.0, 0.0, False)}
    assert all(b.background in b.species.backgrounds() for b in birds)
    for sp in species:  # one image of a species is the same picture as any other of it, but for its shading
        a, b = (np.asarray(Image.open(fixed / sb.CUB_DIR / "images" / sp.folder / f"{sp.folder.split('.')[1]}_{n:04d}.jpg"),
                           dtype=np.float32) for n in (1, 2))
        assert np.abs(a - b).mean() < 12.0
    # the settings mark the render: a default render is not taken for a fixed one, nor the other way round
    assert sb.is_rendered(fixed, **SETTINGS, fixed=["pose", "background"])
    assert not sb.is_rendered(fixed, **SETTINGS) and not sb.is_rendered(rendered, **SETTINGS, fixed=["pose"])
    with pytest.raises(ConfigError, match="pose"):
        sb.render_dataset(tmp_path / "g", **SETTINGS, fixed=["wings"], workers=1, progress=False)
    with pytest.raises(ConfigError, match="list"):
        sb.render_dataset(tmp_path / "g", **SETTINGS, fixed="pose", workers=1, progress=False)


def test_a_render_from_before_the_fixed_setting_counts_as_rendered(tmp_path: Path) -> None:
    import json

    root = sb.render_dataset(tmp_path / "old", **SETTINGS, workers=1, progress=False)
    meta = json.loads((root / sb.MARKER).read_text())
    del meta["settings"]["fixed"]
    (root / sb.MARKER).write_text(json.dumps(meta))
    assert sb.is_rendered(root, **SETTINGS) and not sb.is_rendered(root, **SETTINGS, fixed=["pose"])


def test_blur_smooths_every_image_and_marks_the_render(rendered: Path, tmp_path: Path) -> None:
    blurred = sb.render_dataset(tmp_path / "b", **SETTINGS, blur=2.0, workers=1, progress=False)

    def edges(root: Path) -> float:  # mean absolute difference of horizontal neighbours
        images = [np.asarray(Image.open(p), dtype=np.float32) for p in sorted((root / sb.CUB_DIR / "images").rglob("*.jpg"))]
        return float(np.mean([np.abs(np.diff(x, axis=1)).mean() for x in images]))

    assert edges(blurred) < 0.6 * edges(rendered)
    assert sb.is_rendered(blurred, **SETTINGS, blur=2.0) and not sb.is_rendered(blurred, **SETTINGS)
    with pytest.raises(ConfigError, match="blur"):
        sb.render_dataset(tmp_path / "c", **SETTINGS, blur=-1, workers=1, progress=False)
