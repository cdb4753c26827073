"""A BNN head trained on the tiny encoder's codes of digits, and bundles of the two."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def head_dir(tmp_path_factory, tiny_encoder):
    """A 10-class BNN head trained for 3 epochs on digits codes of ``tiny_encoder``."""
    from hybnn.data import load_split
    from hybnn.pipeline.config import TrainConfig
    from hybnn.pipeline.extract import encode_to_codes
    from hybnn.pipeline.fit import train_head

    _, encoder, _ = tiny_encoder
    out = tmp_path_factory.mktemp("head")
    train = encode_to_codes(encoder, load_split("digits", "all", "train"),
                            {"task": "all", "split": "train"})
    train_head(train, None, TrainConfig(epochs=3, seed=0), [64], out=out, progress=False)
    return out


@pytest.fixture(scope="module")
def bundle_fp32(tmp_path_factory, head_dir, tiny_encoder):
    """(path, header) of the fp32 bundle of ``head_dir`` and the tiny encoder."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from hybnn.bundle.export import export_bundle

    path = tmp_path_factory.mktemp("bundle") / "model.bundle"
    return path, export_bundle(head_dir, tiny_encoder[0], path)


@pytest.fixture(scope="module")
def test_split():
    from hybnn.data import load_split

    return load_split("digits", "all", "test")
