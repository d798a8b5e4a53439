"""Subprocess smoke runs of tools/train.py (DAMSM, then AttnGAN and AttnGAN+DRAW) and tools/generate.py
on a tiny rendered synthetic-bird set, with every bad input a user can type."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def run(*args, cwd, check=True):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    work = tmp_path_factory.mktemp("tools")
    data = [f"data.root={work / 'birds'}", "data.render.num_species=4", "data.render.images_per_species=6",
            "data.render.image_size=64"]
    common = [*data, "train.log_every=1", "train.ckpt_every=2", "train.image_every=2", "train.precision=fp32"]
    run(str(ROOT / "tools/train.py"), "model=damsm", "train.max_steps=2", "train.batch_size=6",
        f"run_dir={work / 'damsm'}", *common, cwd=work)
    return work, common


def test_damsm_wrote_self_describing_encoders(workdir):
    work, _ = workdir
    assert {"text_encoder.safetensors", "text_encoder.json", "image_encoder.safetensors", "image_encoder.json"} <= {
        p.name for p in (work / "damsm").iterdir()}
    assert (work / "birds" / "synthbirds.json").is_file()


@pytest.mark.parametrize("model", ["attngan", "attngan_draw"])
def test_train_then_generate(workdir, model):
    work, common = workdir
    run_dir = work / model
    small = ["model.generator.ngf=4", "model.discriminator.ndf=4", "model.generator.base_size=32",
             "train.batch_size=4"]
    proc = run(str(ROOT / "tools/train.py"), f"model={model}", "train.max_steps=2", f"run_dir={run_dir}",
               f"encoder.checkpoint={work / 'damsm'}", *small, *common, cwd=work)
    assert "exported to" in proc.stdout
    meta = json.loads((run_dir / "export" / "model.json").read_text())
    assert meta["step"] == 2 and meta["model_spec"]["name"] == model
    assert (run_dir / "samples" / "step000002_stage2.png").is_file()
    # resume=auto continues from the checkpoint
    proc = run(str(ROOT / "tools/train.py"), f"model={model}", "train.max_steps=3", f"run_dir={run_dir}",
               f"encoder.checkpoint={work / 'damsm'}", *small, *common, cwd=work)
    assert json.loads((run_dir / "export" / "model.json").read_text())["step"] == 3
    out = work / f"out_{model}"
    proc = run(str(ROOT / "tools/generate.py"), f"checkpoint={run_dir}", 'caption="a bird with a green crown"',
               "num_images=2", f"out_dir={out}", cwd=work)
    assert (out / "grid.png").is_file() and (out / "caption00_01.png").is_file()
    if model == "attngan":
        assert (out / "caption00_00_attention.png").is_file()
    else:
        assert (out / "caption00_00_canvas.png").is_file() and (out / "caption00_00_canvas.gif").is_file()


@pytest.fixture(scope="module")
def attngan_export(workdir):
    """An exported AttnGAN of its own (tests may run in any order and on any xdist worker)."""
    work, common = workdir
    run_dir = work / "attngan_for_errors"
    run(str(ROOT / "tools/train.py"), "model=attngan", "train.max_steps=1", f"run_dir={run_dir}",
        f"encoder.checkpoint={work / 'damsm'}", "model.generator.ngf=4", "model.discriminator.ndf=4",
        "model.generator.base_size=32", "train.batch_size=4", *common, cwd=work)
    return run_dir / "export"


def test_generate_bad_inputs_are_one_line_errors(workdir, attngan_export):
    work, common = workdir
    export = attngan_export
    cases = [
        (["caption=zebra giraffe"], "vocabulary"),
        (['caption="  "'], "give a caption"),
        ([f"checkpoint={work / 'nowhere'}", "caption=bird"], "does not exist"),
        ([f"captions_file={work / 'none.txt'}"], "does not exist"),
        ([f"checkpoint={work / 'damsm'}", "caption=bird"], "not an exported t2i model"),
    ]
    for args, message in cases:
        if not any(a.startswith("checkpoint=") for a in args):
            args = [f"checkpoint={export}", *args]
        proc = run(str(ROOT / "tools/generate.py"), *args, cwd=work, check=False)
        assert proc.returncode == 2, (args, proc.stderr[-2000:])
        lines = [line for line in proc.stderr.strip().splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and message in lines[0], (args, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr


def test_train_without_damsm_says_which_command_to_run(workdir):
    work, common = workdir
    proc = run(str(ROOT / "tools/train.py"), "model=attngan", f"run_dir={work / 'x'}",
               f"encoder.checkpoint={work / 'no_damsm'}", *common, cwd=work, check=False)
    assert proc.returncode == 2 and "python tools/train.py model=damsm" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_train_with_mismatched_stage_list_is_a_clear_error(workdir):
    work, common = workdir
    proc = run(str(ROOT / "tools/train.py"), "model=attngan", "model.generator.stages=[attention,init]",
               f"run_dir={work / 'y'}", f"encoder.checkpoint={work / 'damsm'}", *common, cwd=work, check=False)
    assert proc.returncode == 2 and "first stage must be an initial kind" in proc.stderr


def test_generate_refuses_an_export_that_names_a_callable(workdir, attngan_export, tmp_path):
    """The verified exploit: model.json naming t2i.config.build with a Hydra node that touches a file."""
    work, _ = workdir
    export = tmp_path / "export"
    shutil.copytree(attngan_export, export)
    marker = tmp_path / "pwned"
    meta = json.loads((export / "model.json").read_text())
    meta["model_spec"]["generator"] = {"target": "t2i.config.build",
                                       "kwargs": {"node": {"_target_": "pathlib.Path.touch", "self": str(marker)}}}
    (export / "model.json").write_text(json.dumps(meta))
    proc = run(str(ROOT / "tools/generate.py"), f"checkpoint={export}", "caption=bird", f"out_dir={tmp_path / 'out'}",
               cwd=work, check=False)
    assert proc.returncode == 2 and "refusing to build 't2i.config.build'" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not marker.exists()


# ------------------------------------------------------------------------------ the hardening table
BAD = json.loads((Path(__file__).with_name("bad_inputs.json")).read_text())


def _load_tool(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"tool_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fill(args: list[str], tmp: Path) -> list[str]:
    (tmp / "a_file.txt").write_text("x")
    return [a.replace("{tmp}", str(tmp)).replace("{file}", str(tmp / "a_file.txt")) for a in args]


def _prepare(case: dict, tmp: Path) -> None:
    if case.get("setup") == "nonempty":
        (tmp / "full").mkdir()
        (tmp / "full" / "grid.png").write_bytes(b"keep me")


@pytest.mark.parametrize("case", BAD["generate"], ids=lambda c: " ".join(c["args"])[:40])
def test_generate_settings_are_checked_before_any_work(case, tmp_path):
    """Each bad value gives one ConfigError/CaptionError line from the tool's own checks (no model needed)."""
    import torch

    from t2i.config import compose
    from t2i.errors import T2IError

    if case.get("needs_no_gpu") and torch.cuda.is_available():
        pytest.skip("the case is about a machine without cuda")
    gen = _load_tool("generate")
    _prepare(case, tmp_path)
    args = _fill(case["args"], tmp_path)
    if not any(a.startswith(("caption=", "captions_file=")) for a in args):
        args.append("caption=bird")
    cfg = compose("generate", args)
    with pytest.raises(T2IError) as info:
        opts = gen.check_settings(cfg)
        gen.read_captions(cfg)
        if opts["interpolate"] == "captions":
            gen.check.caption(cfg.caption_b, "caption_b")
        gen.output_folder(cfg, opts["overwrite"])
    assert case["message"] in str(info.value) and "\n" not in str(info.value)
    if case.get("setup") == "nonempty":
        assert (tmp_path / "full" / "grid.png").read_bytes() == b"keep me"


