"""Rendering the synthetic birds into exactly the CUB-200-2011 / AttnGAN layout (see :mod:`t2i.data.synthbirds`).

On-disk layout written by :func:`render_dataset` (the formats of CUB-200-2011's README and of the
AttnGAN/StackGAN metadata: ``filenames.pickle`` / ``class_info.pickle`` protocol-2 lists)::

    <root>/CUB_200_2011/images.txt                 "<image_id> <NNN.Species>/<Species_NNNN>.jpg"
    <root>/CUB_200_2011/classes.txt                "<class_id> <NNN.Species>"
    <root>/CUB_200_2011/image_class_labels.txt     "<image_id> <class_id>"
    <root>/CUB_200_2011/bounding_boxes.txt         "<image_id> <x> <y> <width> <height>" (floats)
    <root>/CUB_200_2011/train_test_split.txt       "<image_id> <is_training_image>" (the species split)
    <root>/CUB_200_2011/images/<NNN.Species>/<Species_NNNN>.jpg
    <root>/CUB_200_2011/attributes/attributes.txt  "<attribute_id> has_<part>_color::<colour>" ...
    <root>/CUB_200_2011/attributes/certainties.txt "<certainty_id> <certainty_name>"
    <root>/CUB_200_2011/attributes/image_attribute_labels.txt
                                                   "<image_id> <attribute_id> <is_present> <certainty_id> <time>"
    <root>/CUB_200_2011/attributes/class_attribute_labels_continuous.txt   (per class, percent present)
    <root>/text/<NNN.Species>/<Species_NNNN>.txt   10 captions, one per line
    <root>/{train,test}/filenames.pickle           ["<NNN.Species>/<Species_NNNN>", ...], disjoint species
    <root>/{train,test}/class_info.pickle          [class_id (1-based int), ...] aligned with filenames
    <root>/synthbirds.json                         settings + format version; written last

Real CUB copies keep ``attributes.txt`` either at the data root or under ``CUB_200_2011/attributes/``;
the synthetic set always writes ``CUB_200_2011/attributes/attributes.txt`` (the CUB README's place).
Attribute names use CUB's spelling where CUB has the part (``has_bill_color``, ``has_primary_color``,
``has_upper_tail_color``, ``has_leg_color``; see :data:`ATTRIBUTE_PART_NAMES`), so an attribute
classifier keyed on attribute names works on both.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from t2i.data.attributes import (BEAK_LENGTH_ATTRIBUTES, CERTAINTIES, CERTAINTY_DEFINITELY, SIZE_ATTRIBUTES,
                                  attribute_names, colour_attribute)
from t2i.data.synthbirds.captions import make_captions
from t2i.data.synthbirds.drawing import draw_bird
from t2i.data.synthbirds.species import VARIATIONS, Species, fix_variation, make_species, sample_bird
from t2i.errors import ConfigError, DataError
from t2i.io import atomic_write_text
from t2i.workers import exit_with_parent

log = logging.getLogger(__name__)


FORMAT_VERSION = 1
MARKER = "synthbirds.json"
INCOMPLETE_MARKER = ".synthbirds_incomplete"
CUB_DIR = "CUB_200_2011"
JPEG_QUALITY = 95


_OWNED = (CUB_DIR, "text", "train", "test", MARKER, INCOMPLETE_MARKER, "contact_sheet.png")


@dataclass(frozen=True)
class _Job:
    index: int  # 0-based image index (image_id - 1)
    species: Species
    number: int  # 1-based number within the species
    image_size: int
    captions: int
    seed: int
    root: str
    fixed: tuple[str, ...] = ()
    blur: float = 0.0


def _image_key(species: Species, number: int) -> str:
    """``"NNN.Species/Species_NNNN"``: the AttnGAN filename key (no extension)."""
    return f"{species.folder}/{species.name}_{number:04d}"


def image_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of image ``index`` (0-based image id): it draws the bird, then the captions."""
    return np.random.default_rng([seed, 0xB1BD, index])


def image_index(species: Species, number: int, images_per_species: int) -> int:
    """0-based index (image id - 1) of image ``number`` (1-based) of ``species``, as :func:`render_dataset` numbers."""
    return (species.class_id - 1) * images_per_species + number - 1


