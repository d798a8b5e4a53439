"""Train a model: python tools/train.py model=<damsm|stackgan|stackgan2|attngan|attngan_draw|draw|aligndraw>.

The model's `family` (damsm, gan, draw) picks the recipe in t2i/recipes/ that assembles data, models and
trainer from the composed config. Examples:

    python tools/train.py model=damsm                    # DAMSM on the synthetic birds (CPU preset)
    python tools/train.py model=attngan                  # AttnGAN on the synthetic birds (CPU preset)
    python tools/train.py experiment=attngan_cub train=gpu

Every value is checked before any work starts (one `error:` line and exit code 2 for a bad one).
"""

import importlib

import hydra
from omegaconf import DictConfig

from t2i import validation as check
from t2i.cli import guarded, preflight, setup_logging
from t2i.errors import ConfigError
from t2i.runtime import configure_threads

FAMILIES = ("damsm", "gan", "draw")


def check_settings(cfg: DictConfig) -> None:
    """The run's values (types, ranges, choices, devices, paths), checked before data or models are touched."""
    family = cfg.model.get("family")
    if family not in FAMILIES:
        raise ConfigError(f"model={cfg.model.get('name')} has unknown family {family!r}; expected damsm, gan or draw")
    check.device(cfg.device)
    check.seed(cfg.seed)
    check.integer(cfg.get("threads"), "threads", minimum=1, optional=True)
    run = cfg.train
    check.choice(run.precision, "train.precision", ["auto", "fp32", "bf16", "fp16"])
    check.choice(run.resume, "train.resume", ["auto", "never"])
    check.choice(run.get("adam", "fused"), "train.adam", ["fused", "foreach", "loop"])
    for key in ("gemm_conv", "transposed_upsample"):  # YAML reads true / false as booleans
        check.choice(str(run.get(key, "auto")).lower(), f"train.{key}", ["auto", "true", "false"])
    check.integer(run.get("batch_size"), "train.batch_size", minimum=1, optional=True)
    check.integer(run.get("max_steps"), "train.max_steps", minimum=1, optional=True)
    for key in ("log_every", "image_every", "ckpt_every"):
        check.integer(run.get(key), f"train.{key}", minimum=1, hint=" (steps between two of them)")
    check.integer(run.get("num_workers", 0), "train.num_workers", minimum=0)
    model = cfg.model
    check.integer(model.get("batch_size"), "model.batch_size", minimum=1, optional=True)
    check.integer(model.get("max_steps"), "model.max_steps", minimum=1, optional=True)
    check.integer(model.get("hard_negatives", 0), "model.hard_negatives", minimum=0, maximum=16)
    for key, value in model.items():
        key = str(key)
        if key == "lr" or key.startswith("lr_"):
            if key == "lr_decay_epochs":
                check.integer(value, f"model.{key}", minimum=1, optional=True)
            else:
                check.number(value, f"model.{key}", minimum=1e-12, maximum=10.0)
        elif key.startswith("lambda_") or key.endswith("_weight") or key == "grad_clip":
            check.number(value, f"model.{key}", minimum=0.0, optional=True)
        elif key == "ema_beta":
            check.number(value, "model.ema_beta", minimum=0.0, maximum=1.0, optional=True)
    check.output_dir(cfg.run_dir, "run_dir")
    if cfg.data.get("root"):
        check.data_folder(cfg.data.root, "data.root")


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
@guarded
def main(cfg: DictConfig) -> None:
    setup_logging()
    check_settings(cfg)
    configure_threads(cfg.get("threads"))
    recipe = importlib.import_module(f"t2i.recipes.{cfg.model.family}")
    recipe.train(cfg)


if __name__ == "__main__":
    preflight("train")  # overrides that do not compose: one error line, exit 2
    main()