def test_generate_bad_values_as_a_user_types_them(workdir, attngan_export, tmp_path):
    """The subprocess rows of the table: exit 2, one `error:` line, no traceback, nothing written."""
    import torch

    work, _ = workdir
    for case in BAD["generate"]:
        if case.get("where") != "subprocess" or (case.get("needs_no_gpu") and torch.cuda.is_available()):
            continue
        args = _fill(case["args"], tmp_path)
        if not any(a.startswith(("caption=", "captions_file=")) for a in args):
            args.append("caption=bird")
        proc = run(str(ROOT / "tools/generate.py"), f"checkpoint={attngan_export}", *args, cwd=work, check=False)
        lines = [line for line in proc.stderr.strip().splitlines() if line.startswith("error:")]
        assert proc.returncode == 2 and len(lines) == 1 and case["message"] in lines[0], (case, proc.stderr[-1500:])
        assert "Traceback" not in proc.stderr
    assert not (work / "outputs").exists()  # every case was refused before a folder was made


def test_generate_writes_new_folders_and_never_overwrites(workdir, attngan_export, tmp_path):
    work, _ = workdir
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    for expected in ("000", "001"):  # no out_dir: a new numbered folder each time
        proc = run(str(ROOT / "tools/generate.py"), f"checkpoint={attngan_export}", "caption=bird", "num_images=3",
                   "batch_size=2", cwd=cwd)
        out = cwd / "outputs" / "generate" / expected
        assert f"to {out.relative_to(cwd)}" in proc.stdout or str(out) in proc.stdout
        assert sorted(p.name for p in out.glob("caption00_0?.png")) == ["caption00_00.png", "caption00_01.png",
                                                                     "caption00_02.png"]
    assert not list((cwd / "outputs" / "generate").glob(".*"))  # no staging folder left behind
    a = (cwd / "outputs/generate/000/caption00_00.png").read_bytes()
    assert a == (cwd / "outputs/generate/001/caption00_00.png").read_bytes()  # same seed, same first image
    mine = tmp_path / "mine"
    run(str(ROOT / "tools/generate.py"), f"checkpoint={attngan_export}", "caption=bird", "num_images=1",
        f"out_dir={mine}", cwd=cwd)
    proc = run(str(ROOT / "tools/generate.py"), f"checkpoint={attngan_export}", "caption=bird", "num_images=1",
               f"out_dir={mine}", cwd=cwd, check=False)
    assert proc.returncode == 2 and "overwrite=true" in proc.stderr
    run(str(ROOT / "tools/generate.py"), f"checkpoint={attngan_export}", "caption=bird", "num_images=1",
        f"out_dir={mine}", "overwrite=true", cwd=cwd)


