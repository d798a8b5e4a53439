"""The web demo's handlers (t2i/demo.py) called directly: discovery, loading once, limits, messages and outputs."""

from __future__ import annotations

import ast
import threading
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

import t2i.demo as demo
from demo_exports import WORDS_NUM, tiny_vocab, write_aligndraw_export, write_damsm_like, write_gan_export
from t2i.data.text import Vocabulary, tokenize
from t2i import validation as check
from t2i.errors import CaptionError, CheckpointError, T2IError
from t2i.pipeline import Text2ImagePipeline
from t2i.visualize import to_pil


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    return {"root": root,
            "attngan": write_gan_export(root / "runs" / "tiny" / "attngan" / "export", ["init", "attention"]),
            "draw": write_gan_export(root / "runs" / "tiny" / "attngan_draw" / "export", ["init", "draw"], seed=1),
            "aligndraw": write_aligndraw_export(root / "pretrained" / "tiny-aligndraw")}


def make_app(exports, tmp_path, label="attngan", **limits):
    models = demo.ModelCache({label: exports[label]})
    return demo.DemoApp(models, tmp_path / "work", demo.Limits(**limits))


# ------------------------------------------------------------------ discovery and loading
def test_find_exports_offers_runs_pretrained_and_checkpoint_only(exports, tmp_path, monkeypatch):
    root = exports["root"]
    write_damsm_like(root / "runs" / "tiny" / "damsm" / "export")
    (root / "pretrained" / "notes").mkdir(exist_ok=True)  # a folder without model.json
    found = demo.find_exports(root / "runs", root / "pretrained", base=root)
    assert set(found) == {"runs/tiny/attngan", "runs/tiny/attngan_draw", "pretrained/tiny-aligndraw"}
    assert list(found)[0] == "pretrained/tiny-aligndraw"  # the shipped models come before the runs
    assert found["runs/tiny/attngan"] == exports["attngan"].resolve()
    # checkpoint= is offered first (the default), given as the run folder or the export itself
    found = demo.find_exports(root / "runs", root / "pretrained", checkpoint=exports["draw"].parent, base=root)
    assert list(found)[0] == "runs/tiny/attngan_draw" and len(found) == 3
    with pytest.raises(CheckpointError, match="does not exist"):
        demo.find_exports(root / "runs", root / "pretrained", checkpoint=root / "nowhere")
    with pytest.raises(CheckpointError, match="holds a 'damsm' model, which cannot generate"):
        demo.find_exports(root / "runs", root / "pretrained", checkpoint=root / "runs" / "tiny" / "damsm")
    with pytest.raises(CheckpointError, match="no exported model under"):
        demo.find_exports(tmp_path / "runs", tmp_path / "pretrained")
    # the repository's pretrained/ by default, its default model first
    shipped = tmp_path / "shipped"
    for name in ("a-first", demo.DEFAULT_PRETRAINED):
        write_gan_export(shipped / name)
    monkeypatch.setattr(demo, "PRETRAINED_DIR", shipped)
    assert list(demo.find_exports(tmp_path / "runs")) == [f"shipped/{demo.DEFAULT_PRETRAINED}", "shipped/a-first"]


def test_models_are_loaded_once_and_only_those_found(exports):
    calls = []

    def loader(path, **kw):
        calls.append(path)
        return Text2ImagePipeline.from_export(path, **kw)

    models = demo.ModelCache({"a": exports["attngan"], "d": exports["draw"]}, loader=loader)
    assert models.get() is models.get("a") is models.get("a")
    assert models.get("d") is models.get("d") and calls == [exports["attngan"], exports["draw"]] and models.loads == 2
    for bad in ("../../etc/passwd", str(exports["aligndraw"]), "runs/tiny/attngan"):
        with pytest.raises(CheckpointError, match="is not served here"):
            models.get(bad)
    assert models.loads == 2


# ------------------------------------------------------------------ generation
def test_generate_returns_the_images_the_cli_makes(exports, tmp_path):
    app = make_app(exports, tmp_path)
    result = app.generate("a bird with a green crown", 3, 7)
    pipe = app.models.get()
    reference = pipe(["a bird with a green crown"], num_images=3, seed=7)  # what tools/generate.py runs
    assert len(result.images) == 3 and all(im.size == (32, 32) for im in result.images)
    for image, tensor in zip(result.images, reference.images):
        assert image.tobytes() == to_pil(tensor).tobytes()
    assert result.labels == ["seed 7 #1", "seed 7 #2", "seed 7 #3"]
    assert result.message.startswith("3 images at 32 px in ") and result.notices == []
    other = app.generate("a bird with a green crown", 3, 8)
    assert other.images[0].tobytes() != result.images[0].tobytes()


