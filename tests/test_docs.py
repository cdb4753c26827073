"""The docs pages' Python examples run, and the site builds in strict mode.

Every ```python block of docs/*.md runs as it is written, unless the nearest non-blank
line above its fence is an HTML comment ``<!-- skip: REASON -->`` (invisible on GitHub
and on the site): such a block needs what a test cannot give it in seconds (minutes of
training, a cross toolchain), and REASON says what; the test reports it as skipped with
that reason.

A page's prose often names what its example works on ("a trained head", "the codes as
±1"): :data:`PAGES` gives each page those files and names, built once from scikit-learn's
digits with tiny epochs, and checks afterwards what the page says the example does. A block
runs in a fresh directory holding the page's files, with the page's names defined. A page
with a runnable block and no entry in :data:`PAGES` runs with nothing given.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SKIP = re.compile(r"<!--\s*skip:\s*(.*?)\s*-->")


@dataclass(frozen=True)
class Block:
    page: str
    line: int  # of the opening fence, 1-based
    code: str
    skip: str | None  # the reason, for a block marked not runnable

    @property
    def name(self) -> str:
        return f"{self.page}:{self.line}"


def python_blocks(page: str, text: str) -> list[Block]:
    """The ```python blocks of ``text``, each with the skip reason written above it."""
    blocks, lines, i = [], text.split("\n"), 0
    while i < len(lines):
        if lines[i].strip() != "```python":
            i += 1
            continue
        start, above = i, next((s for s in reversed(lines[:i]) if s.strip()), "")
        end = next(k for k in range(i + 1, len(lines)) if lines[k].strip() == "```")
        mark = SKIP.fullmatch(above.strip())
        blocks.append(Block(page, start + 1, "\n".join(lines[start + 1:end]) + "\n",
                            mark.group(1) if mark else None))
        i = end + 1
    return blocks


def all_blocks() -> list[Block]:
    return [b for p in sorted(DOCS.glob("*.md")) for b in python_blocks(p.name, p.read_text())]


# ---- what each page's examples are given, and what they must have done -------------------

@dataclass
class Digits:
    """Artifacts of a tiny HyBNN on digits 2 and 3 (8x8 images), shared by every page."""

    root: Path
    images: np.ndarray  # float32 (N, 1, 8, 8) in [0, 1]
    labels: np.ndarray  # 0 for a 2, 1 for a 3
    head: Any  # hybnn.Head
    codes: np.ndarray  # bool (N, 200)


@dataclass
class Page:
    files: Callable[[Digits], dict[str, Path]] = lambda d: {}  # name in the block's cwd -> file
    names: Callable[[Digits], dict[str, Any]] = lambda d: {}
    check: Callable[[Digits, dict[str, Any], Path, str], None] = lambda d, ns, cwd, out: None


def _store(d: Digits, rows: slice) -> Any:
    from hybnn.data.labels import LabelSpace
    from hybnn.pipeline.codes import CodeStore, pack_code_bits

    space = LabelSpace((2, 3), ("2", "3"))
    return CodeStore(pack_code_bits(d.codes[rows]), d.labels[rows], 200, d.head.encoder_fingerprint,
                     {"num_classes": 2, "label_space": space.to_json()})


def _check_deploy(d: Digits, ns: dict[str, Any], cwd: Path, out: str) -> None:
    classes, shown = ns["classes"], d.images[:8]  # images.npy holds the first 8
    assert np.array_equal(classes, d.head.predictions(d.codes[:8]).indices), "bundle != torch"
    assert out == f"{[('2', '3')[c] for c in classes]}\n"  # the names the head was fitted with
    assert len(shown) == len(classes)


def _check_embedded(d: Digits, ns: dict[str, Any], cwd: Path, out: str) -> None:
    assert "int head_predict(" in (cwd / "firmware/model/head.h").read_text()
    assert (cwd / "firmware/model/head.c").stat().st_size > 0


def _check_engine(d: Digits, ns: dict[str, Any], cwd: Path, out: str) -> None:
    if "graph" in ns.get("header", {}):  # the ResNet example asserts its own classes
        assert "'bconv2d'" in out and (cwd / "resnet.engine").is_file()
        return
    engine, x = ns["engine"], ns["codes_pm1"]
    torch_classes = d.head.predictions(d.codes).indices
    assert np.array_equal(engine.predict(x), torch_classes)  # "predictions agree"
    assert np.array_equal(engine.predict_packed(np.packbits(d.codes, axis=1)), torch_classes)
    hidden, logits = engine.accumulators(x)
    assert hidden.shape == (len(x), 128) and logits.shape == (len(x), 2)


def _check_fully_binary(d: Digits, ns: dict[str, Any], cwd: Path, out: str) -> None:
    classes = ns["net"].predict(d.images)
    assert classes.dtype == np.int64 and classes.shape == (len(d.images),)


