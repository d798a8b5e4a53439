"""Learning curve of a recipe: train in chunks, score every chunk, against training wall time.

    python tools/learning_curve.py model=attngan curve.every=250 train.max_steps=2000 run_dir=/work/runs/lc_attngan
    python tools/learning_curve.py model=damsm curve.every=100 train.max_steps=600 run_dir=/work/runs/lc_damsm
    python tools/learning_curve.py plot=[/work/runs/a/learning_curve.json,/work/runs/b/learning_curve.json] out=docs/curve.png

A GAN is trained to ``every``, ``2 every``, ... steps by its own recipe (``t2i.recipes.<family>.train``, resuming
``run_dir/checkpoint.pt`` each time); after each chunk its export is scored on ``curve.num_images`` images made
from test-split captions with ``t2i.evaluation`` (attribute accuracy, R-precision, FID against
``curve.reference_images`` real test images). A DAMSM chunk reports the DAMSM evaluation (test-species
R-precision ranked by sentence vectors and by the word-level score). Every point records the step, the
cumulative training wall time (each chunk's recipe call, rebuilding included; scoring excluded), the scoring
time and the machine. ``learning_curve.json`` is rewritten atomically after each point, with ``.png`` next to
it; running the same command again skips the points already scored and continues the run.
"""

from __future__ import annotations

import hashlib
import importlib
import itertools
import json
import os
import platform
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from t2i.cli import guarded, preflight, setup_logging
from t2i.config import option, run_option, to_container
from t2i.errors import ConfigError, DataError

FORMAT = "t2i-learning-curve"
# (key in a point's metrics, panel title, True when higher is better)
PANELS = [("attribute_accuracy", "attribute accuracy", True), ("r_precision", "R-precision", True),
          ("fid", "FID", False), ("test/r_precision", "DAMSM R-precision (sentence)", True),
          ("test/r_precision_word", "DAMSM R-precision (word score)", True)]
COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127)]


def machine_line() -> str:
    """CPU model, PyTorch's CPU capability and the thread count, e.g. for README figures."""
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), model)
    except OSError:
        pass
    return f"{model}, {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads"


def chunk_targets(every: int, max_steps: int) -> list[int]:
    """``every, 2 every, ..., max_steps`` (the last one is always ``max_steps``)."""
    if every < 1 or max_steps < 1:
        raise ConfigError(f"curve.every ({every}) and max_steps ({max_steps}) must be >= 1")
    targets = list(range(every, max_steps, every))
    return targets + [max_steps]


# ============================================================================================ JSON
def _write_atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_curve(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"{path} is not a learning-curve JSON file ({err}); move it away to start over") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("points"), list):
        raise DataError(f"{path} is not a learning-curve file (format {FORMAT!r}); move it away to start over")
    return data


def save_curve(path: Path, data: dict) -> None:
    _write_atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=1)))


