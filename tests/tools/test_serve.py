"""tools/serve.py end to end: the server as a subprocess on a free loopback port, driven by headless Chromium
(Debian's chromium through Playwright) and called through gradio_client; then stopped, leaving nothing behind."""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from demo_exports import write_damsm_like, write_gan_export
from t2i.pipeline import Text2ImagePipeline
from t2i.visualize import to_pil

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("T2I_CHROMIUM", "/usr/bin/chromium")
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("serve")
    attngan = write_gan_export(work / "runs" / "tiny" / "attngan" / "export", ["init", "attention"])
    write_damsm_like(work / "runs" / "tiny" / "damsm" / "export")
    time.sleep(0.01)
    draw = write_gan_export(work / "runs" / "tiny" / "attngan_draw" / "export", ["init", "draw"], seed=1)
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    before = set(os.listdir(ROOT))
    proc = subprocess.Popen([sys.executable, str(ROOT / "tools/serve.py"), f"port={port}",
                             f"runs_dir={work / 'runs'}", f"pretrained_dir={work / 'pretrained'}",
                             "precision=fp32"],  # the API test compares pixels with an fp32 pipeline (auto is bf16
                                                 # on a CPU with native bf16)
                            cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    lines = []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            raise AssertionError("server exited:\n" + "".join(lines))
        lines.append(line)
        if "Running on local URL" in line:
            break
    else:
        proc.kill()
        raise AssertionError("server did not start:\n" + "".join(lines))
    tmp = Path(re.search(r"temporary folder: (\S+)", "".join(lines)).group(1))
    info = {"url": url, "proc": proc, "tmp": tmp, "log": lines, "exports": {"attngan": attngan, "draw": draw}}
    try:
        yield info
        # stopping (SIGTERM) removes the temporary folder, which held everything the server wrote
        assert tmp.is_dir() and any((tmp / "gradio").rglob("*.png"))
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0 and "temporary folder removed" in out, out[-2000:]
        assert not tmp.exists()
        assert set(os.listdir(ROOT)) == before and sorted(p.name for p in work.iterdir()) == ["runs"]
    finally:
        if proc.poll() is None:
            proc.kill()


def test_page_in_headless_chromium_generates_the_images(server, tmp_path):
    from playwright import sync_api as playwright

    assert Path(CHROMIUM).is_file(), f"{CHROMIUM} missing: apt-get install -y chromium"
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(server["url"], wait_until="domcontentloaded", timeout=60_000)
            page.locator("#generate").wait_for(timeout=60_000)
            page.locator("#caption textarea").fill("a zebra bird with a green crown")
            page.locator("#num_images input[type=number]").fill("6")
            page.locator("#num_images input[type=number]").press("Enter")
            page.locator("#generate").click()
            thumbs = page.locator("#gallery img")
            page.wait_for_function("() => document.querySelectorAll('#gallery img').length >= 6", timeout=60_000)
            page.wait_for_function("() => document.querySelector('#message textarea').value.includes('images at')",
                                   timeout=30_000)
            message = page.locator("#message textarea").input_value()
            assert thumbs.count() == 6, message
            assert message.startswith("6 images at 32 px") and "warning: unknown words dropped: zebra" in message
            assert page.locator("#stages img").count() == 2  # stage 1 and 2 of the first image
            page.locator("#canvas img").wait_for(timeout=30_000)  # the DRAW canvas (the newest run is the default)
            assert page.locator("#attention img").count() == 0  # a DRAW stage has no word attention to show
            # a click on an image shows its own stages and canvas
            first_stage = page.locator("#stages img").first.get_attribute("src")
            thumbs.nth(2).click()
            page.wait_for_function("() => document.querySelector('#message textarea').value.includes('showing image #3')",
                                   timeout=30_000)
            page.wait_for_function(f"() => document.querySelector('#stages img').getAttribute('src') != {first_stage!r}", timeout=30_000)
            page.keyboard.press("Escape")
            shot = tmp_path / "page.png"
            page.screenshot(path=str(shot), full_page=True)
            gallery_shot = np.asarray(Image.open(io.BytesIO(page.locator("#gallery").screenshot())).convert("L"), float)
        finally:
            browser.close()
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.std() > 10 and len(np.unique(pixels)) > 50  # not a blank page
    assert gallery_shot.std() > 10




def test_api_through_gradio_client(server):
    from gradio_client import Client

    client = Client(server["url"], verbose=False)
    gallery, stages, attention, canvas, message = client.predict(
        "a bird with a green crown", 3, 5, "runs/tiny/attngan", api_name="/generate")
    assert len(gallery) == 3 and message.startswith("3 images at 32 px")
    reference = Text2ImagePipeline.from_export(server["exports"]["attngan"])(["a bird with a green crown"], 3, seed=5)
    for item, tensor in zip(gallery, reference.images):  # PNG: the very images tools/generate.py makes
        assert np.array_equal(np.asarray(Image.open(item["image"]).convert("RGB")), np.asarray(to_pil(tensor)))
    assert [s["caption"] for s in stages] == ["stage 1: 16 px", "stage 2: 32 px"] and canvas is None
    assert Image.open(attention).size == (96 * 7, 110)
    # the DRAW model's canvas comes back as an animated GIF
    *_, canvas, message = client.predict("a red bird", 1, 0, "runs/tiny/attngan_draw", api_name="/generate")
    with Image.open(canvas) as gif:
        assert gif.is_animated and gif.n_frames == 4
    # errors are one line, with empty pictures
    gallery, *_, message = client.predict("zebra giraffe", 2, 0, api_name="/generate")
    assert gallery == [] and message.startswith("error: none of the words of 'zebra giraffe'")
    with pytest.raises(Exception, match="greater than maximum value 16"):  # the slider's range, checked by Gradio
        client.predict("a red bird", 17, 0, api_name="/generate")
    with pytest.raises(Exception, match="not in the list of choices"):
        client.predict("a red bird", 1, 0, "../../etc/passwd", api_name="/generate")
    strip, message = client.predict("seeds", "a red bird", "", 0, 1, 4, "runs/tiny/attngan", api_name="/interpolate")
    assert Image.open(strip).size == (4 * 128, 168) and message.startswith("4 steps between seeds 0 and 1")


def _serve_tool():
    import importlib.util

    spec = importlib.util.spec_from_file_location("tool_serve", ROOT / "tools" / "serve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("args, message", [
    (["port=0"], "port=0 is out of range"),
    (["port=http"], "port='http' is not a whole number"),
    (["host="], "host is empty"),
    (["concurrency=0"], "concurrency=0 is out of range"),
    (["device=tpu"], "device='tpu' is not a device"),
    (["precision=fp8"], "precision='fp8' is not one of"),
    (["queue_size=-1"], "queue_size=-1 is out of range"),
    (["limits.max_images=0"], "limits.max_images=0 is out of range"),
    (["limits.time_limit_s=nan"], "limits.time_limit_s=nan is not a finite number"),
])
def test_serve_settings_are_checked_before_any_work(args, message):
    from t2i.config import compose
    from t2i.errors import T2IError

    with pytest.raises(T2IError) as info:
        _serve_tool().check_settings(compose("serve", args))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_serve_without_a_model_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "tools/serve.py"), f"runs_dir={tmp_path / 'runs'}",
                           f"pretrained_dir={tmp_path / 'none'}", "port=1"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(lines) == 1 and "no exported model under" in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and list(tmp_path.iterdir()) == []
