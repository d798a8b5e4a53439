"""Evaluate an exported model (or the real test images) with FID, KID, IS, R-precision and attribute accuracy.

    python tools/evaluate.py checkpoint=runs/synthbirds/attngan/export metrics.names=[fid,r_precision,attribute_accuracy] num_images=500
    python tools/evaluate.py real=true                      # real test images as if generated: FID(train, test), ceilings
    python tools/evaluate.py metrics=dmgan seed=1          # DM-GAN's protocol (tf1 profile, dropped sample per fold)
    python tools/evaluate.py real=true data.root=data/synthbirds_fixed 'data.render.fixed=[pose,background]' \
        reference_root=data/synthbirds image_size=64 metrics.names=[fid] num_images=800   # one render against another

Images come from the test split's captions (t2i.evaluation.caption_plan); FID/KID compare with the real test
images (real=true: with the real train images; reference_root=: with the test images of another data root), whose statistics are cached in runs/<data>/stats/. Writes
metrics.json and metrics.md into a new folder <run>/eval/NNN (the shipped model's: runs/<data>/eval_pretrained/
<name>/NNN; or out_dir=, which must not hold an earlier evaluation unless overwrite=true) and prints the table.
"""

import hashlib
import itertools
import json
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from t2i import validation as check
from t2i.cli import guarded, preflight, setup_logging
from t2i.config import option, to_container
from t2i.data import synthbirds
from t2i.data.dataset import TextImageDataset
from t2i.evaluation import (attribute_ceiling, build_suite, evaluate, format_table, generated_images, real_images,
                            sha256_file, write_results)
from t2i.export import PRETRAINED_DIR, resolve_export
from t2i.pipeline import Text2ImagePipeline
from t2i.recipes.data import build_source
from t2i.runtime import configure_threads, resolve_device


def _fingerprint(records, root) -> str:
    """Identifies a split's content for the statistics cache: its images and classes, and for a synthetic-bird
    render its settings (a render with ``fixed`` variation has the same keys and other pixels)."""
    text = "\n".join(f"{r.key}:{r.class_id}" for r in records)
    if (Path(str(root)) / synthbirds.MARKER).is_file():
        text += "\n" + json.dumps(synthbirds.read_summary(root).get("settings"), sort_keys=True)
    return f"{len(records)}:{hashlib.sha1(text.encode()).hexdigest()[:16]}"


def stored_data(data_cfg: DictConfig, root) -> DictConfig:
    """``data_cfg`` for the data set stored under ``root``, read as it is there: never rendered or re-rendered."""
    merged = to_container(OmegaConf.merge(data_cfg, {"root": str(root)}))
    merged.pop("render", None)
    return OmegaConf.create(merged)


def check_settings(cfg: DictConfig) -> None:
    """The command line's values, checked before any model, data or network is loaded."""
    check.integer(cfg.num_images, "num_images", minimum=1)
    check.seed(cfg.seed)
    check.integer(cfg.batch_size, "batch_size", minimum=1, maximum=4096)
    check.integer(cfg.workers, "workers", minimum=0)
    check.integer(cfg.reference_images, "reference_images", minimum=2, optional=True)
    check.integer(cfg.image_size, "image_size", minimum=16, maximum=1024, optional=True)
    check.integer(cfg.get("threads"), "threads", minimum=1, optional=True)
    check.device(cfg.device)
    check.choice(cfg.precision, "precision", ["auto", "fp32", "bf16", "fp16"])
    check.choice(cfg.metrics.precision, "metrics.precision", ["auto", "fp32", "bf16"])
    check.choice(cfg.overwrite, "overwrite", [True, False])
    check.choice(cfg.real, "real", [True, False])
    if cfg.get("reference_root") is not None:
        check.existing_path(cfg.reference_root, "reference_root", kind="dir")
    if cfg.metrics.r_precision.get("shuffle_seed") is not None:
        check.seed(cfg.metrics.r_precision.shuffle_seed, "metrics.r_precision.shuffle_seed")
    check.integer(cfg.metrics["is"].get("batch_size"), "metrics.is.batch_size", minimum=1, optional=True)
    check.choice(cfg.metrics["is"].get("skip_first_logit"), "metrics.is.skip_first_logit", [None, True, False])


def default_output_root(cfg: DictConfig, export) -> Path:
    """Where numbered evaluation folders go: ``<run>/eval`` beside a run's export; the real images' evaluations
    and those of a model shipped in ``pretrained/`` under ``runs_dir`` (the repository is never written to)."""
    runs = Path(cfg.runs_dir) / str(cfg.data.name)
    if export is None:
        return runs / "eval_real"
    if PRETRAINED_DIR in Path(export).resolve().parents:
        return runs / "eval_pretrained" / Path(export).name
    return Path(export).parent / "eval"


def output_folder(cfg: DictConfig) -> Path | None:
    """``out_dir=`` checked (it must not hold another evaluation unless overwrite=true); None: a new folder later."""
    if not cfg.out_dir:
        return None
    out_dir = check.output_dir(cfg.out_dir)
    check.refuse_overwrite(out_dir, ["metrics.json", "metrics.md"], bool(cfg.overwrite))
    return out_dir