# ============================================================================================ plot
def plot_curves(curves: list[dict], path: str | os.PathLike, size: tuple[int, int] = (420, 300)):
    """Draw one panel per metric present (value against training minutes), one line per curve; returns the image."""
    from PIL import Image, ImageDraw, ImageFont

    panels = [p for p in PANELS if any(p[0] in pt["metrics"] for c in curves for pt in c["points"])]
    if not panels:
        raise DataError("no scored points to plot yet")
    font = ImageFont.load_default()
    w, h = size
    legend_h = 16 * len(curves) + 8
    img = Image.new("RGB", (w * len(panels), h + legend_h), "white")
    draw = ImageDraw.Draw(img)
    left, right, top, bottom = 52, 12, 22, 34
    for col, (key, title, higher) in enumerate(panels):
        x0 = col * w
        series = [[(pt["train_wall_s"] / 60, pt["metrics"][key]) for pt in c["points"] if key in pt["metrics"]]
                  for c in curves]
        xs = [x for s in series for x, _ in s] or [0.0]
        ys = [y for s in series for _, y in s] or [0.0]
        x_lo, x_hi = 0.0, max(max(xs), 1e-6)
        y_lo, y_hi = min(ys), max(ys)
        if higher and y_hi <= 1.0:
            y_lo, y_hi = 0.0, 1.0 if y_hi > 0.5 else max(0.5, y_hi)
        if y_hi - y_lo < 1e-9:
            y_lo, y_hi = y_lo - 1, y_hi + 1
        pad = (y_hi - y_lo) * 0.05
        y_lo, y_hi = y_lo - (0 if higher and y_lo == 0 else pad), y_hi + pad

        def px(x, y, x0=x0, x_hi=x_hi, y_lo=y_lo, y_hi=y_hi):
            return (x0 + left + (w - left - right) * x / x_hi,
                    top + (h - top - bottom) * (1 - (y - y_lo) / (y_hi - y_lo)))

        draw.rectangle([x0 + left, top, x0 + w - right, h - bottom], outline="black")
        draw.text((x0 + left, 4), f"{title} ({'higher' if higher else 'lower'} is better)", fill="black", font=font)
        for i in range(5):
            yv = y_lo + (y_hi - y_lo) * i / 4
            _, yy = px(0, yv)
            draw.line([x0 + left - 4, yy, x0 + left, yy], fill="black")
            draw.text((x0 + 4, yy - 6), f"{yv:.3g}", fill="black", font=font)
            xv = x_hi * i / 4
            xx, _ = px(xv, y_lo)
            draw.line([xx, h - bottom, xx, h - bottom + 4], fill="black")
            draw.text((xx - 8, h - bottom + 6), f"{xv:.0f}", fill="black", font=font)
        draw.text((x0 + left + 40, h - 14), "training wall time (min)", fill="black", font=font)
        for k, s in enumerate(series):
            colour = COLOURS[k % len(COLOURS)]
            pts = [px(x, y) for x, y in s]
            if len(pts) > 1:
                draw.line(pts, fill=colour, width=2)
            for x, y in pts:
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
    for k, c in enumerate(curves):
        y = h + 4 + 16 * k
        colour = COLOURS[k % len(COLOURS)]
        draw.rectangle([8, y + 3, 20, y + 11], fill=colour)
        last = c["points"][-1] if c["points"] else {"step": 0}
        draw.text((26, y), f"{c.get('label', '?')}  (last step {last['step']})", fill="black", font=font)
    out = Path(path)
    _write_atomic(out, lambda tmp: img.save(tmp, format="PNG"))
    return img


# ============================================================================================ scoring
def _fingerprint(records) -> str:
    return f"{len(records)}:{hashlib.sha1(chr(10).join(f'{r.key}:{r.class_id}' for r in records).encode()).hexdigest()[:16]}"


class GANScorer:
    """The evaluation suite of ``tools/evaluate.py``, built once, scoring each chunk's export."""

    def __init__(self, cfg: DictConfig, image_size: int):
        from t2i.data.dataset import TextImageDataset
        from t2i.evaluation import attribute_ceiling, build_suite, real_images
        from t2i.recipes.data import build_source

        c, m = cfg.curve, cfg.metrics
        self.names = [str(n) for n in c.metrics]
        self.num_images, self.batch_size, self.seed = int(c.num_images), int(c.batch_size), int(cfg.seed)
        source = build_source(cfg.data)
        vocab = source.vocabulary()
        words_num = int(option(cfg.data, "words_num", 18))

        def dataset(records):
            return TextImageDataset(records, vocab, base_size=image_size, num_stages=1, words_num=words_num,
                                    train=False, wrong_captions=False, unknown=str(option(cfg.data, "unknown", "drop")))

        test_records = source.records("test")
        self.test_ds = dataset(test_records)
        judge_ds, holdout_ds = dataset(test_records[0::2]), dataset(test_records[1::2])
        limit = int(c.reference_images) if c.reference_images else None
        bs = self.batch_size
        self.suite = build_suite(
            self.names, data_name=str(cfg.data.name), runs_dir=str(c.cache_dir),
            reference_images=lambda: real_images(self.test_ds, limit, batch_size=bs), reference_split="test",
            reference_limit=limit, reference_fingerprint=_fingerprint(test_records),
            train_images=lambda: itertools.chain(real_images(dataset(source.records("train")), batch_size=bs),
                                                 real_images(judge_ds, batch_size=bs)),
            caption_records=self.test_ds.records, attribute_schema=source.attribute_schema(), image_size=image_size,
            profile=str(m.profile), inception_weights=option(m, "inception_weights"),
            damsm_dir=str(option(c, "damsm", option(cfg.encoder, "checkpoint", f"runs/{cfg.data.name}/damsm"))),
            vocab=vocab, words_num=words_num, attribute_options=to_container(m.attribute_accuracy),
            settings={"folds": int(m.r_precision.folds), "mismatched": int(m.r_precision.mismatched),
                      "drop_last_per_fold": bool(m.r_precision.drop_last_per_fold)},
            precision="fp32", device="cpu", seed=self.seed)
        self.suite.check(self.names, self.num_images)
        if "attribute_accuracy" in self.names:
            attribute_ceiling(self.suite, real_images(holdout_ds, batch_size=bs))

    def __call__(self, pipe) -> dict[str, float]:
        from t2i.evaluation import evaluate_pipeline

        result = evaluate_pipeline(pipe, self.suite, self.test_ds.records, self.names, self.num_images,
                                   seed=self.seed, batch_size=self.batch_size)
        return {k: float(v) for k, v in result["metrics"].items()}


