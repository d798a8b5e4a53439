"""Measure speed on this machine: python tools/bench.py [model=attngan] [precisions=[fp32,bf16]] [out=bench.json].

Three measurements (or the side-by-side one, 4.), all on random inputs (no data on disk):

1. matmul peak: best-of-N ``n x n x n`` product in every precision (GFLOP/s), the better of ``torch.mm``
   and the same product as a channels-last 1x1 convolution (oneDNN/cuDNN, what the models use);
2. training-step throughput (images/s) of the GAN trainer (generator + per-stage discriminators + DAMSM
   loss with a randomly initialised tiny DAMSM: LightImageEncoder + RNNTextEncoder) for every precision
   and layout (NCHW / channels-last), optionally compiled;
3. generation latency of the generator at every final resolution (1-3 stages) and batch size;
4. side by side (``side_by_side.enabled=true`` or ``reference.attngan=PATH``, instead of 1-3): t2i's training step at
   the model's architecture (``+experiment=attngan_cub``: 1 and 3 stages, AttnGAN's Inception DAMSM) for each
   trainer option (at ``side_by_side.precision``, default ``auto``; ``plain`` and ``fp32`` in fp32, ``bf16`` in
   bf16), and with
   ``reference.attngan=PATH`` the reference AttnGAN's own iteration
   (:mod:`t2i.benchmark_reference`) on the same inputs, interleaved; prints reference / t2i per case.

For each case of 1-3: ms per step, images/s, FLOPs per image (FlopCounterMode), achieved GFLOP/s and its
percentage of the measured matmul peak of the same precision, and peak memory (during the warm-up steps,
above the memory in use before). The variants of one case (precision x layout x compile) are timed in
interleaved rounds, so that load from other processes on a shared machine hits them alike and their
ratios hold. Prints a table and the exact command, writes JSON. Examples:

    python tools/bench.py                                          # the CPU preset, fp32 and bf16
    python tools/bench.py training.enabled=false generation.resolutions=[256] generation.batch_sizes=[32]
    python tools/bench.py device=cuda precisions=[fp32,bf16,fp16] matmul.n=8192 matmul.inner=10
    python tools/bench.py +experiment=attngan_cub reference.attngan=/path/to/AttnGAN threads=1
"""

from __future__ import annotations

import copy
import gc
import json
import logging
import math
import statistics
import os
import platform
import shlex
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

from t2i.benchmark import (BenchCase, PeakMemory, conv_peak, count_flops, format_table, gemm_peak,
                           interleaved_times, make_case, num_threads, speedups, to_channels_last)
from t2i.cli import guarded, preflight, setup_logging
from t2i.config import to_container
from t2i.errors import ConfigError
from t2i.losses.gan import GANLoss
from t2i.models.factory import build_from_spec, spec_from_node
from t2i.benchmark_reference import ReferenceSettings, code_dir, reference_step
from t2i.models.image_encoders import InceptionImageEncoder, LightImageEncoder
from t2i.models.layers import fold_batchnorm
from t2i.models.text_encoders import RNNTextEncoder
from t2i.recipes.gan import build_loss, build_models
from t2i.runtime import (Precision, ProbeShape, configure_threads, cpu_info, probe_cpu_precisions, resolve_device,
                         seed_everything, usable_cores)
from t2i.structures import Batch
from t2i.training.gan import GANTrainer, GANTrainerSettings
from t2i.training.kernels import choose_gemm_convs, conv_calls, use_gemm_convs

log = logging.getLogger("t2i.bench")


# ---------------------------------------------------------------------------------------------- building
def text_encoder_from(cfg) -> RNNTextEncoder:
    enc = cfg.encoder
    if "RNNTextEncoder" not in str(enc.get("_target_", "")):
        raise ConfigError(f"bench builds a random RNN text encoder; encoder={enc.get('_target_')} is not one "
                          "(use encoder=lstm or encoder=gru)")
    return RNNTextEncoder(int(cfg.training.vocab_size), word_dim=int(enc.word_dim), hidden_dim=int(enc.hidden_dim),
                          num_layers=int(enc.num_layers), bidirectional=bool(enc.bidirectional), dropout=0.0,
                          rnn_type=str(enc.rnn_type))


