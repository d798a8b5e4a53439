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

from t2i.cli import guarded, setup_logging
from t2i.demo import DemoApp, Limits, ModelCache, build_page, default_concurrency, find_exports
from t2i.errors import ConfigError
from t2i.runtime import resolve_device


def _stop(signum, frame):
    raise KeyboardInterrupt


@hydra.main(config_path="../conf", config_name="serve", version_base="1.3")
@guarded
def main(cfg: DictConfig) -> None:
    setup_logging()
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise ConfigError('the web demo needs Gradio: pip install -e ".[demo]"') from None
    port = int(cfg.port)
    if not 0 < port < 65536:
        raise ConfigError(f"port={port} is not a TCP port (1-65535)")
    exports = find_exports(cfg.runs_dir, cfg.pretrained_dir, cfg.checkpoint)
    device = resolve_device(str(cfg.device))
    concurrency = default_concurrency(device) if str(cfg.concurrency) == "auto" else int(cfg.concurrency)
    if concurrency < 1:
        raise ConfigError(f"concurrency={cfg.concurrency} must be auto or at least 1")
    limits = Limits(**{k: v for k, v in cfg.limits.items()})
    workdir = Path(tempfile.mkdtemp(prefix="t2i-serve-"))
    # Gradio keeps the files it serves in GRADIO_TEMP_DIR: inside our folder, so nothing lands elsewhere.
    os.environ["GRADIO_TEMP_DIR"] = str(workdir / "gradio")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    signal.signal(signal.SIGTERM, _stop)
    try:
        models = ModelCache(exports, device=device, precision=str(cfg.precision))
        app = DemoApp(models, workdir / "canvas", limits)
        models.get(models.default)  # load (and keep) the default model before the first request
        page = build_page(app, concurrency=concurrency, queue_size=int(cfg.queue_size), title=str(cfg.title))
        print(f"models: {', '.join(models.labels)}")
        print(f"device: {device}, concurrency {concurrency}, queue {cfg.queue_size}, "
              f"time limit {limits.time_limit_s:g} s, at most {limits.max_images} images a request")
        print(f"temporary folder: {workdir} (removed on exit)", flush=True)
        page.launch(server_name=str(cfg.host), server_port=port, ssr_mode=False, mcp_server=False, pwa=False,
                    enable_monitoring=False, show_error=False, quiet=False, footer_links=["api"],
                    state_session_capacity=int(cfg.sessions))
    except KeyboardInterrupt:
        pass
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        print("stopped; temporary folder removed", flush=True)


if __name__ == "__main__":
    main()