# ============================================================================================ main
def run_curve(cfg: DictConfig) -> dict:
    """Train and score ``cfg.model`` chunk by chunk (see the module docstring); returns the curve."""
    family = str(cfg.model.get("family"))
    try:
        recipe = importlib.import_module(f"t2i.recipes.{family}")
    except ModuleNotFoundError:
        raise ConfigError(f"model={cfg.model.get('name')} has unknown family {family!r}") from None
    if family not in ("gan", "damsm"):
        raise ConfigError(f"learning curves score GANs and DAMSMs; model={cfg.model.name} is of family {family}")
    run_dir = Path(str(cfg.run_dir))
    png = Path(str(cfg.out)) if cfg.out else run_dir / "learning_curve.png"
    json_path = png.with_suffix(".json")
    max_steps = int(run_option(cfg, "max_steps", 0))
    targets = chunk_targets(int(cfg.curve.every), max_steps)
    curve = load_curve(json_path) or {
        "format": FORMAT, "version": 1, "label": str(cfg.label or run_dir.name), "model": str(cfg.model.name),
        "family": family, "run_dir": str(run_dir), "machine": machine_line(),
        "num_images": int(cfg.curve.num_images), "reference_images": cfg.curve.reference_images,
        "config": to_container(cfg), "points": []}
    done = {int(p["step"]) for p in curve["points"]}
    scorer = None
    for target in targets:
        if target in done:
            continue
        cfg.train.max_steps = target
        started = time.perf_counter()
        returned = recipe.train(cfg)
        train_s = time.perf_counter() - started
        started = time.perf_counter()
        if family == "gan":
            from t2i.pipeline import Text2ImagePipeline

            pipe = Text2ImagePipeline.from_export(returned or run_dir / "export", device="cpu", precision="fp32")
            scorer = scorer or GANScorer(cfg, int(pipe.generator.resolutions[-1]))
            metrics = scorer(pipe)
        else:
            metrics = {k: float(v) for k, v in (returned or {}).items()}
        previous = curve["points"][-1]["train_wall_s"] if curve["points"] else 0.0
        curve["points"].append({"step": target, "train_wall_s": round(previous + train_s, 1),
                                "score_wall_s": round(time.perf_counter() - started, 1), "metrics": metrics,
                                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        curve["points"].sort(key=lambda p: p["step"])
        save_curve(json_path, curve)
        if any(key in metrics for key, _, _ in PANELS):
            plot_curves([curve], png)
        print(f"step {target}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if not k.endswith("_std"))
              + f" (training {previous + train_s:.0f} s)", flush=True)
    return curve


@hydra.main(config_path="../conf", config_name="learning_curve", version_base="1.3")
@guarded
def main(cfg: DictConfig) -> None:
    setup_logging()
    if cfg.plot:
        curves = []
        for path in cfg.plot:
            data = load_curve(Path(str(path)))
            if data is None:
                raise DataError(f"no learning curve at {path}")
            curves.append(data)
        out = Path(str(cfg.out or "learning_curves.png"))
        plot_curves(curves, out)
        print(f"wrote {out}")
        return
    curve = run_curve(cfg)
    print(f"{len(curve['points'])} points; wrote {Path(str(cfg.out or Path(str(cfg.run_dir)) / 'learning_curve.png'))}")


if __name__ == "__main__":
    preflight("learning_curve")  # overrides that do not compose: one error line, exit 2
    main()
