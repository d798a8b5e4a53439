"""t2i.runtime: the CPU description, threads, and what precision=auto chooses (capability x probe x explicit
choice, with the CPU and the probe replaced), the emulated-bf16 warning and the per-machine probe cache."""

from __future__ import annotations

import json
import logging

import pytest
import torch

import t2i.runtime as rt
from t2i.config import compose
from t2i.errors import ConfigError
from t2i.runtime import CPUInfo, Precision, ProbeShape, choose_precision, configure_threads

AVX2 = CPUInfo(model="Test EPYC", capability="AVX2", avx512_bf16=False, amx_bf16=False)
AVX512_BF16 = CPUInfo(model="Test EPYC", capability="AVX512", avx512_bf16=True, amx_bf16=False)
AMX = CPUInfo(model="Test Xeon", capability="AVX512", avx512_bf16=True, amx_bf16=True)


class Probe:
    """A stand-in probe: fixed times, counts its calls."""

    def __init__(self, fp32: float, bf16: float, cached: bool = False):
        self.times, self.cached, self.calls = {"fp32": fp32, "bf16": bf16}, cached, []

    def __call__(self, shape):
        self.calls.append(shape)
        return dict(self.times), self.cached


@pytest.fixture(autouse=True)
def fresh(monkeypatch, tmp_path):
    monkeypatch.setenv("T2I_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(rt, "_SAID", set())


def test_cpu_line_and_native_bf16():
    assert not AVX2.native_bf16 and AVX512_BF16.native_bf16 and AMX.native_bf16
    assert AVX2.line(2) == "Test EPYC (AVX2, native bf16: no, 2 threads)"
    assert AMX.line(1) == "Test Xeon (AMX, native bf16: yes, 1 thread)"
    real = rt.cpu_info()
    assert real.capability == torch.backends.cpu.get_cpu_capability() and real.model


@pytest.mark.parametrize("cpu, probe, expected", [
    (AVX2, Probe(0.010, 0.001), "fp32"),          # no native bf16: fp32 whatever a probe would say, no probe run
    (AVX512_BF16, Probe(0.010, 0.005), "bf16"),    # native and 2x faster
    (AMX, Probe(0.010, 0.0096), "fp32"),           # native but within 5 %: not worth the rounding
    (AMX, Probe(0.010, 0.030), "fp32"),            # native but slower (oneDNN's bf16 convolutions on some CPUs)
])
def test_cpu_auto_follows_capability_and_probe(cpu, probe, expected):
    name, reason = choose_precision(torch.device("cpu"), ProbeShape(16, 32, 2), cpu=cpu, probe=probe)
    assert name == expected and cpu.model in reason
    if cpu.native_bf16:
        assert probe.calls == [ProbeShape(16, 32, 2)] and "probe fp32 10.0 ms" in reason
    else:
        assert probe.calls == [] and "emulated" in reason


def test_cuda_auto_is_bf16_where_supported_else_fp16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Test GPU")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert choose_precision(torch.device("cuda"))[0] == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    name, reason = choose_precision(torch.device("cuda"))
    assert name == "fp16" and "GradScaler" in reason


def test_precision_auto_records_choice_and_says_it_once(monkeypatch, caplog):
    monkeypatch.setattr(rt, "cpu_info", lambda: AVX512_BF16)
    probe = Probe(0.010, 0.004, cached=True)
    monkeypatch.setattr(rt, "_probe_cached", probe)
    with caplog.at_level(logging.INFO, logger="t2i.runtime"):
        first, second = Precision("auto", "cpu"), Precision("auto", "cpu")
    assert first.name == second.name == "bf16" and first.dtype == torch.bfloat16 and "(cached)" in first.reason
    assert [r.getMessage() for r in caplog.records].count(f"precision auto -> bf16: {first.reason}") == 1


def test_explicit_choice_is_honoured_and_emulated_bf16_warns_once(monkeypatch, caplog):
    monkeypatch.setattr(rt, "cpu_info", lambda: AVX2)
    with caplog.at_level(logging.INFO, logger="t2i.runtime"):
        assert Precision("fp32", "cpu").dtype is None
        assert Precision("bf16", "cpu").dtype == torch.bfloat16 and Precision("bf16", "cpu").name == "bf16"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "emulated" in warnings[0].getMessage() and "precision=auto" in warnings[0].getMessage()
    caplog.clear()
    monkeypatch.setattr(rt, "cpu_info", lambda: AMX)
    monkeypatch.setattr(rt, "_SAID", set())
    with caplog.at_level(logging.WARNING, logger="t2i.runtime"):
        Precision("bf16", "cpu")
    assert not caplog.records  # native bf16: nothing to warn about
    with pytest.raises(ConfigError, match="fp16 needs CUDA"):
        Precision("fp16", "cpu")
    with pytest.raises(ConfigError, match="choose auto or one of"):
        Precision("fp8", "cpu")


def test_probe_is_cached_per_machine_and_shape(monkeypatch, tmp_path):
    calls = []

    def fake_probe(shape, reps=3):
        calls.append(shape)
        return {"fp32": 0.02, "bf16": 0.01}

    monkeypatch.setattr(rt, "probe_cpu_precisions", fake_probe)
    shape = ProbeShape(8, 16, 2)
    assert rt._probe_cached(shape) == ({"fp32": 0.02, "bf16": 0.01}, False)
    assert rt._probe_cached(shape) == ({"fp32": 0.02, "bf16": 0.01}, True) and calls == [shape]
    rt._probe_cached(ProbeShape(8, 32, 2))  # another shape is probed again
    assert len(calls) == 2
    cache = tmp_path / "cache" / "precision_probe.json"
    key = next(iter(json.loads(cache.read_text())))
    assert torch.__version__ in key and rt.cpu_info().model in key
    cache.write_text("{not json")  # a damaged cache only means probing again
    assert rt._probe_cached(shape)[1] is False and len(calls) == 3


def test_real_probe_times_both_precisions():
    torch.manual_seed(3)
    state = torch.get_rng_state()
    times = rt.probe_cpu_precisions(ProbeShape(channels=4, size=8, batch=1), reps=1)
    assert set(times) == {"fp32", "bf16"} and all(0 < t < 60 for t in times.values())
    assert torch.equal(torch.get_rng_state(), state)  # a probe (run or cached) leaves a run's random stream alone


def test_threads_follow_usable_cores(monkeypatch):
    old = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
        monkeypatch.setattr(rt.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
        assert configure_threads() == 4 and torch.get_num_threads() == 4
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # torchrun: the cores are shared among local processes
        assert configure_threads() == 2
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        assert configure_threads() == 3
        assert configure_threads(1) == 1 and torch.get_num_threads() == 1
        for bad in (0, -2, "abc", 1.5, True):
            with pytest.raises(ConfigError, match="threads="):
                configure_threads(bad)
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("name, overrides, key", [
    ("train", [], "train.precision"),
    ("train", ["model=damsm"], "train.precision"),
    ("train", ["train=gpu"], "train.precision"),
    ("generate", [], "precision"),
    ("evaluate", [], "precision"),
])
def test_auto_is_the_default_of_the_presets_and_tools(name, overrides, key):
    cfg = compose(name, overrides)
    node = cfg
    for part in key.split("."):
        node = node[part]
    assert node == "auto"
