"""Prepare a data set: render the synthetic birds, or say where a downloaded set must go.

    python tools/prepare_data.py data=synthbirds [force=true] [contact_sheet=out/sheet.png] [workers=2]

For ``data=synthbirds`` the set is rendered into ``data.root`` with ``data.render`` (the keyword
arguments of :func:`t2i.data.synthbirds.render_dataset`), unless a complete render with the same
settings is already there; a contact sheet of 64 birds with their first captions is written.
For downloaded sets (no ``data.render``) the tool only checks that ``data.root`` exists.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from t2i.errors import DataError, T2IError


def prepare(cfg: DictConfig) -> None:
    """Render or check ``cfg.data``; prints a short summary."""
    from t2i.data import synthbirds

    root = Path(str(cfg.data.root))
    name = cfg.data.get("name", root.name)
    render = cfg.data.get("render")
    if render is None:
        if root.is_dir() and any(root.iterdir()):
            print(f"{name}: found {root.resolve()}; nothing to render (downloaded data set)")
            return
        raise DataError(
            f"{name} is not at {root}: download it and place it there as data/README.md describes"
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
    try:
        prepare(cfg)
    except T2IError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
