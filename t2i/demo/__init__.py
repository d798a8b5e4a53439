"""The web demo behind ``tools/serve.py``: plain handler functions over :class:`Text2ImagePipeline`, and the page.

Everything a request does is a plain function of this module, tested without a browser:

- :func:`find_exports` lists the models the server may offer (``runs/*/*/export``, ``pretrained/*/``,
  ``checkpoint=``), once, at start; the page can only name one of these by its label.
- :class:`ModelCache` loads each of them once, on first use, and keeps it; generation under one model is
  serialised by a lock (the pipeline seeds the global RNG for conditioning augmentation), and every module
  of a loaded model carries a forward pre-hook that enforces the request's time limit (:func:`time_limit`).
- :class:`DemoApp` holds the handlers: :meth:`DemoApp.generate` (caption -> images, with the same images
  as ``tools/generate.py`` for the same seed), :meth:`DemoApp.details` (per-stage images, the word-attention
  figure, the DRAW canvas as a GIF for one image), :meth:`DemoApp.interpolate` and :meth:`DemoApp.examples`.
  They raise :class:`t2i.errors.T2IError` subclasses with the CLI's one-line messages.
- :func:`build_page` wraps them in a Gradio ``Blocks`` page; it is the only place that imports Gradio
  (the optional extra ``demo``).

Files: only the canvas GIFs are written, into the ``workdir`` given to :class:`DemoApp` (the server's
temporary folder, removed on exit), and at most ``Limits.max_files`` of them are kept.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from PIL import Image

from t2i import validation as check
from t2i.data.text import END_TOKEN, tokenize
from t2i.errors import CaptionError, CheckpointError, T2IError
from t2i.export import DEFAULT_PRETRAINED, PRETRAINED_DIR, read_export_meta, resolve_export, shipped_exports
from t2i.pipeline import PipelineOutput, Text2ImagePipeline
from t2i.visualize import attention_figure, captioned_grid, save_canvas_gif, to_pil
from t2i.demo.examples import COLOUR_WORDS, PART_WORDS, TEMPLATES, example_captions  # noqa: F401 (the page API)
from t2i.demo.limits import (LimitError, Limits, RequestTimeout, check_deadline, install_deadline_hooks,  # noqa: F401
                             time_limit)

log = logging.getLogger(__name__)



# ============================================================================================ models
def _generating_export(folder: Path) -> bool:
    """Whether ``folder`` is a t2i export that generates from captions (its ``model.json`` read as JSON only)."""
    try:
        read_export_meta(folder)
    except CheckpointError as exc:
        log.info("not offering %s: %s", folder, exc)
        return False
    return True


def _label(path: Path, base: Path) -> str:
    """How the page names an export: its path relative to ``base`` (or absolute) without a trailing ``/export``."""
    path = path.resolve()
    try:
        name = path.relative_to(base.resolve()).as_posix()
    except ValueError:
        name = path.as_posix()
    return name.removesuffix("/export")


def find_exports(runs_dir: str | os.PathLike = "runs", pretrained_dir: str | os.PathLike | None = None,
                 checkpoint: str | os.PathLike | None = None, base: str | os.PathLike = ".") -> dict[str, Path]:
    """The models the server offers, found once at start: label -> export folder.

    Order: ``checkpoint`` (when given; it is the default model), the shipped ``pretrained_dir/*/`` models
    (default: the repository's ``pretrained/``, its default model first), then ``runs_dir/*/*/export`` newest
    first. Only t2i exports of a model that generates from captions (GAN or alignDRAW; not a DAMSM) are offered.

    Raises:
        CheckpointError: ``checkpoint`` does not exist or is no generating export, or nothing was found.
    """
    found: dict[str, Path] = {}
    pretrained_dir = Path(pretrained_dir) if pretrained_dir is not None else PRETRAINED_DIR
    runs_dir = Path(runs_dir)
    if checkpoint:
        export = resolve_export(checkpoint, runs_dir, pretrained_dir)
        read_export_meta(export)  # the CLI's message for a folder that is no generating export
        found[_label(export, Path(base))] = export.resolve()
    # pretrained/<name>/ and runs/<data>/<model>/export, named from the folder that holds them
    candidates = [(folder, pretrained_dir.parent) for folder in shipped_exports(pretrained_dir)]
    candidates += [(meta.parent, runs_dir.parent) for meta in
                   sorted(runs_dir.glob("*/*/export/model.json"), key=lambda p: -p.stat().st_mtime)]
    for folder, root in candidates:
        if folder.resolve() not in found.values() and _generating_export(folder):
            found.setdefault(_label(folder, root), folder.resolve())
    if not found:
        raise CheckpointError(f"no exported model under {runs_dir}/*/*/export or {pretrained_dir}/*/; train one "
                              "(python tools/train.py model=attngan) or pass checkpoint=<export dir>")
    return found


class ModelCache:
    """Loads each offered export once, on first use, and keeps it (with its lock and deadline hooks).

    Args:
        exports: label -> export folder, from :func:`find_exports`; nothing else can be loaded.
        device, precision: passed to :meth:`Text2ImagePipeline.from_export`.
        loader: how an export is loaded (tests count the loads).
    """

    def __init__(self, exports: dict[str, Path], device: str | torch.device = "cpu", precision: str = "fp32",
                 loader: Callable[..., Text2ImagePipeline] = Text2ImagePipeline.from_export):
        if not exports:
            raise CheckpointError("no model to serve")
        self.exports = dict(exports)
        self.device, self.precision, self.loader = device, precision, loader
        self._models: dict[str, Text2ImagePipeline] = {}
        self._locks: dict[str, threading.Lock] = {label: threading.Lock() for label in self.exports}
        self._loading = threading.Lock()
        self.loads = 0

    @property
    def labels(self) -> list[str]:
        return list(self.exports)

    @property
    def default(self) -> str:
        return self.labels[0]

    def _check(self, label: str | None) -> str:
        label = self.default if label in (None, "") else label
        if label not in self.exports:
            raise CheckpointError(f"model {str(label)[:80]!r} is not served here; choose one of {', '.join(self.labels)}")
        return label

    def get(self, label: str | None = None) -> Text2ImagePipeline:
        """The pipeline of ``label`` (None: the default model), loaded on first use."""
        label = self._check(label)
        with self._loading:
            if label not in self._models:
                started = time.perf_counter()
                pipe = self.loader(self.exports[label], device=self.device, precision=self.precision)
                install_deadline_hooks(pipe.generator, pipe.text_encoder)
                self._models[label] = pipe
                self.loads += 1
                log.info("loaded %s in %.1f s", label, time.perf_counter() - started)
            return self._models[label]

    @contextmanager
    def use(self, label: str | None) -> Iterator[Text2ImagePipeline]:
        """The pipeline of ``label``, held exclusively (one generation at a time per model)."""
        label = self._check(label)
        pipe = self.get(label)
        with self._locks[label]:
            yield pipe


# ============================================================================================ captions
@dataclass
class CheckedCaption:
    text: str
    words: list[str]          # the known words the model reads (at most words_num)
    unknown: list[str]        # words not in the vocabulary (dropped)
    cut: int = 0              # known words left out beyond words_num


def check_caption(pipe: Text2ImagePipeline, caption: Any, limits: Limits) -> CheckedCaption:
    """Validate a caption as the CLI does, and say what the model will read of it.

    Raises:
        CaptionError: blank, no word, or no known word (the pipeline's messages, as ``tools/generate.py`` prints them).
        LimitError: longer than ``limits.max_caption_chars``.
    """
    if caption is not None and not isinstance(caption, str):
        raise CaptionError(f"the caption must be text, got {type(caption).__name__}")
    if caption is not None and len(caption) > limits.max_caption_chars:
        raise LimitError(f"the caption has {len(caption)} characters; at most {limits.max_caption_chars} are accepted")
    try:  # the CLI's checks and messages; the page's caption box may hold line breaks: they are spaces here
        caption = check.caption(None if caption is None else re.sub(r"[\r\n]+", " ", caption))
    except T2IError as exc:
        raise CaptionError(str(exc)) from None
    encoded = pipe.encode_captions([caption])  # raises the CLI's CaptionError for no/unknown words
    known = [t for t in tokenize(caption) if t in pipe.vocab and t != END_TOKEN]
    return CheckedCaption(caption, encoded.words[0], encoded.unknown[0], max(0, len(known) - pipe.words_num))


def caption_notices(checked: CheckedCaption, words_num: int) -> list[str]:
    notices = []
    if checked.unknown:
        notices.append(f"warning: unknown words dropped: {', '.join(dict.fromkeys(checked.unknown))}")
    if checked.cut:
        notices.append(f"warning: the caption is cut at the model's {words_num} words; it reads "
                       f"\"{' '.join(checked.words)}\" ({checked.cut} more left out)")
    return notices


def _int_in(value: Any, name: str, low: int, high: int) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise LimitError(f"{name} must be a whole number, got {str(value)[:40]!r}") from None
    if not math.isfinite(number) or number != int(number):
        raise LimitError(f"{name} must be a whole number, got {str(value)[:40]!r}")
    if not low <= int(number) <= high:
        raise LimitError(f"{name} must be between {low} and {high}, got {int(number)}")
    return int(number)


# ============================================================================================ handlers
@dataclass
class GenerationResult:
    """What :meth:`DemoApp.generate` returns: the images, and what :meth:`DemoApp.details` needs for each."""

    model: str
    images: list[Image.Image]
    labels: list[str]
    output: PipelineOutput
    notices: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def message(self) -> str:
        size = self.images[0].size[0] if self.images else 0
        head = f"{len(self.images)} image{'s' if len(self.images) != 1 else ''} at {size} px in {self.seconds:.2f} s ({self.model})"
        return "\n".join([head, *self.notices])


@dataclass
class Details:
    """One image explained: its stage images (label each), the word-attention figure, the DRAW canvas GIF."""

    stages: list[tuple[Image.Image, str]]
    attention: Image.Image | None
    canvas_gif: Path | None


class DemoApp:
    """The demo's request handlers (what the page and its API call).

    Args:
        models: the :class:`ModelCache` of the exports found at start.
        workdir: the folder canvas GIFs are written into (the server's temporary folder).
        limits: the request limits.
    """

    def __init__(self, models: ModelCache, workdir: str | os.PathLike, limits: Limits = Limits()):
        self.models = models
        self.workdir = Path(workdir)
        self.limits = limits
        self._files_lock = threading.Lock()

    # ------------------------------------------------------------------ generation
    def generate(self, caption: str, num_images: Any = 4, seed: Any = 0, model: str | None = None) -> GenerationResult:
        """``num_images`` images of ``caption`` from ``seed``: the images ``tools/generate.py`` makes with the same seed.

        Raises:
            CaptionError, LimitError, CheckpointError: one-line messages for the page.
        """
        num_images = _int_in(num_images, "number of images", 1, self.limits.max_images)
        seed = _int_in(seed, "seed", 0, self.limits.max_seed)
        started = time.perf_counter()
        with self.models.use(model) as pipe:
            checked = check_caption(pipe, caption, self.limits)
            with time_limit(self.limits.time_limit_s):
                out = pipe([checked.text], num_images=num_images, seed=seed)
        label = self.models._check(model)
        log.info("generated %d images with %s in %.2f s (seed %d)", num_images, label, time.perf_counter() - started, seed)
        images = [to_pil(x) for x in out.images]
        labels = [f"seed {seed} #{k + 1}" for k in range(num_images)]
        return GenerationResult(label, images, labels, out, caption_notices(checked, pipe.words_num),
                                time.perf_counter() - started)

    def details(self, result: GenerationResult | None, index: Any = 0) -> Details:
        """Per-stage images, the word-attention figure (words x attention stages) and the canvas GIF of one image."""
        if result is None or not result.images:
            return Details([], None, None)
        index = _int_in(index, "image index", 0, len(result.images) - 1)
        out = result.output
        stages = [(to_pil(stage[index]), f"stage {s + 1}: {stage.shape[-1]} px") for s, stage in enumerate(out.stage_images)]
        attention = None
        if out.attn_maps:
            attention = attention_figure([st[index] for st in out.stage_images[1:]], [a[index] for a in out.attn_maps],
                                         out.words[index], labels=[f"stage {s + 2}" for s in range(len(out.attn_maps))])
        gif = None
        if out.canvases is not None:
            frames = out.canvases[index]
            gif = self._new_file(".gif")
            save_canvas_gif(frames, gif, scale=max(1, 256 // frames.shape[-1]))
        return Details(stages, attention, gif)

    def interpolate(self, mode: str, caption_a: str, caption_b: str = "", seed_a: Any = 0, seed_b: Any = 1,
                    steps: Any = 8, model: str | None = None) -> tuple[Image.Image, str]:
        """An interpolation strip: between two captions (same noise), or between two seeds (same caption).

        Returns the captioned strip and the message (time, notices).
        """
        steps = _int_in(steps, "steps", 2, self.limits.max_steps)
        seed_a = _int_in(seed_a, "seed A", 0, self.limits.max_seed)
        seed_b = _int_in(seed_b, "seed B", 0, self.limits.max_seed)
        if mode not in ("captions", "seeds"):
            raise LimitError(f"interpolation mode {str(mode)[:20]!r} is not known; use captions or seeds")
        started = time.perf_counter()
        with self.models.use(model) as pipe:
            if pipe.text_encoder is None:
                raise CheckpointError("alignDRAW has no sentence vector or noise input to interpolate; "
                                      "choose a GAN model")
            checked = [check_caption(pipe, caption_a, self.limits)]
            with time_limit(self.limits.time_limit_s):
                if mode == "captions":
                    checked.append(check_caption(pipe, caption_b, self.limits))
                    out = pipe.interpolate_captions(checked[0].text, checked[1].text, steps=steps, seed=seed_a)
                    labels = [f"{float(a):.2f}: " + (checked[0].text if float(a) < 0.5 else checked[1].text)
                              for a in out.captions]
                else:
                    out = pipe.interpolate_noise(checked[0].text, steps=steps, seed_a=seed_a, seed_b=seed_b)
                    labels = [f"seed {seed_a} -> {seed_b}: {k / (steps - 1):.2f}" for k in range(steps)]
        strip = captioned_grid(out.images, labels, ncol=min(steps, 8))
        notices = [n for c in checked for n in caption_notices(c, pipe.words_num)]
        head = f"{steps} steps between {'the two captions' if mode == 'captions' else f'seeds {seed_a} and {seed_b}'} " \
               f"in {time.perf_counter() - started:.2f} s"
        return strip, "\n".join([head, *notices])

    def examples(self, model: str | None = None, n: int = 6) -> list[str]:
        """Example captions made of ``model``'s words."""
        return example_captions(self.models.get(model).vocab, n)

    def model_info(self, model: str | None = None) -> str:
        pipe = self.models.get(model)
        stages = getattr(pipe.generator, "stage_kinds", None) or ["aligndraw"]
        return (f"{self.models._check(model)}: stages {' -> '.join(stages)}, {len(pipe.vocab)} words, "
                f"reads up to {pipe.words_num} words")

    # ------------------------------------------------------------------ files
    def _new_file(self, suffix: str) -> Path:
        """A fresh file name in the work folder; the oldest files beyond ``limits.max_files`` are removed."""
        with self._files_lock:
            self.workdir.mkdir(parents=True, exist_ok=True)
            existing = sorted(self.workdir.glob("t2i-*"), key=lambda p: p.stat().st_mtime)
            for old in existing[: max(0, len(existing) - self.limits.max_files + 1)]:
                old.unlink(missing_ok=True)
            return self.workdir / f"t2i-{uuid.uuid4().hex}{suffix}"


# ============================================================================================ the page
def default_concurrency(device: str | torch.device) -> int:
    """Requests run at once: one on a CPU (one request already uses every core), two on a GPU (one generates
    while the other encodes its pictures; generation itself is serialised per model)."""
    return 2 if torch.device(device).type == "cuda" else 1


def build_page(app: DemoApp, concurrency: int = 1, queue_size: int = 16, title: str = "t2i demo"):
    """The Gradio page: a Generate tab (images, stages, word attention, DRAW canvas) and an Interpolate tab.

    The generation endpoint is ``/generate`` (caption, number of images, seed, model) and returns the gallery,
    the stage images, the attention figure, the canvas GIF and the message; errors come back as the message
    ``error: ...`` with empty pictures. ``/interpolate`` returns the strip and its message.
    """
    import gradio as gr  # the optional extra `demo`

    labels = app.models.labels
    default = app.models.default

    def pictures(details: Details | None):
        """The detail outputs (plain values, so the API returns files, not component updates)."""
        if details is None:
            return [], None, None
        return details.stages, details.attention, str(details.canvas_gif) if details.canvas_gif else None

    def show_details(attention, canvas):
        """Show the attention figure and the canvas only where the model has them (a page-only step)."""
        return gr.Image(visible=attention is not None), gr.Image(visible=canvas is not None)

    def on_generate(caption, num_images, seed, model):
        try:
            result = app.generate(caption, num_images, seed, model)
            details = app.details(result, 0)
        except T2IError as exc:
            return [], *pictures(None), f"error: {exc}", None
        return list(zip(result.images, result.labels)), *pictures(details), result.message, result

    def on_select(result, evt):
        try:
            details = app.details(result, evt.index)
        except T2IError as exc:
            return *pictures(None), f"error: {exc}"
        return *pictures(details), result.message + f"\nshowing image #{evt.index + 1}"

    on_select.__annotations__ = {"evt": gr.SelectData}  # Gradio finds the event data by this annotation

    def on_interpolate(mode, caption_a, caption_b, seed_a, seed_b, steps, model):
        try:
            return app.interpolate(mode, caption_a, caption_b, seed_a, seed_b, steps, model)
        except T2IError as exc:
            return None, f"error: {exc}"

    def on_model(model):
        try:
            return gr.Dataset(samples=[[c] for c in app.examples(model)]), app.model_info(model)
        except T2IError as exc:
            return gr.Dataset(samples=[]), f"error: {exc}"

    first_examples = app.examples(default)
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(600, 1800)) as page:
        gr.Markdown(f"# {title}\nType a caption about a bird; the model draws it stage by stage. "
                    f"Words the model does not know are dropped (the message names them).")
        with gr.Row():
            model = gr.Dropdown(labels, value=default, label="model", interactive=True, scale=3, elem_id="model")
            info = gr.Markdown(app.model_info(default))
        with gr.Tab("Generate"):
            with gr.Row():
                with gr.Column(scale=1):
                    caption = gr.Textbox(label="caption", value=first_examples[0], lines=2, elem_id="caption",
                                         max_length=app.limits.max_caption_chars)
                    examples = gr.Examples([[c] for c in first_examples], inputs=[caption], label="examples")
                    num_images = gr.Slider(1, app.limits.max_images, value=4, step=1, label="number of images",
                                           elem_id="num_images")
                    seed = gr.Number(0, precision=0, label="seed", minimum=0, maximum=app.limits.max_seed)
                    button = gr.Button("Generate", variant="primary", elem_id="generate")
                    message = gr.Textbox(label="message", lines=3, interactive=False, elem_id="message")
                with gr.Column(scale=2):
                    gallery = gr.Gallery(label="images (click one for its stages, attention and canvas)",
                                         columns=4, height="auto", format="png", elem_id="gallery")
                    with gr.Row():
                        stages = gr.Gallery(label="stages of the selected image", columns=3, fit_columns=False,
                                            height=300, format="png", elem_id="stages", scale=2)
                        canvas = gr.Image(label="DRAW canvas, step by step", type="filepath", height=300,
                                          elem_id="canvas", scale=1, visible=False, interactive=False)
            attention = gr.Image(label="word attention of the selected image (words x stages)", type="pil",
                                 format="png", elem_id="attention", visible=False, interactive=False)
            state = gr.State(None, time_to_live=1800)  # a session's last result, for clicks on its images
            outputs = [gallery, stages, attention, canvas, message, state]
            for trigger, api in ((button.click, {"api_name": "generate"}), (caption.submit, {"api_visibility": "private"})):
                trigger(on_generate, [caption, num_images, seed, model], outputs, **api).then(
                    show_details, [attention, canvas], [attention, canvas], api_visibility="private")
            gallery.select(on_select, [state], [stages, attention, canvas, message], api_visibility="private").then(
                show_details, [attention, canvas], [attention, canvas], api_visibility="private")
        with gr.Tab("Interpolate"):
            with gr.Row():
                with gr.Column(scale=1):
                    mode = gr.Radio(["captions", "seeds"], value="captions", label="between")
                    caption_a = gr.Textbox(label="caption A (and the caption of a seed interpolation)",
                                           value=first_examples[0], max_length=app.limits.max_caption_chars)
                    caption_b = gr.Textbox(label="caption B", value=first_examples[min(1, len(first_examples) - 1)],
                                           max_length=app.limits.max_caption_chars)
                    seed_a = gr.Number(0, precision=0, label="seed A (the noise of a caption interpolation)")
                    seed_b = gr.Number(1, precision=0, label="seed B")
                    steps = gr.Slider(2, app.limits.max_steps, value=8, step=1, label="steps")
                    run = gr.Button("Interpolate", variant="primary", elem_id="interpolate")
                with gr.Column(scale=2):
                    strip = gr.Image(label="interpolation", type="pil", format="png", elem_id="strip")
                    strip_message = gr.Textbox(label="message", lines=2, interactive=False)
            run.click(on_interpolate, [mode, caption_a, caption_b, seed_a, seed_b, steps, model],
                      [strip, strip_message], api_name="interpolate")
        model.change(on_model, [model], [examples.dataset, info], api_visibility="private")
    page.queue(max_size=queue_size, default_concurrency_limit=concurrency)
    return page
