"""`hybnn export --out FILE` replaces only an earlier export: never a code store, an image
or any other file that happens to sit at FILE."""

from __future__ import annotations

import numpy as np
import pytest
from engine_reference import randomize
from PIL import Image

from hybnn.cli import main
from hybnn.engine import format as fmt
from hybnn.engine import load
from hybnn.engine.legacy_hybe import MAGIC
from hybnn.errors import ArtifactError
from hybnn.models import BNNHead
from hybnn.models.io import save_model
from hybnn.pipeline.codes import CodeStore, pack_code_bits


@pytest.fixture
def head_dir(tmp_path):
    save_model(tmp_path / "head", randomize(BNNHead(16, 3, hidden=(8,)), seed=0))
    return tmp_path / "head"


def code_store(path):
    bits = np.random.default_rng(0).integers(0, 2, (5, 16))
    CodeStore(pack_code_bits(bits), np.arange(5) % 3, 16, "f" * 64).save(path)


def png(path):
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(path, "PNG")


def legacy(path):
    path.write_bytes(MAGIC + b"\0" * 64)


@pytest.mark.parametrize(("make", "what"), [
    (code_store, "a hybnn 'codes' file"),
    (png, "not a hybnn artifact"),
    (lambda p: p.write_bytes(b""), "not a hybnn artifact"),
    (lambda p: p.mkdir(), "a directory"),
], ids=["code-store", "png", "empty", "directory"])
def test_export_refuses_to_replace_a_file_that_is_not_an_export(tmp_path, head_dir, capsys,
                                                                 make, what):
    out = tmp_path / "codes.safetensors"
    make(out)
    before = out.read_bytes() if out.is_file() else None
    assert main(["export", str(head_dir), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hybnn: error: refusing to overwrite") and what in err
    assert err.count("\n") == 1 and str(out) in err
    assert (out.read_bytes() if out.is_file() else None) == before
    if make is code_store:
        assert len(CodeStore.load(out)) == 5  # intact


def test_export_replaces_an_earlier_export(tmp_path, head_dir, capsys):
    out = tmp_path / "head.engine"
    assert main(["export", str(head_dir), "--out", str(out)]) == 0
    first = out.read_bytes()
    save_model(head_dir, randomize(BNNHead(16, 3, hidden=(8,)), seed=1))
    assert main(["export", str(head_dir), "--out", str(out)]) == 0
    assert out.read_bytes() != first and load(out).num_classes == 3
    legacy(out)  # a version-1 engine file is an earlier export too
    assert main(["export", str(head_dir), "--out", str(out)]) == 0
    assert load(out).num_classes == 3


def test_the_writers_check_the_target_too(tmp_path):
    header, arrays, _ = fmt.read(_engine(tmp_path))
    code_store(tmp_path / "c")
    with pytest.raises(ArtifactError, match="refusing to overwrite"):
        fmt.write(tmp_path / "c", header, arrays)
    fmt.require_replaceable(tmp_path / "absent", "bundle")
    fmt.require_replaceable(_engine(tmp_path), "bundle")  # an engine file may become a bundle


def _engine(tmp_path):
    from hybnn.engine import export_model

    path = tmp_path / "m.engine"
    if not path.exists():
        export_model(randomize(BNNHead(16, 3, hidden=()), seed=2), path)
    return path