@pytest.mark.parametrize("case", BAD["train"], ids=lambda c: " ".join(c["args"])[:40])
def test_train_settings_are_checked_before_any_work(case, tmp_path):
    import torch

    from t2i.config import compose
    from t2i.errors import T2IError

    if case.get("needs_no_gpu") and torch.cuda.is_available():
        pytest.skip("the case is about a machine without cuda")
    tool = _load_tool("train")
    cfg = compose("train", [f"run_dir={tmp_path / 'run'}", *_fill(case["args"], tmp_path)])
    with pytest.raises(T2IError) as info:
        tool.check_settings(cfg)
    assert case["message"] in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()


def test_train_bad_values_as_a_user_types_them_and_no_checkpoint_is_lost(workdir, attngan_export, tmp_path):
    """The subprocess rows, in a run directory that holds a checkpoint: each refused, the checkpoint untouched;
    then resume=never starts over and keeps the old checkpoint aside."""
    work, common = workdir
    run_dir = attngan_export.parent
    before = (run_dir / "checkpoint.pt").read_bytes()
    for case in BAD["train"]:
        if case.get("where") != "subprocess":
            continue
        args = _fill(case["args"], tmp_path)
        if not any(a.startswith("run_dir=") for a in args):
            args.append(f"run_dir={run_dir}")
        proc = run(str(ROOT / "tools/train.py"), "model=attngan", *args, cwd=work, check=False)
        lines = [line for line in proc.stderr.strip().splitlines() if line.startswith("error:")]
        assert proc.returncode == 2 and len(lines) == 1 and case["message"] in lines[0], (case, proc.stderr[-1500:])
        assert "Traceback" not in proc.stderr
    assert (run_dir / "checkpoint.pt").read_bytes() == before


def test_batch_larger_than_the_training_set_is_an_error_not_a_hang(workdir, tmp_path):
    work, common = workdir
    for model in ("damsm", "attngan"):
        args = [f"model={model}", f"run_dir={tmp_path / model}", f"encoder.checkpoint={work / 'damsm'}", *common,
                "train.batch_size=500", "train.max_steps=2"]
        proc = run(str(ROOT / "tools/train.py"), *args, cwd=work, check=False)
        assert proc.returncode == 2 and "larger than the training set" in proc.stderr, proc.stderr[-1500:]
        assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("case", BAD["evaluate"], ids=lambda c: " ".join(c["args"])[:40])
def test_evaluate_settings_are_checked_before_any_work(case, tmp_path):
    from t2i.config import compose
    from t2i.errors import T2IError

    tool = _load_tool("evaluate")
    if case.get("setup") == "evaluated":
        (tmp_path / "ev").mkdir()
        (tmp_path / "ev" / "metrics.json").write_text("{}")
    cfg = compose("evaluate", _fill(case["args"], tmp_path))
    with pytest.raises(T2IError) as info:
        tool.check_settings(cfg)
        tool.output_folder(cfg)
    assert case["message"] in str(info.value) and "\n" not in str(info.value)
