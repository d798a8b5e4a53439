"""Prepare a data set: render the synthetic birds, build CUB/COCO from their archives, or check a folder.

    python tools/prepare_data.py data=synthbirds [force=true] [contact_sheet=out/sheet.png] [workers=2]
    python tools/prepare_data.py data=cub source=official archives.images=CUB_200_2011.tgz \
        archives.captions=cvpr2016_cub.tar.gz
    python tools/prepare_data.py data=coco source=official archives.train=train2014.zip \
        archives.val=val2014.zip archives.annotations=annotations_trainval2014.zip
    python tools/prepare_data.py data=imagefolder data.root=DIR

For ``data=synthbirds`` the set is rendered into ``data.root`` with ``data.render`` (the keyword
arguments of :func:`t2i.data.synthbirds.render_dataset`), unless a complete render with the same
settings is already there; a contact sheet of 64 birds with their first captions is written.
With ``source=official`` CUB or COCO is built into ``data.root`` from the published archives
(:mod:`t2i.data.archives`; nothing is downloaded). ``data=imagefolder`` reads the folder's metadata and
every image and prints a summary (or the first bad row). For other downloaded sets the tool only checks
that ``data.root`` exists.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from t2i.cli import preflight, setup_logging
from t2i.errors import ConfigError, DataError, T2IError


def _archive(cfg: DictConfig, key: str, official: str) -> str | None:
    """``archives.<key>``, else ``<archive_dir>/<official name>`` when that file exists."""
    given = cfg.get("archives", {}).get(key)
    if given:
        return str(given)
    guess = Path(str(cfg.get("archive_dir") or "data/archives")) / official
    return str(guess) if guess.is_file() else None


def prepare_official(cfg: DictConfig) -> None:
    """``source=official``: build CUB or COCO under ``data.root`` from the archives."""
    from t2i.data import archives

    name = str(cfg.data.get("name"))
    root = Path(str(cfg.data.root))
    common = dict(checksum=str(cfg.checksum), force=bool(cfg.force), skip_bad=bool(cfg.data.get("skip_bad", False)))
    start = time.perf_counter()
    if name == "cub":
        manifest = archives.prepare_cub(_archive(cfg, "images", "CUB_200_2011.tgz"),
                                        _archive(cfg, "captions", "cvpr2016_cub.tar.gz"), root,
                                        captions_per_image=int(cfg.data.captions_per_image), **common)
    elif name == "coco":
        layout = str(cfg.data.source.get("layout", "attngan"))
        manifest = archives.prepare_coco(_archive(cfg, "train", "train2014.zip"), _archive(cfg, "val", "val2014.zip"),
                                         _archive(cfg, "annotations", "annotations_trainval2014.zip"), root,
                                         layout=layout, captions_per_image=int(cfg.data.captions_per_image), **common)
    else:
        raise ConfigError(f"source=official builds data=cub, coco or coco_json from their archives, not data={name}")
    print(f"root:     {root.resolve()} ({name}, {manifest['layout']} layout)")
    classes = manifest.get("classes")
    print(f"images:   {manifest['images']['train']} train / {manifest['images']['test']} test"
          + (f" ({classes['train']} / {classes['test']} classes)" if classes else ""))
    for rec in manifest["archives"]:
        state = {True: "matches the published sha256", False: "NOT the published archive (checksum=record)",
                 None: "no published checksum; recorded"}[rec["verified"]]
        print(f"archive:  {rec['file']}: sha256 {rec['sha256']} ({state})")
    if manifest["skipped"]:
        print(f"skipped:  {manifest['skipped']}")
    print(f"time:     {time.perf_counter() - start:.2f} s; manifest {root / archives.MANIFEST}")


def check_imagefolder(cfg: DictConfig) -> None:
    """``data=imagefolder``: read the metadata and decode every image; print a summary."""
    from collections import Counter

    from PIL import Image

    from t2i.data.images import load_image
    from t2i.recipes.data import build_source

    start = time.perf_counter()
    source = build_source(cfg.data)
    splits = {s: source.records(s) for s in ("train", "test")}
    vocab = source.vocabulary()
    formats: Counter = Counter()
    sizes = []
    unreadable = []
    for records in splits.values():
        for r in records:
            try:
                load_image(r.image_path)
            except DataError:
                if not cfg.data.get("skip_bad", False):
                    raise
                unreadable.append(r.image_path)
                continue
            with Image.open(r.image_path) as img:
                formats[f"{img.format} {img.mode}"] += 1
                sizes.append(img.size)
    captions = {s: sum(len(r.captions) for r in rs) for s, rs in splits.items()}
    print(f"root:       {Path(str(cfg.data.root)).resolve()} ({', '.join(str(p) for p in source.folders.values())})")
    print(f"images:     {len(splits['train'])} train / {len(splits['test'])} test; "
          f"captions {captions['train']} / {captions['test']}")
    print(f"classes:    {len({r.class_id for rs in splits.values() for r in rs})}"
          + ("" if source.class_column else " (no class column: every image is its own class)"))
    print(f"vocabulary: {len(vocab)} tokens from the training captions")
    print(f"formats:    {', '.join(f'{k} x{v}' for k, v in formats.most_common())}")
    if sizes:
        print(f"sizes:      {min(w for w, _ in sizes)}-{max(w for w, _ in sizes)} x "
              f"{min(h for _, h in sizes)}-{max(h for _, h in sizes)} px (converted to RGB and resized when read)")
    skipped = dict(source.skipped, **({"unreadable image": len(unreadable)} if unreadable else {}))
    if skipped:
        print(f"skipped:    {skipped}")
    print(f"time:       {time.perf_counter() - start:.2f} s")


def prepare(cfg: DictConfig) -> None:
    """Render, build or check ``cfg.data``; prints a short summary."""
    from t2i.data import synthbirds

    source = cfg.get("source")
    if source not in (None, "official"):
        raise ConfigError(f"source={source} must be official (build from the published archives) or null")
    if source == "official":
        return prepare_official(cfg)
    if cfg.data.get("name") == "imagefolder":
        return check_imagefolder(cfg)
    root = Path(str(cfg.data.root))
    name = cfg.data.get("name", root.name)
    render = cfg.data.get("render")
    if render is None:
        if root.is_dir() and any(root.iterdir()):
            print(f"{name}: found {root.resolve()}; nothing to render (downloaded data set)")
            return
        raise DataError(
            f"{name} is not at {root}: build it from the archives (python tools/prepare_data.py data={name} "
            "source=official archives...=PATH) or place it there as data/README.md describes"
        )
    settings = OmegaConf.to_container(render, resolve=True)
    synthbirds.check_settings(settings)
    start = time.perf_counter()
    rendered = False
    if not cfg.force and synthbirds.is_rendered(root, **settings):
        print(f"{name}: already rendered at {root.resolve()} with these settings (force=true to redo)")
    else:
        synthbirds.render_dataset(root, **settings, workers=cfg.workers, progress=cfg.progress)
        rendered = True
    elapsed = time.perf_counter() - start
    sheet = Path(cfg.contact_sheet or root / "contact_sheet.png")
    if rendered or cfg.contact_sheet or not sheet.exists():
        sheet = synthbirds.contact_sheet(root, sheet)
    summary = synthbirds.read_summary(root)
    print(f"root:          {root.resolve()}")
    print(f"images:        {summary['num_images']} ({summary['settings']['image_size']} px)")
    print(f"species:       {len(summary['train_species'])} train / {len(summary['test_species'])} test")
    print(f"time:          {elapsed:.1f} s")
    print(f"contact sheet: {sheet.resolve()}")


@hydra.main(config_path="../conf", config_name="prepare_data", version_base="1.3")
def main(cfg: DictConfig) -> None:
    setup_logging()
    try:
        prepare(cfg)
    except T2IError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    preflight("prepare_data")  # overrides that do not compose: one error line, exit 2
    main()