def blur_image(image: Image.Image, blur: float) -> Image.Image:
    """``image`` under the render's ``blur`` (a Gaussian radius in pixels of a 64-px image, scaled to its size)."""
    return image.filter(ImageFilter.GaussianBlur(blur * image.width / 64)) if blur > 0 else image


def _render_one(job: _Job) -> tuple[int, str, tuple[int, int, int, int], list[str]]:
    """Render, save and caption one image; seeded from (seed, image index) only, never worker order."""
    rng = image_rng(job.seed, job.index)
    bird = fix_variation(sample_bird(job.species, rng), job.fixed)
    image, _, bbox = draw_bird(bird, job.image_size)
    image = blur_image(image, job.blur)
    key = _image_key(job.species, job.number)
    root = Path(job.root)
    image.save(root / CUB_DIR / "images" / f"{key}.jpg", "JPEG", quality=JPEG_QUALITY)
    captions = make_captions(bird, rng, job.captions)
    (root / "text" / f"{key}.txt").write_text("\n".join(captions) + "\n", encoding="utf-8")
    return job.index, bird.size, bbox, captions


def _settings(num_species: int, images_per_species: int, image_size: int, test_fraction: float,
              captions_per_image: int, seed: int, fixed: Any = (), blur: float = 0.0) -> dict[str, Any]:
    if isinstance(fixed, str) or not all(isinstance(f, str) and f in VARIATIONS for f in fixed):
        raise ConfigError(f"render fixed={fixed!r}: give a list of variations to hold fixed, of {list(VARIATIONS)} "
                          "(e.g. fixed=[pose,background]); [] renders every variation")
    if not isinstance(blur, (int, float)) or not 0.0 <= float(blur) <= 16.0:
        raise ConfigError(f"render blur={blur!r}: a Gaussian blur radius in pixels at 64 px, from 0 (off) to 16")
    return {"num_species": int(num_species), "images_per_species": int(images_per_species),
            "image_size": int(image_size), "test_fraction": float(test_fraction),
            "captions_per_image": int(captions_per_image), "seed": int(seed),
            "fixed": [v for v in VARIATIONS if v in fixed], "blur": float(blur)}


DEFAULTS: dict[str, Any] = _settings(80, 40, 256, 0.25, 10, 0)
"""Default render settings (3200 images of 80 species; the keyword arguments of :func:`render_dataset`)."""


def check_settings(settings: dict[str, Any]) -> None:
    """Raise :class:`ConfigError` for keys that are not :func:`render_dataset` settings."""
    unknown = set(settings) - set(DEFAULTS)
    if unknown:
        raise ConfigError(f"unknown synthbirds render settings {sorted(unknown)}; use keys among {sorted(DEFAULTS)}")


def is_rendered(root: str | Path, **settings: Any) -> bool:
    """True when ``root`` holds a complete synthetic set rendered with ``settings`` (defaults filled in).

    The marker ``synthbirds.json`` is written last, so an interrupted render is never taken for complete.
    """
    root = Path(root)
    marker = root / MARKER
    if not marker.is_file() or (root / INCOMPLETE_MARKER).exists():
        return False
    check_settings(settings)
    try:
        meta = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    wanted = _settings(**{**DEFAULTS, **settings})
    stored = meta.get("settings")  # a render from before a setting existed has that setting's default
    return meta.get("format_version") == FORMAT_VERSION and isinstance(stored, dict) and {**DEFAULTS, **stored} == wanted


def read_summary(root: str | Path) -> dict[str, Any]:
    """The contents of ``<root>/synthbirds.json`` (settings, counts, species split and schemes)."""
    marker = Path(root) / MARKER
    if not marker.is_file():
        raise DataError(f"no {marker}; render the set first (python tools/prepare_data.py data=synthbirds)")
    try:
        return json.loads(marker.read_text(encoding="utf-8"))
    except ValueError as err:
        raise DataError(f"{marker} is corrupt ({err}); render again with force=true") from err


def _split_species(num_species: int, test_fraction: float, seed: int) -> set[int]:
    """Class ids of the test species (as CUB's 150/50 class split of AttnGAN/StackGAN)."""
    num_test = int(round(num_species * test_fraction))
    if num_species >= 2:
        num_test = min(max(num_test, 1), num_species - 1)
    order = np.random.default_rng([seed, 0x7E57]).permutation(num_species) + 1
    return {int(c) for c in order[:num_test]}