@hydra.main(config_path="../conf", config_name="evaluate", version_base="1.3")
@guarded
def main(cfg: DictConfig) -> None:
    setup_logging()
    check_settings(cfg)
    configure_threads(cfg.get("threads"))
    m = cfg.metrics
    names = [str(n) for n in m.names]
    device = resolve_device(str(cfg.device))
    seed, batch_size, progress = int(cfg.seed), int(cfg.batch_size), bool(cfg.progress)
    out_dir = output_folder(cfg)

    # (1) the model, unless grading real images
    pipe, export = None, None
    if not cfg.real:
        export = resolve_export(cfg.checkpoint, cfg.runs_dir)
        pipe = Text2ImagePipeline.from_export(export, device=device, precision=str(cfg.precision))
    image_size = int(cfg.image_size or (256 if pipe is None else getattr(pipe.generator, "resolutions", [256])[-1]))

    # (2) data: both splits in evaluation mode (centre crop, no flip), at the size of the evaluated images
    source = build_source(cfg.data)
    vocab = source.vocabulary()
    words_num = int(option(cfg.data, "words_num", 18))

    def split_records(records) -> TextImageDataset:
        return TextImageDataset(records, vocab, base_size=image_size, num_stages=1, words_num=words_num,
                                train=False, wrong_captions=False, unknown=str(option(cfg.data, "unknown", "drop")))

    def split(name: str) -> TextImageDataset:
        return split_records(source.records(name))

    test_ds = split("test")
    # The attribute classifier is a judge, like CUB's Inception fine-tuned on all 200 classes: it learns part
    # colours from the train images plus every other test image; its ceiling is measured on the rest.
    test_records = source.records("test")
    judge_ds, holdout_ds = split_records(test_records[0::2]), split_records(test_records[1::2])
    # FID/KID reference: the test split (real=true: the train split), or the test split of reference_root
    reference_root = cfg.get("reference_root")
    reference_source = source if reference_root is None else build_source(stored_data(cfg.data, reference_root))
    reference_split = "train" if cfg.real and reference_root is None else "test"
    reference_records = reference_source.records(reference_split)
    workers = int(cfg.workers)

    reference_limit = int(cfg.reference_images) if cfg.reference_images else None

    def reference():
        images = test_ds if reference_root is None and reference_split == "test" else split_records(reference_records)
        return real_images(images, reference_limit, batch_size=batch_size, num_workers=workers, progress=progress)

    # (3) networks and cached reference data; fails here, before generating, when something is missing
    damsm_dir = option(m.r_precision, "damsm")
    if damsm_dir is None and export is not None and (Path(export) / "damsm" / "text_encoder.json").is_file():
        damsm_dir = str(Path(export) / "damsm")  # a converted release carries its own DAMSM (tools/convert.py)
    suite = build_suite(
        names, data_name=str(cfg.data.name), runs_dir=cfg.runs_dir, reference_images=reference,
        reference_split=reference_split, reference_limit=reference_limit,
        reference_fingerprint=_fingerprint(reference_records, reference_root or option(cfg.data, "root", "")),
        train_images=lambda: itertools.chain(
            real_images(split("train"), batch_size=batch_size, num_workers=workers, progress=progress),
            real_images(judge_ds, batch_size=batch_size, num_workers=workers, progress=progress)),
        caption_records=test_ds.records, attribute_schema=source.attribute_schema(), image_size=image_size,
        profile=str(m.profile), inception_weights=option(m, "inception_weights"), is_classifier=option(m["is"], "classifier"),
        trust_torchscript=bool(option(m["is"], "trust_torchscript", False)),
        stats_cache=option(m, "stats_cache"), damsm_dir=damsm_dir, vocab=vocab, words_num=words_num,
        attribute_classifier=option(m.attribute_accuracy, "classifier"),
        attribute_options=to_container(m.attribute_accuracy),
        options={name: to_container(m[name]) for name in names if m.get(name) is not None},
        precision=str(m.precision), device=device, seed=seed)

    # (4) the images and the metrics
    num_images = int(cfg.num_images) if pipe is not None else min(int(cfg.num_images), len(test_ds))
    suite.check(names, num_images)
    if "attribute_accuracy" in names:
        attribute_ceiling(suite, real_images(holdout_ds, batch_size=batch_size, num_workers=workers, progress=progress))
    if pipe is None:
        stream = real_images(test_ds, num_images, batch_size=batch_size, num_workers=workers, progress=progress)
    else:
        stream = generated_images(pipe, test_ds.records, num_images, seed=seed, batch_size=batch_size, progress=progress)
    results = evaluate(names, stream, suite, seed=seed)
    results.update(data=str(cfg.data.name), split="test", reference_split=reference_split, image_size=image_size,
                   real=bool(cfg.real), export=str(export) if export else None,
                   reference_root=str(reference_root) if reference_root is not None else None)
    if export is not None:
        results["weights"].update({str(p): sha256_file(p) for p in sorted(Path(export).glob("*.safetensors"))})
    if out_dir is None:  # a new numbered folder beside the model (or the data's real-image evaluations)
        out_dir = check.first_free_dir(default_output_root(cfg, export))
    with check.file_set(out_dir, overwrite=bool(cfg.overwrite)) as stage:
        write_results(stage, results)
    json_path = out_dir / "metrics.json"
    print(format_table(results))
    print(f"{results['counts']['images']} images in {results['timings']['total']:.1f} s "
          f"({results['timings']['images_per_second']:.1f} images/s); wrote {json_path} and {out_dir / 'metrics.md'}")


if __name__ == "__main__":
    preflight("evaluate")  # overrides that do not compose: one error line, exit 2
    main()