def test_messages_for_bad_captions_are_the_cli_lines(exports, tmp_path):
    app = make_app(exports, tmp_path)
    pipe = app.models.get()
    for blank in ("", "   ", None, "\n"):
        with pytest.raises(CaptionError) as err:
            app.generate(blank, 1, 0)
        with pytest.raises(T2IError) as cli:
            check.caption(blank)  # what tools/generate.py prints for caption=""
        assert str(err.value) == str(cli.value) and str(err.value).startswith("give a caption")
    with pytest.raises(CaptionError, match="NUL"):
        app.generate("a red\x00 bird", 1, 0)
    assert app.generate("a red\nbird", 1, 0).output.words[0] == ["a", "red", "bird"]  # a line break is a space
    for caption in ("zebra giraffe", "!!!"):
        with pytest.raises(CaptionError) as err:
            app.generate(caption, 1, 0)
        with pytest.raises(CaptionError) as cli:
            pipe.encode_captions([caption])  # the message tools/generate.py prints after "error: "
        assert str(err.value) == str(cli.value) and "\n" not in str(err.value)
    assert "vocabulary" in str(err.value) or "no words" in str(err.value)


def test_unknown_words_and_long_captions_give_warnings(exports, tmp_path):
    app = make_app(exports, tmp_path)
    result = app.generate("a zebra bird with a green xylophone crown", 1, 0)
    assert result.notices == ["warning: unknown words dropped: zebra, xylophone"]
    long = "this bird has a green crown and red wings and a yellow belly and a black tail"
    known = [t for t in tokenize(long) if t in tiny_vocab()]
    result = app.generate(long, 1, 0)
    cut = " ".join(known[:WORDS_NUM])
    assert result.notices == [f'warning: the caption is cut at the model\'s {WORDS_NUM} words; it reads "{cut}" '
                              f"({len(known) - WORDS_NUM} more left out)"]
    assert result.output.words[0] == known[:WORDS_NUM]
    assert result.output.attn_maps[0].shape[1] == WORDS_NUM


def test_limits_on_images_seed_and_caption_length(exports, tmp_path):
    app = make_app(exports, tmp_path, max_caption_chars=40)
    assert len(app.generate("a green crown", 16, 0).images) == 16
    assert len(app.generate("a green crown", "2", 0.0).images) == 2  # what a JSON client may send
    for n, message in ((17, "between 1 and 16, got 17"), (0, "between 1 and 16, got 0"), (2.5, "whole number"),
                       ("many", "whole number"), (float("nan"), "whole number")):
        with pytest.raises(demo.LimitError, match=message):
            app.generate("a green crown", n, 0)
    with pytest.raises(demo.LimitError, match="seed must be between 0 and"):
        app.generate("a green crown", 1, -1)
    with pytest.raises(demo.LimitError, match="has 41 characters; at most 40"):
        app.generate("a" * 41, 1, 0)


def test_time_limit_stops_a_request_inside_the_model(exports, tmp_path):
    app = make_app(exports, tmp_path, time_limit_s=1e-9)
    with pytest.raises(demo.RequestTimeout, match="time limit of 1e-09 s"):
        app.generate("a green crown", 4, 0)
    demo.check_deadline()  # disarmed after the request
    app.limits = demo.Limits(time_limit_s=30)
    assert len(app.generate("a green crown", 4, 0).images) == 4  # the next request runs normally
    # a slow layer: the hook on the next module stops the request once the deadline has passed
    pipe = app.models.get()
    slow = pipe.generator.stages[0].register_forward_hook(lambda *a: time.sleep(0.3))
    try:
        app.limits = demo.Limits(time_limit_s=0.1)
        started = time.perf_counter()
        with pytest.raises(demo.RequestTimeout):
            app.generate("a green crown", 1, 0)
        assert time.perf_counter() - started < 2
    finally:
        slow.remove()


def test_one_generation_at_a_time_per_model_keeps_seeds_reproducible(exports, tmp_path):
    app = make_app(exports, tmp_path)
    alone = {seed: app.generate("a red bird with green wings", 4, seed).images for seed in range(4)}
    together = {}

    def work(seed):
        together[seed] = app.generate("a red bird with green wings", 4, seed).images

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for seed in range(4):
        assert [i.tobytes() for i in together[seed]] == [i.tobytes() for i in alone[seed]]


