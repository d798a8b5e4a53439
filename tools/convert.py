"""Convert released AttnGAN / StackGAN++ / StackGAN checkpoints into a t2i export.

    python tools/convert.py generator=bird_AttnGAN2.pth text_encoder=text_encoder200.pth \
        image_encoder=image_encoder200.pth captions=captions.pickle out=runs/cub/attngan_released
    python tools/convert.py generator=netG_210000.pth out=runs/cub/stackgan2_released
    python tools/convert.py text_encoder=text_encoder200.pth image_encoder=image_encoder200.pth \
        captions=captions.pickle out=runs/cub/damsm_released           # the DAMSM alone (encoder.checkpoint=)

The AttnGAN export is used by tools/generate.py and tools/evaluate.py as it is; StackGAN and StackGAN++ exports
need 1024-d char-CNN-RNN embeddings as text input (t2i.convert.generate_from_embeddings). See README "Released
models" and the export's MODEL_CARD.md.
"""

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig

from t2i import validation as check
from t2i.cli import guarded, preflight, setup_logging
from t2i.convert import convert_release
from t2i.errors import ConfigError


def check_settings(cfg: DictConfig) -> list[str]:
    """The command line's values, checked before any file is read; returns the discriminator paths."""
    if not cfg.out:
        raise ConfigError("give the export folder to write: out=runs/<data>/<name>_released")
    check.output_dir(cfg.out, "out")
    for name in ("generator", "text_encoder", "image_encoder", "captions"):
        if cfg.get(name) is not None:
            check.existing_path(cfg[name], name, kind="file")
    discriminators = cfg.discriminators or []
    if isinstance(discriminators, str) or not all(isinstance(p, str) for p in discriminators):
        raise ConfigError("discriminators must be a list of files, e.g. discriminators=[netD0.pth,netD1.pth,netD2.pth]")
    for i, path in enumerate(discriminators):
        check.existing_path(path, f"discriminators[{i}]", kind="file")
    check.integer(cfg.words_num, "words_num", minimum=1, maximum=512)
    for name in ("image_align_corners", "reference_mask", "overwrite"):
        check.choice(cfg[name], name, [True, False])
    return [str(p) for p in discriminators]


@hydra.main(config_path="../conf", config_name="convert", version_base="1.3")
@guarded
def main(cfg: DictConfig) -> None:
    setup_logging()
    discriminators = check_settings(cfg)
    out = convert_release(cfg.out, generator=cfg.generator, discriminators=discriminators,
                          text_encoder=cfg.text_encoder, image_encoder=cfg.image_encoder, captions=cfg.captions,
                          words_num=int(cfg.words_num), image_align_corners=bool(cfg.image_align_corners),
                          reference_mask=bool(cfg.reference_mask),
                          overwrite=bool(cfg.overwrite))
    model = out / "model.json"
    if model.is_file():
        meta = json.loads(model.read_text())
        for record in meta["config"]["converted_from"]:
            print(f"{Path(record['file']).name}: {record['network']}, {record['reference_keys']} keys -> "
                  f"{record['t2i_keys']} t2i keys")
        print(f"wrote {out} (kind {meta['kind']}); see {out / 'MODEL_CARD.md'}")
    else:
        print(f"wrote the DAMSM to {out}; train with encoder.checkpoint={out}")


if __name__ == "__main__":
    preflight("convert")  # overrides that do not compose: one error line, exit 2
    main()