def _prepare_root(root: Path) -> None:
    """Clear a previous render; refuse to touch a directory that is not ours."""
    if root.exists():
        entries = {p.name for p in root.iterdir()}
        ours = (root / MARKER).exists() or (root / INCOMPLETE_MARKER).exists()
        if entries and not ours:
            raise DataError(f"{root} is not empty and holds no synthetic bird set; choose an empty data.root")
        # the readers' derived caches (vocabulary, AttnGAN's captions.pickle) go with the old render
        from t2i.data.source import ATTNGAN_CAPTIONS, VOCAB_FILE

        for name in (*_OWNED, VOCAB_FILE, ATTNGAN_CAPTIONS):
            path = root / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        others = sorted(entries - set(_OWNED) - {VOCAB_FILE, ATTNGAN_CAPTIONS})
        if others:
            log.warning("left in %s from before (caches may be stale): %s", root, ", ".join(others))
    root.mkdir(parents=True, exist_ok=True)
    (root / INCOMPLETE_MARKER).write_text("rendering\n", encoding="utf-8")


def render_dataset(
    root: str | Path,
    *,
    num_species: int = DEFAULTS["num_species"],
    images_per_species: int = DEFAULTS["images_per_species"],
    image_size: int = DEFAULTS["image_size"],
    test_fraction: float = DEFAULTS["test_fraction"],
    captions_per_image: int = DEFAULTS["captions_per_image"],
    seed: int = DEFAULTS["seed"],
    fixed: Any = (),
    blur: float = 0.0,
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Render the synthetic bird set into ``root`` in the CUB-200-2011 / AttnGAN layout (module docstring).

    Deterministic: the same settings give byte-identical files, whatever ``workers`` is.

    Args:
        root: output directory; must be empty, absent, or a previous synthetic render (cleared first).
        num_species: number of species (classes); split into train/test species.
        images_per_species: images per species.
        image_size: image side in pixels (square JPEGs, quality 95).
        test_fraction: fraction of species held out for the test split.
        captions_per_image: captions per image (CUB has 10).
        seed: seed of species schemes, split and every image.
        fixed: variations to hold fixed in every image, of :data:`.species.VARIATIONS` (``pose``, ``background``):
            a diagnostic set for FID (README "Why FID stays high"); the default ``()`` draws them all.
        blur: Gaussian blur of every image, radius in pixels of a 64-px image (scaled to ``image_size``): another
            diagnostic for FID; 0 (the default) is off.
        workers: rendering processes; None = ``os.cpu_count()``, 1 = in this process.
        progress: show a tqdm progress bar.

    Returns:
        ``root`` as a Path.
    """
    settings = _settings(num_species, images_per_species, image_size, test_fraction, captions_per_image, seed, fixed,
                         blur)
    if num_species < 1 or images_per_species < 1 or image_size < 32 or captions_per_image < 1:
        raise DataError(f"render settings out of range: {settings}; need >=1 species/images/captions, size >= 32")
    if not 0.0 <= test_fraction < 1.0:
        raise DataError(f"test_fraction={test_fraction} must be in [0, 1)")
    root = Path(root)
    start = time.perf_counter()
    _prepare_root(root)
    species = make_species(num_species, seed)
    test_ids = _split_species(num_species, test_fraction, seed)
    cub = root / CUB_DIR
    for sp in species:
        (cub / "images" / sp.folder).mkdir(parents=True, exist_ok=True)
        (root / "text" / sp.folder).mkdir(parents=True, exist_ok=True)
    jobs = [_Job(image_index(sp, n + 1, images_per_species), sp, n + 1, image_size, captions_per_image, seed, str(root),
                 tuple(settings["fixed"]), settings["blur"]) for sp in species for n in range(images_per_species)]

    results: list[Any] = [None] * len(jobs)
    workers = (os.cpu_count() or 1) if workers is None else max(1, int(workers))
    bar = _progress(len(jobs), progress)
    if workers == 1 or len(jobs) < 8:
        for job in jobs:
            results[job.index] = _render_one(job)
            bar.update(1)
    else:
        with ProcessPoolExecutor(max_workers=workers, initializer=exit_with_parent) as pool:
            chunk = max(1, min(32, len(jobs) // (4 * workers)))
            for res in pool.map(_render_one, jobs, chunksize=chunk):
                results[res[0]] = res
                bar.update(1)
    bar.close()

    _write_metadata(root, species, jobs, results, test_ids)
    meta = {"format_version": FORMAT_VERSION, "settings": settings, "num_images": len(jobs),
            "train_species": [sp.folder for sp in species if sp.class_id not in test_ids],
            "test_species": [sp.folder for sp in species if sp.class_id in test_ids],
            "species": {sp.folder: {"colours": sp.colours, "beak_length": sp.beak_length} for sp in species}}
    atomic_write_text(root / MARKER, json.dumps(meta, indent=1, sort_keys=True) + "\n")
    (root / INCOMPLETE_MARKER).unlink()
    log.info("rendered %d images of %d species into %s in %.1f s", len(jobs), num_species, root,
             time.perf_counter() - start)
    return root


def _progress(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="synthbirds", unit="img", disable=not enabled)


def _write_metadata(root: Path, species: list[Species], jobs: list[_Job], results: list[Any],
                    test_ids: set[int]) -> None:
    """The CUB index files, the attribute labels and the AttnGAN split pickles."""
    cub = root / CUB_DIR
    names = attribute_names()
    attr_id = {name: i + 1 for i, name in enumerate(names)}
    images, labels, boxes, split, attr_lines = [], [], [], [], []
    class_counts = np.zeros((len(species), len(names)))
    split_keys: dict[str, tuple[list[str], list[int]]] = {"train": ([], []), "test": ([], [])}
    for job, (_, size, bbox, _) in zip(jobs, results):
        image_id, sp = job.index + 1, job.species
        key = _image_key(sp, job.number)
        is_train = sp.class_id not in test_ids
        images.append(f"{image_id} {key}.jpg")
        labels.append(f"{image_id} {sp.class_id}")
        boxes.append(f"{image_id} " + " ".join(f"{float(v):.1f}" for v in bbox))
        split.append(f"{image_id} {int(is_train)}")
        present = {colour_attribute(p, c) for p, c in sp.colours.items()}
        present |= {BEAK_LENGTH_ATTRIBUTES[sp.beak_length], SIZE_ATTRIBUTES[size]}
        for name in names:
            flag = int(name in present)
            class_counts[sp.class_id - 1, attr_id[name] - 1] += flag
            attr_lines.append(f"{image_id} {attr_id[name]} {flag} {CERTAINTY_DEFINITELY} 0.000")
        keys, classes = split_keys["train" if is_train else "test"]
        keys.append(key)
        classes.append(sp.class_id)
    per_class = np.bincount([j.species.class_id - 1 for j in jobs], minlength=len(species))[:, None]
    percent = 100.0 * class_counts / np.maximum(per_class, 1)

    def lines(path: Path, rows: list[str]) -> None:
        path.write_text("\n".join(rows) + "\n", encoding="utf-8")

    lines(cub / "images.txt", images)
    lines(cub / "classes.txt", [f"{sp.class_id} {sp.folder}" for sp in species])
    lines(cub / "image_class_labels.txt", labels)
    lines(cub / "bounding_boxes.txt", boxes)
    lines(cub / "train_test_split.txt", split)
    (cub / "attributes").mkdir(parents=True, exist_ok=True)
    lines(cub / "attributes" / "attributes.txt", [f"{i + 1} {n}" for i, n in enumerate(names)])
    lines(cub / "attributes" / "certainties.txt", [f"{i + 1} {c}" for i, c in enumerate(CERTAINTIES)])
    lines(cub / "attributes" / "image_attribute_labels.txt", attr_lines)
    lines(cub / "attributes" / "class_attribute_labels_continuous.txt",
          [" ".join(f"{v:.6f}" for v in row) for row in percent])
    for name, (keys, classes) in split_keys.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        with open(root / name / "filenames.pickle", "wb") as f:
            pickle.dump(keys, f, protocol=2)
        with open(root / name / "class_info.pickle", "wb") as f:
            pickle.dump(classes, f, protocol=2)