# ------------------------------------------------------------------ details: stages, attention, canvas
def test_details_show_stages_and_word_attention(exports, tmp_path):
    app = make_app(exports, tmp_path)
    result = app.generate("a bird with a green crown", 2, 0)
    details = app.details(result, 1)
    assert [label for _, label in details.stages] == ["stage 1: 16 px", "stage 2: 32 px"]
    assert [im.size for im, _ in details.stages] == [(16, 16), (32, 32)]
    words = result.output.words[1]
    assert words == ["a", "bird", "with", "a", "green", "crown"]
    assert details.attention.size == (96 * (len(words) + 1), 96 + 14)  # words x one attention stage
    assert details.canvas_gif is None
    with pytest.raises(demo.LimitError, match="between 0 and 1"):
        app.details(result, 2)
    assert app.details(None).stages == []


def test_draw_stage_and_aligndraw_canvases_are_animated_gifs_in_the_workdir(exports, tmp_path):
    for label, frames, size in (("draw", 4, 32 * 8), ("aligndraw", 3, 8 * 32)):
        app = make_app(exports, tmp_path, label=label)
        result = app.generate("a bird with a green crown", 2, 0)
        details = app.details(result, 0)
        gif = details.canvas_gif
        assert gif.parent == tmp_path / "work" and gif.suffix == ".gif"
        with Image.open(gif) as im:
            assert im.is_animated and im.n_frames == frames and im.size == (size, size)
        if label == "aligndraw":
            assert details.attention is None and len(details.stages) == 1


def test_old_canvas_files_are_removed(exports, tmp_path):
    app = make_app(exports, tmp_path, label="draw", max_files=3)
    result = app.generate("a green crown", 1, 0)
    for _ in range(6):
        app.details(result, 0)
        time.sleep(0.01)
    assert len(list((tmp_path / "work").iterdir())) == 3


# ------------------------------------------------------------------ interpolation and examples
def test_interpolation_between_captions_and_seeds(exports, tmp_path):
    app = make_app(exports, tmp_path)
    strip, message = app.interpolate("captions", "a red bird", "a green zebra bird", 0, 1, 5)
    assert strip.size == (5 * 128, 128 + 40) and message.startswith("5 steps between the two captions")
    assert "warning: unknown words dropped: zebra" in message
    strip, message = app.interpolate("seeds", "a red bird", "", 3, 4, 10)
    assert strip.size == (8 * 128, 2 * (128 + 40)) and "seeds 3 and 4" in message
    with pytest.raises(demo.LimitError, match="steps must be between 2 and 16"):
        app.interpolate("seeds", "a red bird", "", 0, 1, 17)
    with pytest.raises(demo.LimitError, match="not known"):
        app.interpolate("words", "a red bird", "", 0, 1, 4)
    with pytest.raises(CaptionError):
        app.interpolate("captions", "a red bird", "  ", 0, 1, 4)
    with pytest.raises(CheckpointError, match="alignDRAW"):
        make_app(exports, tmp_path, label="aligndraw").interpolate("seeds", "a red bird", "", 0, 1, 4)


def test_example_captions_use_only_the_models_words():
    vocab = tiny_vocab()
    examples = demo.example_captions(vocab, 6)
    assert len(examples) == 6 and len(set(examples)) == 6
    assert all(t in vocab for e in examples for t in tokenize(e))
    assert any("," in e and "crown" in e for e in examples)
    coco = Vocabulary(["a", "bus", "parked", "near", "house", "street"], counts={"a": 9, "bus": 5, "street": 4})
    examples = demo.example_captions(coco, 6)
    assert examples and all(t in coco for e in examples for t in tokenize(e))


def test_default_concurrency_is_one_on_cpu():
    assert demo.default_concurrency("cpu") == 1 and demo.default_concurrency(torch.device("cuda", 0)) == 2


def test_gradio_is_imported_only_by_build_page():
    """The library works without the optional extra: only build_page imports Gradio."""
    tree = ast.parse(Path(demo.__file__).read_text())
    where = {}
    for func in ast.walk(tree):
        if isinstance(func, ast.FunctionDef):
            for node in ast.walk(func):
                if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "gradio" for a in node.names):
                    where.setdefault(func.name, node)
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))
           and "gradio" in ast.dump(n)]
    assert list(where) == ["build_page"] and top == []


def test_page_is_built_with_the_generation_api(exports, tmp_path):
    app = make_app(exports, tmp_path)
    page = demo.build_page(app, concurrency=1, queue_size=4)
    api = {dep.api_name for dep in page.fns.values() if dep.api_name}
    assert {"generate", "interpolate"} <= api
    assert page._queue.max_size == 4 and page._queue.default_concurrency_limit == 1
