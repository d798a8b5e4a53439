"""Train a model: python tools/train.py model=<damsm|stackgan|stackgan2|attngan|attngan_draw|draw|aligndraw>.

The model's `family` (damsm, gan, draw) picks the recipe in t2i/recipes/ that assembles data, models and
trainer from the composed config. Examples:

    python tools/train.py model=damsm                    # DAMSM on the synthetic birds (CPU preset)
    python tools/train.py model=attngan                  # AttnGAN on the synthetic birds (CPU preset)
    python tools/train.py experiment=attngan_cub train=gpu
"""

import importlib

import hydra
from omegaconf import DictConfig

from t2i.cli import guarded, setup_logging
from t2i.errors import ConfigError
from t2i.runtime import configure_threads


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
@guarded
def main(cfg: DictConfig) -> None:
    setup_logging()
    configure_threads(cfg.get("threads"))
    family = cfg.model.get("family")
    try:
        recipe = importlib.import_module(f"t2i.recipes.{family}")
    except ModuleNotFoundError:
        raise ConfigError(f"model={cfg.model.get('name')} has unknown family {family!r}; "
                          "expected damsm, gan or draw") from None
    recipe.train(cfg)


if __name__ == "__main__":
    main()