def _check_rebnn(d: Digits, ns: dict[str, Any], cwd: Path, out: str) -> None:
    history, epochs = ns["history"], ns["config"].epochs
    assert len(history.series("flip_ratio/net.0")) == epochs
    assert len(history.series("rebnn_gamma")) == epochs


PAGES: dict[str, Page] = {
    "deploy.md": Page(
        files=lambda d: {"model.bundle": d.root / "model.bundle",
                         "images.npy": d.root / "images.npy"},
        check=_check_deploy),
    "embedded.md": Page(files=lambda d: {"runs/head": d.root / "head"}, check=_check_embedded),
    "engine.md": Page(
        files=lambda d: {"runs/bnn": d.root / "head"},
        names=lambda d: {"np": np, "head": d.head.model, "bits": d.codes,
                         "codes_pm1": np.where(d.codes, 1, -1).astype(np.float32)},
        check=_check_engine),
    "fully-binary.md": Page(files=lambda d: {"2v3.engine": d.root / "2v3.engine"},
                            names=lambda d: {"images": d.images}, check=_check_fully_binary),
    "rebnn.md": Page(
        names=lambda d: {"train_codes": _store(d, slice(0, 300)),
                         "test_codes": _store(d, slice(300, None)),
                         "config": replace(d.head.config, epochs=2)},
        check=_check_rebnn),
}


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Digits:
    """A VAE encoder, a head, its bundle and a fully binary engine file, in ~20 s."""
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits

    import hybnn
    from hybnn.encoders.vae import VaeEncoder
    from hybnn.pipeline.config import DistillConfig
    from hybnn.pipeline.distill import distill

    root = tmp_path_factory.mktemp("docs-digits")
    x, y = load_digits(return_X_y=True)
    x = (x.reshape(-1, 1, 8, 8) / 16).astype(np.float32)
    enc = hybnn.Encoder.pretrain(x[:600], root / "encoder", epochs=1)
    pair = np.isin(y, [2, 3])
    images, labels = x[pair], (y[pair] == 3).astype(np.int64)
    codes = enc.encode(images)
    head = hybnn.Head(epochs=3).fit(codes, y[pair], encoder=enc)
    head.save(root / "head")
    hybnn.Model(enc, head).export(root / "model.bundle")
    np.save(root / "images.npy", images[:8])
    assert isinstance(enc.encoder, VaeEncoder)
    distill(enc.encoder, x[:600], root / "binary-encoder", DistillConfig(epochs=1, width=8),
            {"source": "digits"}, progress=False)
    binary = hybnn.Encoder.load(root / "binary-encoder")
    binary_head = hybnn.Head(epochs=3).fit(binary.encode(images), y[pair], encoder=binary)
    hybnn.Model(binary, binary_head).export(root / "2v3.engine")
    return Digits(root, images, labels, head, codes)


# ---- the tests ---------------------------------------------------------------------------

def test_the_skip_mark_is_read_from_the_line_above_the_fence():
    text = ("Intro.\n\n```python\nx = 1\n```\n\n<!-- skip: minutes of training -->\n\n"
            "```python\ny = 2\n```\n\n```bash\nls\n```\n")
    first, second = python_blocks("p.md", text)
    assert (first.line, first.code, first.skip) == (3, "x = 1\n", None)
    assert (second.line, second.code, second.skip) == (9, "y = 2\n", "minutes of training")


def test_the_docs_have_runnable_examples_and_every_skip_gives_a_reason():
    blocks = all_blocks()
    assert any(b.skip is None for b in blocks)
    assert all(b.skip for b in blocks if b.skip is not None), "<!-- skip: --> needs a reason"
    assert set(PAGES) <= {b.page for b in blocks}, "an entry in PAGES for a page without code"


@pytest.mark.parametrize("block", all_blocks(), ids=lambda b: b.name)
def test_a_docs_python_block_runs(block: Block, request, tmp_path, capsys):
    if block.skip is not None:
        pytest.skip(f"marked not runnable: {block.skip}")
    page = PAGES.get(block.page, Page())
    digits: Any = request.getfixturevalue("digits") if block.page in PAGES else None
    for name, source in page.files(digits).items():
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copyfile)(source, target)
    namespace = {"__name__": "__main__", **page.names(digits)}
    capsys.readouterr()
    cwd = os.getcwd()
    os.chdir(tmp_path)  # whatever the example writes lands here
    try:
        exec(compile(block.code, f"docs/{block.name}", "exec"), namespace)
    finally:
        os.chdir(cwd)
    page.check(digits, namespace, tmp_path, capsys.readouterr().out)


def test_the_site_builds_in_strict_mode(tmp_path):
    missing = [m for m in ("mkdocs", "mkdocstrings", "mkdocstrings_handlers", "material")
               if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"the docs packages are not installed ({', '.join(missing)}): "
                    "pip install -e '.[dev]'")
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                          str(tmp_path / "site")], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert run.returncode == 0, run.stderr[-4000:]
    assert (tmp_path / "site/reference/hybnn/index.html").read_text().count("hybnn.Head") > 1
