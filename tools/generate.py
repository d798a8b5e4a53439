"""Generate images from captions with an exported model.

    python tools/generate.py caption="green crown bird"        # your newest run, else the shipped model
    python tools/generate.py captions_file=my_captions.txt num_images=8 seed=1
    python tools/generate.py caption="a red bird" interpolate=captions caption_b="a blue bird"
    python tools/generate.py caption="a red bird" interpolate=noise steps=10

Writes the final images, per-stage images, a grid, the word-attention figure (words x stages) and,
for DRAW stages, the canvas strips and animations into a new folder ``outputs/generate/NNN`` (or
``out_dir=``, which must be empty unless ``overwrite=true``); prints where. The files are written as a set:
an error or a full disk leaves nothing half-written behind.
"""

from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from t2i import validation as check
from t2i.cli import guarded, preflight, setup_logging
from t2i.errors import CaptionError, ConfigError
from t2i.export import PRETRAINED_DIR, resolve_export
from t2i.pipeline import Text2ImagePipeline
from t2i.runtime import configure_threads
from t2i.visualize import attention_figure, canvas_strip, captioned_grid, save_canvas_gif, save_image, to_pil

MAX_IMAGES = 1000   # per caption; generated batch_size at a time
GRID_IMAGES = 64    # the grid shows the first ones


def read_captions(cfg: DictConfig) -> list[str]:
    if cfg.captions_file:
        path = check.existing_path(cfg.captions_file, "captions_file", kind="file")
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        captions = [check.caption(line, f"line {i + 1} of {path}") for i, line in enumerate(lines) if line.strip()]
        if not captions:
            raise CaptionError(f"captions_file {path} has no captions (one per line)")
        return captions
    try:
        return [check.caption(cfg.caption)]
    except ConfigError as exc:
        raise CaptionError(str(exc)) from None


def check_settings(cfg: DictConfig) -> dict:
    """Every value of the command line, checked before the model is loaded."""
    interpolate = check.choice(cfg.interpolate, "interpolate", [None, "captions", "noise"])
    return dict(
        num_images=check.integer(cfg.num_images, "num_images", minimum=1, maximum=MAX_IMAGES),
        seed=check.seed(cfg.seed),
        steps=check.integer(cfg.steps, "steps", minimum=2, maximum=256) if interpolate else None,
        batch_size=check.integer(cfg.batch_size, "batch_size", minimum=1, maximum=1024),
        device=check.device(cfg.device),
        precision=check.choice(cfg.precision, "precision", ["auto", "fp32", "bf16", "fp16"]),
        threads=check.integer(cfg.threads, "threads", minimum=1, optional=True),
        interpolate=interpolate,
        overwrite=bool(check.choice(cfg.overwrite, "overwrite", [True, False])),
    )


def output_folder(cfg: DictConfig, overwrite: bool) -> Path:
    if cfg.out_dir:
        out_dir = check.output_dir(cfg.out_dir)
        if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
            raise ConfigError(f"out_dir={out_dir} is not empty; choose another out_dir (or leave it out for a new "
                              "folder under outputs/generate), or pass overwrite=true")
        return out_dir
    return check.first_free_dir(check.output_dir(Path("outputs") / "generate"))


def write_images(out, num_images: int, stage: Path, start: int = 0) -> list[Path]:
    """The images of one generation call: image, per-stage images, attention figure, DRAW canvas."""
    written = []
    for j in range(len(out.images)):
        c, k = divmod(start + j, num_images)
        name = f"caption{c:02d}_{k:02d}"
        written.append(save_image(to_pil(out.images[j]), stage / f"{name}.png"))
        for s, st in enumerate(out.stage_images[:-1]):
            written.append(save_image(to_pil(st[j]), stage / f"{name}_stage{s + 1}.png"))
        if out.attn_maps:
            fig = attention_figure([st[j] for st in out.stage_images[1:]], [a[j] for a in out.attn_maps], out.words[j],
                                   labels=[f"stage {s + 2}" for s in range(len(out.attn_maps))])
            written.append(save_image(fig, stage / f"{name}_attention.png"))
        if out.canvases is not None:
            written.append(save_image(canvas_strip(out.canvases[j]), stage / f"{name}_canvas.png"))
            written.append(save_canvas_gif(out.canvases[j], stage / f"{name}_canvas.gif"))
    return written


@hydra.main(config_path="../conf", config_name="generate", version_base="1.3")
@guarded
def main(cfg: DictConfig) -> None:
    setup_logging()
    opts = check_settings(cfg)
    captions = read_captions(cfg)
    if opts["interpolate"] == "captions":
        caption_b = check.caption(cfg.caption_b, "caption_b")
    out_dir = output_folder(cfg, opts["overwrite"])
    configure_threads(opts["threads"])
    export = resolve_export(cfg.checkpoint, cfg.runs_dir)
    pipe = Text2ImagePipeline.from_export(export, device=opts["device"], precision=opts["precision"])
    written, unknown = [], {}
    with check.file_set(out_dir, overwrite=opts["overwrite"]) as stage:
        if opts["interpolate"] == "captions":
            out = pipe.interpolate_captions(captions[0], caption_b, steps=opts["steps"], seed=opts["seed"])
            grid = captioned_grid(out.images, out.captions, ncol=opts["steps"])
            written.append(save_image(grid, stage / "interpolate_captions.png"))
        elif opts["interpolate"] == "noise":
            out = pipe.interpolate_noise(captions[0], steps=opts["steps"], seed_a=opts["seed"], seed_b=opts["seed"] + 1)
            grid = captioned_grid(out.images, out.captions, ncol=opts["steps"])
            written.append(save_image(grid, stage / "interpolate_noise.png"))
        else:
            n, chunk = opts["num_images"], opts["batch_size"]
            shown, labels = [], []
            for c, caption in enumerate(captions):
                for k, first in enumerate(range(0, n, chunk)):
                    # chunk 0 uses the seed itself, so a run that fits one batch draws what it always drew
                    out = pipe([caption], num_images=min(chunk, n - first), seed=opts["seed"] + 7919 * k)
                    written += write_images(out, n, stage, start=c * n + first)
                    unknown[caption] = out.unknown[0]
                    room = GRID_IMAGES - len(shown)
                    shown += list(out.images[:room])
                    labels += out.captions[:room]
            grid = captioned_grid(torch.stack(shown), labels, ncol=n if n <= 8 else 8)  # a row per caption
            written.append(save_image(grid, stage / "grid.png"))
    shipped = PRETRAINED_DIR in Path(export).resolve().parents
    print(f"model: {export}" + (" (the model shipped with t2i; train your own with tools/train.py, or pass "
                                "checkpoint=)" if shipped else ""))
    print(f"wrote {len(written)} files to {out_dir} (grid: {out_dir / written[-1].name})")
    for caption, words in unknown.items():
        if words:
            print(f"note: unknown words dropped from {caption!r}: {', '.join(words)}")


if __name__ == "__main__":
    preflight("generate")  # overrides that do not compose: one error line, exit 2
    main()