def stages_for(cfg, resolution: int) -> list[str]:
    """The model's stage list cut or extended to reach ``resolution`` (first kind, then the model's next kind)."""
    stages = list(cfg.model.generator.stages)
    base = int(cfg.model.generator.base_size)
    n = math.log2(resolution / base)
    if n < 0 or n != int(n):
        raise ConfigError(f"generation resolution {resolution} is not base_size {base} times a power of two")
    later = stages[1] if len(stages) > 1 else "attention"
    return [stages[0]] + [later] * int(n)


def generator_for(cfg, stages: list[str], dim: int) -> torch.nn.Module:
    node = {**to_container(cfg.model.generator), "stages": stages}
    return build_from_spec(spec_from_node(node, sent_dim=dim, word_dim=dim))


def random_batch(batch: int, sizes: list[int], vocab_size: int, words: int, generator: torch.Generator) -> Batch:
    """Images in [-1, 1] at every size, token ids with random lengths, every sample its own class."""
    lengths = torch.randint(max(2, words // 2), words + 1, (batch,), generator=generator)
    captions = torch.randint(1, vocab_size, (batch, words), generator=generator)
    captions[torch.arange(words)[None] >= lengths[:, None]] = 0
    images = [torch.rand(batch, 3, s, s, generator=generator) * 2 - 1 for s in sizes]
    return Batch(images=images, captions=captions, lengths=lengths, class_ids=torch.arange(batch),
                 wrong_captions=captions.roll(1, 0), wrong_lengths=lengths.roll(1, 0))


def build_trainer(cfg, precision: Precision, device: torch.device, channels_last: bool, compiled: bool,
                  run_dir: Path) -> GANTrainer:
    seed_everything(int(cfg.seed))
    text_encoder = text_encoder_from(cfg)
    generator, discriminators, spec = build_models(cfg, text_encoder)
    lambda_damsm = float(cfg.model.get("lambda_damsm") or 0.0)
    image_encoder = LightImageEncoder(embed_dim=text_encoder.out_dim, width=int(cfg.training.damsm_width),
                                      image_size=int(cfg.training.damsm_image_size)) if lambda_damsm > 0 else None
    m = cfg.model
    loss = GANLoss(image_encoder=image_encoder, lambda_damsm=lambda_damsm, kl_weight=float(m.kl_weight),
                   adversarial=str(m.loss), scheme=str(m.d_scheme), condition=str(m.d_condition),
                   uncond_weight=float(m.uncond_weight))
    settings = GANTrainerSettings(max_steps=10**9, lr_g=float(m.lr_g), lr_d=float(m.lr_d), betas=tuple(m.betas),
                                  ema_beta=float(m.get("ema_beta") or 0.999), z_dim=spec["z_dim"], resume="never",
                                  channels_last=channels_last, compile=compiled)
    # The trainer converts modules and real images to channels-last and compiles the generator's forward.
    trainer = GANTrainer(generator.to(device), discriminators.to(device), text_encoder, loss, [], run_dir, settings,
                         precision, device, model_spec=spec, vocab={})
    return trainer


# ---------------------------------------------------------------------------------------------- cases
@dataclass
class Prepared:
    """One variant of a case, ready to time: ``fn`` does one step; ``flops`` is counted for the first variant."""

    precision: str
    channels_last: bool
    compiled: bool
    fn: Callable[[], object]
    resolution: int
    stages: list[str]
    memory: PeakMemory | None = None


def prepare_train(cfg, device, batch_size, precision_name, channels_last, compiled, run_dir) -> Prepared:
    trainer = build_trainer(cfg, Precision(precision_name, device), device, channels_last, compiled, run_dir)
    g = torch.Generator().manual_seed(int(cfg.seed))
    sizes = [int(r) for r in trainer.generator.resolutions]
    batch = random_batch(batch_size, sizes, int(cfg.training.vocab_size), int(cfg.data.words_num), g).to(device)
    return Prepared(precision_name, channels_last, compiled, lambda: trainer.train_step(batch), sizes[-1],
                    list(trainer.generator.stage_kinds))


def prepare_generate(cfg, device, resolution, batch_size, precision_name, channels_last, compiled) -> Prepared:
    precision = Precision(precision_name, device)
    seed_everything(int(cfg.seed))
    text_encoder = text_encoder_from(cfg).to(device).eval()
    stages = stages_for(cfg, resolution)
    generator = generator_for(cfg, stages, text_encoder.out_dim).to(device).eval()
    if bool(cfg.generation.get("fold_batchnorm", True)):
        fold_batchnorm(generator)  # as Text2ImagePipeline does for inference
    if channels_last:
        to_channels_last(generator)
    if compiled:
        generator.compile()
    g = torch.Generator().manual_seed(int(cfg.seed))
    batch = random_batch(batch_size, [], int(cfg.training.vocab_size), int(cfg.data.words_num), g).to(device)
    z = torch.randn(batch_size, generator.z_dim, generator=g).to(device)
    with torch.no_grad():
        text = text_encoder.encode(batch)

    def run():
        with torch.no_grad(), precision.autocast():
            return generator(z, text)

    return Prepared(precision_name, channels_last, compiled, run, resolution, stages)


def bench_group(cfg, device, kind: str, batch_size: int, resolution: int | None, peaks: dict, bar,
                run_dir: Path) -> list[BenchCase]:
    """All variants (precision x layout x compile) of one case, timed in interleaved rounds."""
    node = cfg.training if kind == "train" else cfg.generation
    steps, warmup = int(node.steps), int(node.warmup)
    if kind == "generate" and batch_size == 1:
        steps *= 4  # short and noisy: more rounds
    compiled = [False, True] if cfg.compile else [False]
    variants = [(str(p), bool(cl), c) for p in cfg.precisions for cl in cfg.channels_last for c in compiled]
    prepared, flops = [], None
    for p, cl, c in variants:
        if kind == "train":
            prep = prepare_train(cfg, device, batch_size, p, cl, c, run_dir / f"{p}{cl}{c}")
        else:
            prep = prepare_generate(cfg, device, resolution, batch_size, p, cl, c)
        if flops is None:  # FLOPs depend on neither precision nor layout: count once
            flops, _ = count_flops(prep.fn)
        with PeakMemory(device) as prep.memory:
            for _ in range(warmup):
                prep.fn()
                bar.update(1)
        prepared.append(prep)
    fns = [prep.fn for prep in prepared]

    def tick(fn):
        def call():
            fn()
            bar.update(1)
        return call

    times = interleaved_times([tick(fn) for fn in fns], steps, device)
    return [make_case(kind, prep.precision, prep.channels_last, prep.compiled, batch_size, prep.resolution, t,
                      flops, peaks.get(prep.precision), prep.memory, stages=prep.stages)
            for prep, t in zip(prepared, times)]


# ---------------------------------------------------------------------------------------------- side by side
# t2i trainer options of the side-by-side cases; "plain" is the step as it was before issue 14, "onednn" today's
# default with every convolution on oneDNN (the default before train.gemm_conv), "direct_upsample" today's default
# with G's upsampling as nearest x2 + conv3x3 (the default before train.transposed_upsample).
# Every option runs at side_by_side.precision (default auto, the trainer's default: bf16 where this CPU has native
# bf16 and the probe shows it faster, else fp32) except those SIDE_PRECISIONS pins.
SIDE_OPTIONS = {"plain": {"fast_damsm": False, "adam": "loop", "gemm_conv": "false", "transposed_upsample": "false"},
                "default": {}, "fp32": {}, "bf16": {}, "onednn": {"gemm_conv": "false"},
                "direct_upsample": {"transposed_upsample": "false"}, "channels_last": {"channels_last": True},
                "compile": {"compile": True}}
SIDE_PRECISIONS = {"plain": "fp32", "fp32": "fp32", "bf16": "bf16"}


def cut_stages(cfg, n: int):
    """A copy of ``cfg`` whose generator has its first ``n`` stages (64 px, then 128, 256 for the paper model)."""
    stages = list(cfg.model.generator.stages)
    if not 1 <= n <= len(stages):
        raise ConfigError(f"side_by_side.stages has {n}; model.generator.stages has {len(stages)} stages {stages}")
    out = copy.deepcopy(cfg)
    out.model.generator.stages = stages[:n]
    return out


def reference_settings(cfg, n: int, embed_dim: int) -> ReferenceSettings:
    """The reference's ``cfg`` values for t2i's model config, refusing a model the reference cannot build."""
    m, g, d = cfg.model, cfg.model.generator, cfg.model.discriminator
    stages = list(g.stages)[:n]
    problems = []
    if stages != ["init"] + ["attention"] * (n - 1):
        problems.append(f"stages {stages} (AttnGAN: [init, attention, attention])")
    if int(g.base_size) != 64:
        problems.append(f"base_size {g.base_size} (AttnGAN: 64)")
    if not isinstance(g.res_blocks, int):
        problems.append(f"res_blocks {g.res_blocks} (one number for every stage)")
    if not bool(d.get("uncond", True)) or bool(d.get("spectral_norm", False)) or not bool(d.get("batch_norm", True)):
        problems.append("a discriminator without AttnGAN's cond + uncond heads and BatchNorm")
    if problems:
        raise ConfigError("the reference AttnGAN cannot build this model: " + "; ".join(problems) +
                          "; use +experiment=attngan_cub")
    return ReferenceSettings(stages=n, ngf=int(g.ngf), ndf=int(d.ndf), z_dim=int(g.z_dim), c_dim=int(g.c_dim),
                             res_blocks=int(g.res_blocks), embed_dim=embed_dim, words_num=int(cfg.data.words_num),
                             lambda_damsm=float(m.lambda_damsm), lr_g=float(m.lr_g), lr_d=float(m.lr_d))


def paper_trainer(cfg, option: str, device: torch.device, run_dir: Path, batch_size: int = 8) -> GANTrainer:
    """t2i's trainer for ``cfg.model`` as tools/train.py builds it, with a random DAMSM; ``option`` from SIDE_OPTIONS."""
    seed_everything(int(cfg.seed))
    text_encoder = text_encoder_from(cfg)
    generator, discriminators, spec = build_models(cfg, text_encoder)
    kind = str(cfg.side_by_side.image_encoder)
    if kind == "inception":
        image_encoder = InceptionImageEncoder(embed_dim=text_encoder.out_dim)
    elif kind == "light":
        image_encoder = LightImageEncoder(embed_dim=text_encoder.out_dim, width=int(cfg.training.damsm_width),
                                          image_size=int(cfg.training.damsm_image_size))
    else:
        raise ConfigError(f"side_by_side.image_encoder={kind}; choose inception or light")
    m = cfg.model
    settings = GANTrainerSettings(max_steps=10**9, lr_g=float(m.lr_g), lr_d=float(m.lr_d), betas=tuple(m.betas),
                                  ema_beta=float(m.get("ema_beta") or 0.999), z_dim=spec["z_dim"], resume="never",
                                  **SIDE_OPTIONS[option])
    g = m.generator  # precision=auto probes as tools/train.py does: the first stage's width, resolution, batch
    probe = ProbeShape(channels=2 * int(g.ngf), size=int(g.base_size), batch=min(int(batch_size), 8))
    precision = Precision(SIDE_PRECISIONS.get(option, str(cfg.side_by_side.precision)), device, probe_shape=probe)
    trainer = GANTrainer(generator, discriminators, text_encoder, build_loss(m, image_encoder), [], run_dir, settings,
                         precision, device, model_spec=spec, vocab={})
    if option == "plain":
        trainer.ema.foreach = False
    return trainer


def side_by_side(cfg, device: torch.device, bar, run_dir: Path) -> list[dict]:
    """Every (stages, batch) case: the reference's iteration (when given) and t2i's step per option, interleaved."""
    node = cfg.side_by_side
    options = [str(o) for o in node.options]
    unknown = [o for o in options if o not in SIDE_OPTIONS]
    if unknown or not options:
        raise ConfigError(f"side_by_side.options {options}: choose from {', '.join(SIDE_OPTIONS)}")
    path = cfg.reference.attngan
    rows = []
    for n in node.stages:
        case_cfg = cut_stages(cfg, int(n))
        for b in node.batch_sizes:
            b = int(b)
            bar.set_postfix_str(f"{n} stage(s) b{b}")
            g = torch.Generator().manual_seed(int(cfg.seed))
            sizes = [int(cfg.model.generator.base_size) * 2 ** i for i in range(int(n))]
            batch = random_batch(b, sizes, int(cfg.training.vocab_size), int(cfg.data.words_num), g)
            names, fns, params, precisions = [], [], [], []
            if path is not None:
                settings = reference_settings(cfg, int(n), int(text_encoder_from(cfg).out_dim))
                step = reference_step(str(path), settings, int(cfg.training.vocab_size), batch.images,
                                      batch.captions, batch.lengths, batch.class_ids, seed=int(cfg.seed))
                names.append("reference")
                precisions.append("fp32")  # the reference has no mixed precision on the CPU
                fns.append(step)
                params.append((_count(step.generator), sum(_count(d) for d in step.discriminators)))
            for option in options:
                trainer = paper_trainer(case_cfg, option, device, run_dir / f"{n}_{b}_{option}", b)
                names.append(option)
                precisions.append(trainer.precision.name)
                fns.append(lambda trainer=trainer, batch=batch.to(device): trainer.train_step(batch))
                params.append((_count(trainer.generator), _count(trainer.discriminators)))
            for _ in range(int(node.warmup)):
                for fn in fns:
                    fn()
                    bar.update(1)

            def tick(fn):
                def call():
                    fn()
                    bar.update(1)
                return call

            times = interleaved_times([tick(fn) for fn in fns], int(node.steps), device)
            ref = statistics.median(times[0]) if path is not None else None
            for name, prec, t, (g_params, d_params) in zip(names, precisions, times, params):
                med = statistics.median(t)
                rows.append({"stages": int(n), "batch": b, "variant": name, "precision": prec, "times": t, "median": med,
                             "best": min(t), "reference_over_this": (ref / med) if ref is not None else None,
                             "generator_params": g_params, "discriminator_params": d_params})
            del fns, trainer
            gc.collect()
    return rows


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def format_side_by_side(rows: list[dict]) -> str:
    """One line per case: seconds per iteration of every variant, and the reference's time over each t2i one."""
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    head = "| stages | batch | " + " | ".join(f"{v} s/it" for v in variants) + " |"
    lines = [head, "|" + "---|" * (2 + len(variants))]
    for key in dict.fromkeys((r["stages"], r["batch"]) for r in rows):
        cells = []
        for v in variants:
            r = next((r for r in rows if (r["stages"], r["batch"], r["variant"]) == (*key, v)), None)
            if r is None:
                cells.append("—")
                continue
            ratio = r["reference_over_this"]
            cells.append(f"{r['median']:.2f}" + (f" ({ratio:.2f}x)" if ratio is not None and v != "reference" else ""))
        lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(cells) + " |")
    if any(r["reference_over_this"] is not None for r in rows):
        lines.append("(Nx) = reference seconds / t2i seconds: above 1 t2i is faster; medians of interleaved rounds")
    precision_of = {v: sorted({r.get("precision", "fp32") for r in rows if r["variant"] == v}) for v in variants}
    lines.append("precision: " + "; ".join(f"{v} {'/'.join(p)}" for v, p in precision_of.items()))
    for n in dict.fromkeys(r["stages"] for r in rows):  # the same architecture: the same parameter counts
        counts = dict.fromkeys(f"{r['variant']} G {r['generator_params'] / 1e6:.3f}M D {r['discriminator_params'] / 1e6:.3f}M"
                               for r in rows if r["stages"] == n and r["variant"] in ("reference", rows[-1]["variant"]))
        lines.append(f"parameters, {n} stage(s): " + "; ".join(counts))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- per module
MODULE_VARIANTS = ("nchw", "channels_last", "gemm")


def module_cases(trainer: GANTrainer, batch: Batch, names: list[str]) -> dict[str, Callable[[str], Callable[[], None]]]:
    """For each module name (``g1..gN`` a generator stage with its image head, ``d64``.. a discriminator, ``damsm``
    the frozen DAMSM image encoder as the trainer runs it): ``variant -> one forward + backward`` at the shapes of
    the training step. D: the D update's two passes (real, fake) with weight gradients, then the G update's pass
    with input gradients only; G stage: input and weight gradients; DAMSM: input gradients only (frozen)."""
    from t2i.models.stages.base import StageContext

    g = trainer.generator
    text, _ = trainer.encode(batch)
    with torch.no_grad():
        c_code, _, _ = g.ca(text.sentence, True)
        ctx = StageContext(z=torch.randn(len(batch), trainer.settings.z_dim), c_code=c_code, text=text, images=[])
        features = [None]
        for stage in g.stages:
            features.append(stage(features[-1], ctx).features)
    fmt = {"nchw": torch.contiguous_format, "gemm": torch.contiguous_format, "channels_last": torch.channels_last}
    cases: dict[str, Callable[[str], Callable[[], None]]] = {}

    def stage_case(i):
        def make(variant):
            stage, head = (copy.deepcopy(m).to(memory_format=fmt[variant]) for m in (g.stages[i], g.heads[i]))

            def run():
                x = None if features[i] is None else \
                    features[i].contiguous(memory_format=fmt[variant]).requires_grad_(True)
                head(stage(x, ctx).features).square().mean().backward()
            return run
        return make

    def d_case(i):
        def make(variant):
            d = copy.deepcopy(trainer.discriminators[i]).to(memory_format=fmt[variant])
            images = batch.images[trainer.image_levels[i]].contiguous(memory_format=fmt[variant])
            if variant == "gemm":
                use_gemm_convs(d, choose_gemm_convs(conv_calls(d, lambda: d.encode(images)), "auto"))

            def score(x):
                code = d.encode(x)
                return d.cond_logits(code, text.sentence).mean() + d.uncond_logits(code).mean()

            def run():
                (score(images) + score(images.flip(0))).backward()  # D update: real and fake
                d.requires_grad_(False)
                score(images.detach().requires_grad_(True)).backward()  # G update: D frozen
                d.requires_grad_(True)
            return run
        return make

    def damsm_case(variant):
        encoder = trainer.loss.image_encoder  # as the trainer runs it (fast_damsm: folded, channels-last)
        size = int(getattr(encoder, "image_size", batch.images[-1].shape[-1]))
        x0 = torch.rand(len(batch), 3, size, size) * 2 - 1
        encoder = copy.deepcopy(encoder).to(memory_format=fmt[variant])

        def run():
            regions, global_feat = encoder(x0.contiguous(memory_format=fmt[variant]).requires_grad_(True))
            (regions.square().mean() + global_feat.square().mean()).backward()
        return run

    for name in names:
        if name.startswith("g") and name[1:].isdigit() and 1 <= int(name[1:]) <= len(g.stages):
            cases[name] = stage_case(int(name[1:]) - 1)
        elif name.startswith("d") and name[1:].isdigit() and int(name[1:]) in g.resolutions:
            cases[name] = d_case(g.resolutions.index(int(name[1:])))
        elif name == "damsm" and trainer.loss.image_encoder is not None:
            cases[name] = damsm_case
        else:
            raise ConfigError(f"modules.names has {name!r}: use g1..g{len(g.stages)}, "
                              f"{', '.join(f'd{r}' for r in g.resolutions)} or damsm")
    return cases


def under_autocast(fn: Callable[[], None], precision: Precision) -> Callable[[], None]:
    """``fn`` run inside ``precision``'s autocast, as the trainer runs its modules."""
    def run():
        with precision.autocast():
            fn()
    return run


def run_modules(cfg, device: torch.device, info: dict, command: str) -> None:
    """Per module: seconds of a forward + backward in each variant (interleaved), and NCHW / variant."""
    node = cfg.modules
    variants = [str(v) for v in node.variants]
    if not variants or any(v not in MODULE_VARIANTS for v in variants):
        raise ConfigError(f"modules.variants {variants}: choose from {', '.join(MODULE_VARIANTS)}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for b in node.batch_sizes:
            trainer = paper_trainer(cfg, "default", device, Path(tmp) / f"b{b}")
            g = torch.Generator().manual_seed(int(cfg.seed))
            batch = random_batch(int(b), list(trainer.generator.resolutions), int(cfg.training.vocab_size),
                                 int(cfg.data.words_num), g)
            precision = trainer.precision if str(node.precision) == "auto" else Precision(str(node.precision), device)
            for name, make in module_cases(trainer, batch, [str(n) for n in node.names]).items():
                kinds = [v for v in variants if v != "gemm" or name[1:].isdigit() and name.startswith("d")]
                fns = [under_autocast(make(v), precision) for v in kinds]
                for _ in range(int(node.warmup)):
                    for fn in fns:
                        fn()
                times = interleaved_times(fns, int(node.steps), device)
                med = {v: statistics.median(t) for v, t in zip(kinds, times)}
                rows.append({"batch": int(b), "module": name, "precision": precision.name, "median": med,
                             "times": dict(zip(kinds, times)), "load": os.getloadavg()[0]})
                log.info("b%d %s: %s", b, name, ", ".join(f"{v} {t:.3f} s" for v, t in med.items()))
    info["loadavg_after"] = list(os.getloadavg())
    print(command)
    print(f"{info['cpu_line']}, torch {info['torch']}, load average {info['loadavg'][0]:.2f} before / "
          f"{info['loadavg_after'][0]:.2f} after")
    print("| batch | module | precision | " + " | ".join(f"{v} s" for v in variants) + " | load |")
    print("|" + "---|" * (len(variants) + 4))
    for r in rows:
        base = r["median"].get("nchw")
        cells = [(f"{r['median'][v]:.3f}" + (f" ({base / r['median'][v]:.2f}x)" if base and v != "nchw" else ""))
                 if v in r["median"] else "—" for v in variants]
        print(f"| {r['batch']} | {r['module']} | {r['precision']} | " + " | ".join(cells) + f" | {r['load']:.1f} |")
    print("(Nx) = nchw seconds / variant seconds: above 1 the variant is faster")
    if cfg.out:
        Path(str(cfg.out)).write_text(json.dumps({"command": command, "machine": info, "modules": rows,
                                                  "config": to_container(cfg)}, indent=1))
        print(f"wrote {cfg.out}")


# ---------------------------------------------------------------------------------------------- report
def machine_info(device: torch.device) -> dict:
    cpu = cpu_info()
    info = {"torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "usable_cores": usable_cores(), "processor": cpu.model,
            "capability": cpu.isa, "native_bf16": cpu.native_bf16, "cpu_line": cpu.line(torch.get_num_threads()),
            "device": str(device)}
    try:
        info["loadavg"] = list(os.getloadavg())
    except OSError:
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def plan(cfg) -> list[tuple[str, int, int | None]]:
    """The groups ``(kind, batch, resolution)``; each is run in every precision x layout (x compile)."""
    groups: list[tuple[str, int, int | None]] = []
    if cfg.training.enabled:
        groups += [("train", int(b), None) for b in cfg.training.batch_sizes]
    if cfg.generation.enabled:
        groups += [("generate", int(b), int(r)) for r in cfg.generation.resolutions for b in cfg.generation.batch_sizes]
    return groups


def _calls(cfg, group) -> int:
    kind, b, _ = group
    node = cfg.training if kind == "train" else cfg.generation
    steps = int(node.steps) * (4 if kind == "generate" and b == 1 else 1)
    variants = len(cfg.precisions) * len(cfg.channels_last) * (2 if cfg.compile else 1)
    return variants * (steps + int(node.warmup))


def run_side_by_side(cfg, device: torch.device, info: dict, command: str) -> None:
    """The side-by-side cases (``side_by_side`` node), printed as a table under the command and machine line."""
    node = cfg.side_by_side
    calls = len(node.stages) * len(node.batch_sizes) * (len(node.options) + (cfg.reference.attngan is not None)) \
        * (int(node.steps) + int(node.warmup))
    log.info("side by side (%d thread(s); the reference in fp32, t2i at precision=%s except plain/fp32 in fp32 "
             "and bf16 in bf16): stages %s, batches %s, t2i options %s%s", torch.get_num_threads(),
             node.precision, list(node.stages), list(node.batch_sizes), list(node.options),
             ", and the reference" if cfg.reference.attngan is not None else " (no reference.attngan: t2i only)")
    with tempfile.TemporaryDirectory() as tmp, tqdm(total=calls, desc="side by side", unit="it", dynamic_ncols=True) as bar:
        rows = side_by_side(cfg, device, bar, Path(tmp))
    info["loadavg_after"] = list(os.getloadavg())
    print(command)
    print(f"{info['cpu_line'] if device.type == 'cpu' else info.get('gpu')}, torch {info['torch']}, load average "
          f"{info['loadavg'][0]:.2f} before / {info['loadavg_after'][0]:.2f} after")
    print(format_side_by_side(rows))
    if cfg.out:
        out = Path(str(cfg.out))
        out.write_text(json.dumps({"command": command, "machine": info, "side_by_side": rows,
                                   "config": to_container(cfg)}, indent=1))
        print(f"wrote {out}")


@hydra.main(config_path="../conf", config_name="bench", version_base="1.3")
@guarded
def main(cfg: DictConfig) -> None:
    setup_logging()
    if str(cfg.model.get("family")) != "gan":
        raise ConfigError(f"bench measures GANs; model={cfg.model.get('name')} is of family {cfg.model.get('family')}")
    device = resolve_device(str(cfg.device))
    if cfg.reference.attngan is not None:  # a wrong path or model fails before minutes of building
        code_dir(str(cfg.reference.attngan))
        for n in cfg.side_by_side.stages:
            reference_settings(cfg, int(n), 0)
    command = "python tools/bench.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    with num_threads(configure_threads(cfg.threads)):
        # The machine line first, then what precision=auto picks here and why, so the figures below read right.
        info = machine_info(device)
        g = cfg.model.generator
        auto = Precision("auto", device, probe_shape=ProbeShape(channels=2 * int(g.ngf), size=int(g.base_size),
                                                                batch=min(int(cfg.training.batch_sizes[0]), 8)))
        info["auto_precision"], info["auto_reason"] = auto.name, auto.reason
        print(f"machine: {info['cpu_line'] if device.type == 'cpu' else info.get('gpu')}, torch {info['torch']}")
        print(f"precision=auto picks {auto.name}: {auto.reason}", flush=True)
        if cfg.modules.enabled:
            run_modules(cfg, device, info, command)
            return
        if cfg.side_by_side.enabled or cfg.reference.attngan is not None:
            run_side_by_side(cfg, device, info, command)
            return
        precisions = list(dict.fromkeys(auto.name if str(p) == "auto" else str(p) for p in cfg.precisions))
        if device.type == "cpu" and not cpu_info().native_bf16 and "bf16" in precisions and not cfg.emulated_bf16:
            t = probe_cpu_precisions(auto.probe_shape)
            print(f"bf16 is emulated on this CPU (probe block: fp32 {t['fp32'] * 1e3:.0f} ms, bf16 "
                  f"{t['bf16'] * 1e3:.0f} ms, {t['bf16'] / t['fp32']:.1f}x slower): left out of the cases below "
                  "(emulated_bf16=true times it anyway)", flush=True)
            info["probe"] = t
            precisions = [p for p in precisions if p != "bf16"] or ["fp32"]
        for p in precisions:
            Precision(p, device)  # refuse fp16 on the CPU before measuring anything
        cfg.precisions = precisions
        busy = info.get("loadavg", [0])[0]
        if device.type == "cpu" and busy > 0.5 * (os.cpu_count() or 1):
            log.warning("load average %.1f on %d CPUs: other processes compete; timings include contention "
                        "(threads=1 is steadier than a multi-threaded OpenMP region waiting on a busy core)",
                        busy, os.cpu_count())
        peaks, peak_runs = {}, {}
        for p in cfg.precisions:
            r = gemm_peak(int(cfg.matmul.n), str(p), int(cfg.matmul.repeats), device, int(cfg.matmul.inner))
            peaks[str(p)], peak_runs[str(p)] = r["gflops"], r
            for via in ("mm", "conv1x1"):
                log.info("matmul %d^3 %s via %s: best %.1f GFLOP/s, median %.1f", r[via]["n"], p, via,
                         r[via]["gflops"], r[via]["median_gflops"])
            r["conv3x3"] = conv_peak(dtype=str(p), repeats=int(cfg.matmul.repeats), device=device)
            log.info("conv3x3 64ch 64px b16 %s: best %.1f GFLOP/s (direct-convolution FLOPs)", p, r["conv3x3"]["gflops"])
        cases: list[BenchCase] = []
        groups = plan(cfg)
        with tempfile.TemporaryDirectory() as tmp, \
                tqdm(total=sum(_calls(cfg, g) for g in groups), desc="bench", unit="step", dynamic_ncols=True) as bar:
            for kind, b, r in groups:
                bar.set_postfix_str(f"{kind} b{b}" + (f" {r}px" if r else ""))
                cases += bench_group(cfg, device, kind, b, r, peaks, bar, Path(tmp))
        info["loadavg_after"] = list(os.getloadavg())
    table = format_table(cases, peaks)
    print(command)
    print(f"{info['cpu_line']}, torch {info['torch']}, load average "
          f"{info['loadavg'][0]:.2f} before / {info['loadavg_after'][0]:.2f} after")
    print(table)
    print("3x3 conv reference: " + ", ".join(f"{p} {r['conv3x3']['gflops']:.1f} GFLOP/s" for p, r in peak_runs.items())
          + " (%peak is against the matmul peak; oneDNN's 3x3 convolutions can beat its GEMMs)")
    ups = {**speedups(cases, "train"), **speedups(cases, "generate")}
    for label, s in ups.items():
        print(f"speedup {label}: {s:.2f}x")
    if cfg.out:
        out = Path(str(cfg.out))
        out.write_text(json.dumps({"command": command, "machine": info, "matmul_peak_gflops": peaks, "matmul_runs": peak_runs,
                                   "cases": [c.to_dict() for c in cases], "speedup_vs_fp32": ups,
                                   "config": to_container(cfg)}, indent=1))
        print(f"wrote {out}")


if __name__ == "__main__":
    preflight("bench")  # overrides that do not compose: one error line, exit 2
    main()
