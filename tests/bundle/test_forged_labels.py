"""A label space from an artifact is printed as it is, so a forged one (valid checksum) is
refused at load: bundle, engine file, model directory and code store alike."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest

from hybnn.bundle import format as fmt
from hybnn.cli import main
from hybnn.engine import format as engine_fmt
from hybnn.errors import ArtifactError

pytest.importorskip("onnxruntime")

NAMES = [str(d) for d in range(10)]


def space(labels=None, names=None, at=None, name=None):
    """The digits' label space, with ``names[at]`` replaced by ``name``."""
    names = list(NAMES if names is None else names)
    if at is not None:
        names[at] = name
    return {"labels": list(range(10)) if labels is None else labels, "names": names}


HOSTILE = [
    ("newline forging a result line", space(at=7, name="7 (p=1.000)\nfake.png[9]: 7"),
     "printable"),
    ("ANSI clear screen", space(at=2, name="\x1b[2J"), r"class name '\\x1b\[2J'"),
    ("ANSI colour", space(at=2, name="\x1b[31mred"), "printable"),
    ("bidi override", space(at=2, name="\u202egnp.exe"), "printable"),
    ("1000 characters", space(at=0, name="x" * 1000), r"\(1000 characters\)"),
    ("empty name", space(at=0, name=""), r"\(0 characters\)"),
    ("name not a string", space(at=0, name=5), "class names must be strings"),
    ("duplicate labels", space(labels=[0, 1, 2, 3, 4, 5, 6, 7, 8, 8]), "not distinct"),
    ("negative label", space(labels=[-1, 1, 2, 3, 4, 5, 6, 7, 8, 9]), "class label -1"),
    ("label 2^40", space(labels=[2**40, 1, 2, 3, 4, 5, 6, 7, 8, 9]), "class label 1099"),
    ("label true", space(labels=[True, 1, 2, 3, 4, 5, 6, 7, 8, 9]), "class label True"),
    ("label '3'", space(labels=["3", 1, 2, 3, 4, 5, 6, 7, 8, 9]), "class label '3'"),
    ("label 2.5", space(labels=[2.5, 1, 2, 3, 4, 5, 6, 7, 8, 9]), "class label 2.5"),
    ("labels a string", {"labels": "0123456789", "names": NAMES}, "lists 'labels' and"),
    ("11 names for 10 labels", space(names=[*NAMES, "10"]), "10 labels, 11 names"),
]
IDS = [case for case, _, _ in HOSTILE]


@pytest.fixture(scope="module")
def parts(bundle_fp32):
    return fmt.read(bundle_fp32[0])


def forged_bundle(tmp_path, parts, label_space):
    header = copy.deepcopy(parts.header)
    header["label_space"] = label_space
    raw = np.frombuffer(parts.onnx, dtype=np.uint8)
    path = tmp_path / "forged.bundle"
    path.write_bytes(engine_fmt.encode(header, {**parts.head_arrays, fmt.ONNX_ARRAY: raw},
                                       fmt.DTYPES))
    return path


def one_error_line(capsys, message):
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err and "\x1b" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("hybnn: error: ")
    assert "label space" in lines[0]
    import re

    assert re.search(message, lines[0]), lines[0]


@pytest.mark.parametrize(("case", "label_space", "message"), HOSTILE, ids=IDS)
def test_a_bundle_with_a_forged_label_space_is_refused(tmp_path, capsys, parts, case,
                                                       label_space, message):
    from hybnn import runtime

    path = forged_bundle(tmp_path, parts, label_space)
    with pytest.raises(ArtifactError, match=message):
        runtime.load(path)
    np.save(tmp_path / "x.npy", np.full((2, 1, 8, 8), 0.5, np.float32))
    assert main(["predict", "--model", str(path), str(tmp_path / "x.npy")]) == 2
    one_error_line(capsys, message)


@pytest.mark.parametrize(("case", "label_space", "message"), HOSTILE, ids=IDS)
def test_an_engine_file_with_a_forged_label_space_is_refused(tmp_path, parts, case,
                                                             label_space, message):
    from hybnn.engine import load

    header = copy.deepcopy(parts.head_header)
    header["metadata"]["source"]["label_space"] = label_space
    path = tmp_path / "forged.engine"
    path.write_bytes(engine_fmt.encode(header, parts.head_arrays, engine_fmt.DTYPES))
    with pytest.raises(ArtifactError, match=message):
        load(path)


@pytest.mark.parametrize(("case", "label_space", "message"), HOSTILE[:5], ids=IDS[:5])
def test_a_model_directory_with_a_forged_label_space_is_refused(tmp_path, capsys, head_dir,
                                                                tiny_encoder, case,
                                                                label_space, message):
    forged = tmp_path / "head"
    shutil.copytree(head_dir, forged)
    meta = json.loads((forged / "meta.json").read_text())
    meta["label_space"] = label_space  # meta.json is outside the weights' fingerprint
    (forged / "meta.json").write_text(json.dumps(meta))
    np.save(tmp_path / "x.npy", np.full((2, 1, 8, 8), 0.5, np.float32))
    assert main(["predict", "--model", str(forged), "--encoder", str(tiny_encoder[0]),
                 str(tmp_path / "x.npy")]) == 2
    one_error_line(capsys, message)
    assert main(["export", str(forged), "--encoder", str(tiny_encoder[0]), "--out",
                 str(tmp_path / "m.bundle")]) == 2
    one_error_line(capsys, message)
    assert not (tmp_path / "m.bundle").exists()


@pytest.mark.parametrize(("case", "label_space", "message"), HOSTILE[:5], ids=IDS[:5])
def test_a_code_store_with_a_forged_label_space_is_refused(tmp_path, capsys, case,
                                                           label_space, message):
    from hybnn.pipeline.codes import CodeStore

    rng = np.random.default_rng(0)
    store = CodeStore(np.zeros((20, 2), np.uint8), rng.integers(0, 10, 20), 16, "f" * 64,
                      {"num_classes": 10})
    store.meta["label_space"] = label_space  # forged after the store's own check
    path = store.save(tmp_path / "codes.safetensors")
    with pytest.raises(ArtifactError, match=message):
        CodeStore.load(path)
    assert main(["train", "--codes", str(path), "--epochs", "1", "--out",
                 str(tmp_path / "head"), "--no-progress"]) == 2
    one_error_line(capsys, message)
    assert not (tmp_path / "head").exists()
