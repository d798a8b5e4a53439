"""t2i.benchmark: FLOP counts against closed forms, timers, peak memory, layouts, table; tools/bench.py smoke run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from t2i.benchmark import (PeakMemory, achieved, conv_peak, count_flops, format_table, gemm_peak, images_channels_last,
                           interleaved_times, make_case, matmul_flops, matmul_peak, speedups, summarize_times, time_fn,
                           to_channels_last)
from t2i.runtime import cpu_info


def test_matmul_flops_closed_form_and_counter_agree():
    a, b = torch.randn(6, 7), torch.randn(7, 5)
    flops, out = count_flops(lambda: a @ b)
    assert flops == matmul_flops(6, 7, 5) == 2 * 6 * 7 * 5
    assert torch.equal(out, a @ b)


def test_count_flops_linear_and_conv_forward_backward():
    torch.manual_seed(0)
    lin = nn.Linear(10, 4)
    x = torch.randn(3, 10)
    fwd, _ = count_flops(lambda: lin(x))
    assert fwd == 2 * 3 * 10 * 4
    # backward: grad of the input and of the weight, each one product of the same size
    both, _ = count_flops(lambda: lin(x.requires_grad_()).sum().backward())
    assert both == 3 * fwd
    conv = nn.Conv2d(3, 8, 3, padding=1)
    img = torch.randn(2, 3, 16, 16)
    flops, _ = count_flops(lambda: conv(img))
    assert flops == 2 * 2 * 8 * 16 * 16 * 3 * 3 * 3  # 2 B Cout H W Cin k k
    cl, _ = count_flops(lambda: to_channels_last(conv)(images_channels_last([img])[0]))
    assert cl == flops


def test_time_fn_calls_and_summary():
    calls = []
    times = time_fn(lambda: calls.append(1), steps=3, warmup=2)
    assert len(calls) == 5 and len(times) == 3 and all(t >= 0 for t in times)
    s = summarize_times([3.0, 1.0, 2.0, 6.0])
    assert s == {"best": 1.0, "median": 2.5, "mean": 3.0}
    with pytest.raises(ValueError, match="steps"):
        time_fn(lambda: None, steps=0)


def test_matmul_peak_fields():
    r = matmul_peak(64, "fp32", repeats=2)
    assert r["n"] == 64 and r["dtype"] == "float32"
    assert r["gflops"] == pytest.approx(2 * 64**3 / r["seconds"] / 1e9)
    assert r["gflops"] >= r["median_gflops"] > 0
    assert matmul_peak(32, torch.bfloat16, repeats=1)["dtype"] == "bfloat16"


def test_gemm_peak_takes_the_better_route_and_conv1x1_is_the_same_product():
    r = gemm_peak(128, "fp32", repeats=1)
    assert r["gflops"] == max(r["mm"]["gflops"], r["conv1x1"]["gflops"]) and r["conv1x1"]["via"] == "conv1x1"
    # the 1x1 convolution of [1, K, n/64, 64] with [N, K, 1, 1] is x^T W^T per pixel: 2 n^3 FLOPs
    n = 128
    x, w = torch.randn(1, n, n // 64, 64), torch.randn(n, n, 1, 1)
    flops, out = count_flops(lambda: torch.nn.functional.conv2d(x, w))
    assert flops == matmul_flops(n, n, n)
    torch.testing.assert_close(out.flatten(2)[0].T, x.flatten(2)[0].T @ w[:, :, 0, 0].T, atol=1e-3, rtol=1e-4)
    with pytest.raises(ValueError, match="divisible by 64"):
        matmul_peak(100, via="conv1x1")


def test_conv_peak_counts_direct_convolution_flops():
    r = conv_peak(channels=8, size=8, batch=2, repeats=1)
    x, w = torch.randn(2, 8, 8, 8), torch.randn(8, 8, 3, 3)
    flops, _ = count_flops(lambda: torch.nn.functional.conv2d(x, w, padding=1))
    assert r["gflops"] == pytest.approx(flops / r["seconds"] / 1e9) and r["dtype"] == "float32"


def test_interleaved_times_round_robin():
    order = []
    times = interleaved_times([lambda: order.append("a"), lambda: order.append("b")], steps=3)
    assert order == ["a", "b"] * 3 and [len(t) for t in times] == [3, 3]


def test_achieved_against_peak():
    gflops, pct = achieved(4e9, 2.0, 8.0)
    assert gflops == pytest.approx(2.0) and pct == pytest.approx(25.0)
    assert achieved(1e9, 1.0, None) == (pytest.approx(1.0), None)


def test_peak_memory_sees_a_torch_allocation():
    # In a fresh process: a long-lived pytest worker may serve the block from memory that is already resident.
    code = (
        "import torch\n"
        "from t2i.benchmark import PeakMemory\n"
        "with PeakMemory('cpu') as mem:\n"
        "    x = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched\n"
        "    del x\n"
        "print(mem.peak_mib, mem.delta_mib)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    peak, delta = out.stdout.split()
    if peak == "None":
        pytest.fail("VmHWM could not be reset on this Linux; PeakMemory would report nothing")
    assert 60 <= float(delta) <= 200, delta


def test_channels_last_keeps_values():
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ConvTranspose2d(4, 2, 4, 2, 1))
    x = torch.randn(2, 3, 8, 8)
    ref = conv(x)
    to_channels_last(conv)
    assert conv[0].weight.is_contiguous(memory_format=torch.channels_last)
    (xc,) = images_channels_last([x])
    assert xc.is_contiguous(memory_format=torch.channels_last) and torch.equal(xc, x)
    torch.testing.assert_close(conv(xc), ref, atol=1e-5, rtol=1e-5)


def test_cases_speedups_and_table():
    base = make_case("train", "fp32", False, False, 16, 128, [2.0, 3.0], 64e9, 100.0)
    fast = make_case("train", "bf16", True, False, 16, 128, [0.5, 0.6], 64e9, 400.0)
    gen = make_case("generate", "fp32", False, False, 32, 256, [1.0], 32e9, 100.0)
    assert base.images_per_s == 8.0 and base.flops_per_image == 4e9
    assert base.gflops == pytest.approx(32.0) and base.pct_peak == pytest.approx(32.0)
    assert fast.pct_peak == pytest.approx(32.0)
    ups = speedups([base, fast, gen])
    assert ups == {"train 128px b16 fp32 nchw eager": 1.0, "train 128px b16 bf16 cl eager": 4.0}
    table = format_table([base, fast, gen], {"fp32": 100.0, "bf16": 400.0})
    lines = table.splitlines()
    assert lines[0] == "matmul peak: fp32 100.0 GFLOP/s, bf16 400.0 GFLOP/s"
    assert len(lines) == 3 + 3 and "2000.0" in lines[3] and "4.000" in lines[3]
    assert json.dumps(fast.to_dict())


@pytest.mark.slow
def test_bench_tool_runs_and_writes_json(tmp_path):
    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "bench.json"
    args = [sys.executable, str(repo / "tools" / "bench.py"), f"out={out}", "threads=1", "precisions=[fp32,bf16]",
            "channels_last=[true]", "matmul.n=64", "matmul.repeats=1", "model.generator.ngf=2", "model.generator.base_size=64",
            "model.discriminator.ndf=2", "encoder.word_dim=8", "encoder.hidden_dim=4", "training.batch_sizes=[2]",
            "training.steps=1", "training.warmup=0", "training.damsm_width=2", "generation.resolutions=[64,128]",
            "generation.batch_sizes=[2]", "generation.steps=1", "generation.warmup=0"]
    run = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "python tools/bench.py" in run.stdout and "matmul peak: fp32" in run.stdout
    # The machine line and what precision=auto picks come first; bf16 is timed only where it is native.
    lines = [line for line in run.stdout.splitlines() if not line.startswith("precision auto ->")]  # the log line
    cpu = cpu_info()
    assert lines[0].startswith(f"machine: {cpu.line(1)}") and lines[1].startswith("precision=auto picks ")
    data = json.loads(out.read_text())
    assert data["machine"]["native_bf16"] == cpu.native_bf16 and data["machine"]["capability"] == cpu.isa
    precisions = ["fp32", "bf16"] if cpu.native_bf16 else ["fp32"]
    if not cpu.native_bf16:
        assert lines[2].startswith("bf16 is emulated on this CPU") and data["machine"]["auto_precision"] == "fp32"
    kinds = [(c["kind"], c["precision"], c["resolution"]) for c in data["cases"]]
    assert kinds == [(k, p, r) for k, r in (("train", 128), ("generate", 64), ("generate", 128)) for p in precisions]
    n = len(precisions)
    train, gen64, gen128 = data["cases"][0], data["cases"][n], data["cases"][2 * n]
    assert train["flops_per_image"] > 3 * gen128["flops_per_image"]  # backward and the Ds cost more than G
    assert gen128["flops_per_image"] > 2 * gen64["flops_per_image"]  # the attention stage at 128 px
    assert set(data["matmul_peak_gflops"]) == set(precisions) and data["machine"]["threads"] == 1
    bad = subprocess.run([*args[:2], "precisions=[fp16]", "device=cpu"], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "fp16" in bad.stderr


def test_bench_modules_mode_times_each_module_in_each_layout(tmp_path):
    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "modules.json"
    args = [sys.executable, str(repo / "tools" / "bench.py"), f"out={out}", "threads=1", "modules.enabled=true",
            "model.generator.ngf=2", "model.discriminator.ndf=2", "encoder.word_dim=8", "encoder.hidden_dim=4",
            "training.damsm_width=2", "side_by_side.image_encoder=light", "modules.batch_sizes=[2]",
            "modules.names=[g1,d64,damsm]", "modules.steps=1", "modules.warmup=0", "modules.precision=fp32"]
    run = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, timeout=120,
                         env={**os.environ, "T2I_CACHE_DIR": str(tmp_path / "cache")})
    assert run.returncode == 0, run.stderr[-3000:]
    assert cpu_info().line(1) in run.stdout and "load average" in run.stdout
    rows = json.loads(out.read_text())["modules"]
    assert [r["module"] for r in rows] == ["g1", "d64", "damsm"]
    assert set(rows[1]["median"]) == {"nchw", "channels_last", "gemm"}  # the GEMM variant is a discriminator's
    assert set(rows[0]["median"]) == set(rows[2]["median"]) == {"nchw", "channels_last"}
    assert all(t > 0 for r in rows for t in r["median"].values())
    assert {r["precision"] for r in rows} == {"fp32"} and "| 2 | d64 | fp32 | " in run.stdout
