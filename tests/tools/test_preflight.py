"""Overrides that do not compose (unknown key, unknown option, unreadable value): one error line, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from t2i.config import override_problem

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ["bench", "convert", "evaluate", "generate", "learning_curve", "prepare_data", "serve", "train"]


@pytest.mark.parametrize("tool", TOOLS)
def test_every_tool_checks_its_overrides_first(tool):
    source = (ROOT / "tools" / f"{tool}.py").read_text()
    assert f'preflight("{tool}")' in source and f'config_name="{tool}"' in source


@pytest.mark.parametrize("args, words", [
    (["cache_dir=x"], "Could not override 'cache_dir': the evaluate config has no such key"),
    (["metrics=nope"], "Could not find 'metrics/nope'; available options in 'metrics': default, dmgan"),
    (["num_images=[1"], "cannot read the override 'num_images=[1'"),
])
def test_override_problem_says_it_in_one_line(args, words):
    problem = override_problem("evaluate", args)
    assert problem is not None and words in problem and "\n" not in problem
    assert "Config search path" not in problem


def test_good_overrides_and_hydra_arguments_pass():
    assert override_problem("train", ["model=damsm", "train.max_steps=5", "hydra.run.dir=/tmp/x"]) is None
    assert override_problem("train", ["--cfg", "job", "model=foo"]) is None  # a Hydra flag: Hydra handles the line
    assert override_problem("evaluate", ["+extra_key=1"]) is None  # appending a key is Hydra's own business


def test_a_tool_exits_2_with_one_line(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "train.py"), "model=foo"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: In 'train': Could not find 'model/foo'")
    assert "attngan" in lines[0] and "Traceback" not in proc.stderr and not any(tmp_path.iterdir())
