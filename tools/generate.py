"""Generate images from captions with an exported model.

    python tools/generate.py caption="green crown bird"
    python tools/generate.py captions_file=my_captions.txt num_images=8 seed=1
    python tools/generate.py caption="a red bird" interpolate=captions caption_b="a blue bird"
    python tools/generate.py caption="a red bird" interpolate=noise steps=10

Writes the final images, per-stage images, a grid, the word-attention figure (words x stages) and,
for DRAW stages, the canvas strips and animations; prints where.
"""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from t2i.cli import guarded, setup_logging
from t2i.errors import CaptionError
from t2i.export import resolve_export
from t2i.pipeline import Text2ImagePipeline
from t2i.runtime import configure_threads
from t2i.visualize import attention_figure, canvas_strip, captioned_grid, save_canvas_gif, save_image, to_pil


def read_captions(cfg: DictConfig) -> list[str]:
    if cfg.captions_file:
        path = Path(cfg.captions_file)
        if not path.is_file():
            raise CaptionError(f"captions_file {path} does not exist")
        captions = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
        if not captions:
            raise CaptionError(f"captions_file {path} has no captions (one per line)")
        return captions
    if cfg.caption is None or not str(cfg.caption).strip():
        raise CaptionError('give a caption, e.g. caption="a small bird with a green crown", or captions_file=PATH')
    return [str(cfg.caption)]


@hydra.main(config_path="../conf", config_name="generate", version_base="1.3")
@guarded
def main(cfg: DictConfig) -> None:
    setup_logging()
    configure_threads(cfg.threads)
    export = resolve_export(cfg.checkpoint, cfg.runs_dir)
    pipe = Text2ImagePipeline.from_export(export, device=cfg.device, precision=cfg.precision)
    captions = read_captions(cfg)
    out_dir = Path(cfg.out_dir) if cfg.out_dir else export.parent / "samples"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if cfg.interpolate == "captions":
        if not cfg.caption_b:
            raise CaptionError("interpolate=captions needs caption_b=...")
        out = pipe.interpolate_captions(captions[0], str(cfg.caption_b), steps=cfg.steps, seed=cfg.seed)
        written.append(save_image(captioned_grid(out.images, out.captions, ncol=cfg.steps), out_dir / "interpolate_captions.png"))
    elif cfg.interpolate == "noise":
        out = pipe.interpolate_noise(captions[0], steps=cfg.steps, seed_a=cfg.seed, seed_b=cfg.seed + 1)
        written.append(save_image(captioned_grid(out.images, out.captions, ncol=cfg.steps), out_dir / "interpolate_noise.png"))
    elif cfg.interpolate is not None:
        raise CaptionError(f"interpolate={cfg.interpolate} is not known; use captions or noise")
    else:
        out = pipe(captions, num_images=cfg.num_images, seed=cfg.seed)
        for i in range(len(out.images)):
            c, k = divmod(i, cfg.num_images)
            written.append(save_image(to_pil(out.images[i]), out_dir / f"caption{c:02d}_{k:02d}.png"))
            for s, stage in enumerate(out.stage_images[:-1]):
                written.append(save_image(to_pil(stage[i]), out_dir / f"caption{c:02d}_{k:02d}_stage{s + 1}.png"))
            if out.attn_maps:
                fig = attention_figure([st[i] for st in out.stage_images[1:]], [a[i] for a in out.attn_maps], out.words[i],
                                       labels=[f"stage {s + 2}" for s in range(len(out.attn_maps))])
                written.append(save_image(fig, out_dir / f"caption{c:02d}_{k:02d}_attention.png"))
            if out.canvases is not None:
                written.append(save_image(canvas_strip(out.canvases[i]), out_dir / f"caption{c:02d}_{k:02d}_canvas.png"))
                written.append(save_canvas_gif(out.canvases[i], out_dir / f"caption{c:02d}_{k:02d}_canvas.gif"))
        grid = captioned_grid(out.images, out.captions, ncol=max(cfg.num_images, 1))
        written.append(save_image(grid, out_dir / "grid.png"))
    print(f"model: {export}")
    print(f"wrote {len(written)} files to {out_dir} (grid: {written[-1]})")
    for unknown, caption in zip(out.unknown, captions):
        if unknown:
            print(f"note: unknown words dropped from {caption!r}: {', '.join(unknown)}")


if __name__ == "__main__":
    main()
