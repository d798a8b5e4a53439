"""Serve a web page (and its API) that generates images from captions with the exported models found at start.

    python tools/serve.py                                   # http://127.0.0.1:7860, models under runs/ and pretrained/
    python tools/serve.py checkpoint=runs/synthbirds/attngan/export port=8000
    python tools/serve.py device=cuda host=0.0.0.0          # expose beyond loopback only when asked

The page shows the images, each image's stages, its word-attention figure and, for DRAW stages and alignDRAW,
the canvas step by step (GIF); an Interpolate tab moves between two captions or two seeds. Needs the optional
extra `demo` (pip install -e ".[demo]"). Everything the server writes lives in one temporary folder, removed
when it stops (Ctrl-C or SIGTERM).
"""

import os
import shutil
import signal
import tempfile
from pathlib import Path

import hydra
from omegaconf import DictConfig

from t2i import validation as check
from t2i.cli import guarded, preflight, setup_logging
from t2i.demo import DemoApp, Limits, ModelCache, build_page, default_concurrency, find_exports
from t2i.errors import ConfigError
from t2i.runtime import configure_threads


def _stop(signum, frame):
    raise KeyboardInterrupt


def check_settings(cfg: DictConfig) -> dict:
    """Every value of the command line, checked before a model is loaded or a port opened."""
    device = check.device(cfg.device)
    concurrency = "auto" if cfg.concurrency == "auto" else check.integer(
        cfg.concurrency, "concurrency", minimum=1, maximum=64, hint=", or auto")
    lim = cfg.limits
    limits = Limits(max_images=check.integer(lim.max_images, "limits.max_images", minimum=1, maximum=256),
                    max_steps=check.integer(lim.max_steps, "limits.max_steps", minimum=2, maximum=256),
                    max_caption_chars=check.integer(lim.max_caption_chars, "limits.max_caption_chars", minimum=1,
                                                    maximum=100_000),
                    time_limit_s=check.number(lim.time_limit_s, "limits.time_limit_s", minimum=0.001),
                    max_files=check.integer(lim.max_files, "limits.max_files", minimum=1, maximum=100_000))
    host = str(cfg.host or "").strip()
    if not host:
        raise ConfigError("host is empty; give 127.0.0.1 (this machine only) or an address to listen on")
    return dict(
        host=host,
        port=check.integer(cfg.port, "port", minimum=1, maximum=65535),
        device=device,
        precision=check.choice(cfg.precision, "precision", ["auto", "fp32", "bf16", "fp16"]),
        threads=check.integer(cfg.threads, "threads", minimum=1, optional=True),
        concurrency=default_concurrency(device) if concurrency == "auto" else concurrency,
        queue_size=check.integer(cfg.queue_size, "queue_size", minimum=1, maximum=10_000),
        sessions=check.integer(cfg.sessions, "sessions", minimum=1, maximum=100_000),
        limits=limits,
    )


@hydra.main(config_path="../conf", config_name="serve", version_base="1.3")
@guarded
def main(cfg: DictConfig) -> None:
    setup_logging()
    opts = check_settings(cfg)
    exports = find_exports(cfg.runs_dir, cfg.pretrained_dir, cfg.checkpoint)
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise ConfigError('the web demo needs Gradio: pip install -e ".[demo]"') from None
    configure_threads(opts["threads"])
    limits, concurrency = opts["limits"], opts["concurrency"]
    workdir = Path(tempfile.mkdtemp(prefix="t2i-serve-"))
    # Gradio keeps the files it serves in GRADIO_TEMP_DIR: inside our folder, so nothing lands elsewhere.
    os.environ["GRADIO_TEMP_DIR"] = str(workdir / "gradio")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    signal.signal(signal.SIGTERM, _stop)
    try:
        models = ModelCache(exports, device=opts["device"], precision=opts["precision"])
        app = DemoApp(models, workdir / "canvas", limits)
        models.get(models.default)  # load (and keep) the default model before the first request
        page = build_page(app, concurrency=concurrency, queue_size=opts["queue_size"], title=str(cfg.title))
        print(f"models: {', '.join(models.labels)}")
        print(f"device: {opts['device']}, concurrency {concurrency}, queue {opts['queue_size']}, "
              f"time limit {limits.time_limit_s:g} s, at most {limits.max_images} images a request")
        print(f"temporary folder: {workdir} (removed on exit)", flush=True)
        page.launch(server_name=opts["host"], server_port=opts["port"], ssr_mode=False, mcp_server=False, pwa=False,
                    enable_monitoring=False, show_error=False, quiet=False, footer_links=["api"],
                    state_session_capacity=opts["sessions"])
    except KeyboardInterrupt:
        pass
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        print("stopped; temporary folder removed", flush=True)


if __name__ == "__main__":
    preflight("serve")  # overrides that do not compose: one error line, exit 2
    main()
