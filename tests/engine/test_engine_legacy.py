"""Version-1 engine files (the ``.hybe`` container) are still read, and refused when damaged."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from forge import encode_v1, restamp

from hybnn.engine import format as fmt
from hybnn.engine import legacy_hybe, load
from hybnn.errors import ArtifactError

DATA = Path(__file__).parent / "data"
FIXTURES = ["bnn_head_v1.hybe", "binary_cnn_v1.hybe"]


@pytest.mark.parametrize("name", FIXTURES)
def test_real_version_1_files_run_like_the_torch_model(name):
    model = load(DATA / name)
    assert model.header["format_version"] == 1
    meta = model.metadata
    x = np.random.default_rng(meta["probe_seed"]).standard_normal((8, *model.input_shape))
    want = np.array(meta["probe_logits"], np.float32)
    np.testing.assert_array_equal(model.logits(x.astype(np.float32)), want)
    assert model.fingerprint == hashlib.sha256((DATA / name).read_bytes()[56:]).hexdigest()


@pytest.mark.parametrize("name", FIXTURES)
def test_a_version_1_file_and_its_re_export_give_the_same_model(tmp_path, name):
    header, arrays, _ = fmt.read(DATA / name)
    fmt.write(tmp_path / "new", header | {"format_version": fmt.FORMAT_VERSION}, arrays)
    old, new = load(DATA / name), load(tmp_path / "new")
    x = np.random.default_rng(1).standard_normal((16, *old.input_shape)).astype(np.float32)
    np.testing.assert_array_equal(old.logits(x), new.logits(x))
    assert (tmp_path / "new").read_bytes()[:8] != legacy_hybe.MAGIC


def _header_and_payload(data: bytes) -> tuple[dict, int]:
    _, _, hlen, _, _ = legacy_hybe.PREAMBLE.unpack_from(data)
    return json.loads(data[56 : 56 + hlen]), hlen


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b[:-1], "truncated"),
        (lambda b: b[:30], "truncated"),
        (lambda b: b + b"\0", "trailing"),
        (lambda b: b[:8] + struct.pack("<I", 2) + b[12:], "container version 2"),
        (lambda b: b[:-5] + bytes([b[-5] ^ 1]) + b[-4:], "checksum"),
        (lambda b: b[:60] + bytes([b[60] ^ 0x20]) + b[61:], "checksum"),
        (lambda b: b[:12] + struct.pack("<I", 1 << 30) + b[16:], "implausible header"),
        (lambda b: restamp(b[:16] + struct.pack("<Q", 1 << 62) + b[24:]), "truncated"),
    ],
)
def test_damaged_version_1_files_are_refused(tmp_path, mutate, message):
    path = tmp_path / "damaged.hybe"
    path.write_bytes(mutate((DATA / FIXTURES[0]).read_bytes()))
    with pytest.raises(ArtifactError, match=message):
        load(path)


def _forge_table(data: bytes, edit) -> bytes:
    """Edit a version-1 array table; same payload, a valid checksum."""
    header, hlen = _header_and_payload(data)
    edit(header["arrays"])
    payload = data[56 + hlen + legacy_hybe._pad(56 + hlen) :]
    head = json.dumps(header).encode()
    body = head + b"\0" * legacy_hybe._pad(56 + len(head)) + payload
    return restamp(legacy_hybe.PREAMBLE.pack(legacy_hybe.MAGIC, 1, len(head), len(payload),
                                             bytes(32)) + body)


@pytest.mark.parametrize(
    "edit",
    [
        lambda t: t["layers.0.weights"].update(shape=[2**32, 2**32], nbytes=0),  # int64 wraps to 0
        lambda t: t["layers.0.weights"].update(shape=[2**40, 2**40]),
        lambda t: t["layers.0.weights"].update(offset=1 << 62),
        lambda t: t["layers.0.weights"].update(offset=3),
        lambda t: t["layers.0.weights"].update(nbytes=-8, shape=[-1]),
        lambda t: t["layers.0.weights"].update(dtype="<f8"),
        lambda t: t["layers.0.weights"].update(shape="xy"),
        lambda t: t["layers.0.weights"].update(offset=True),
        lambda t: t.update({"layers.0.weights": [1, 2]}),
    ],
)
def test_forged_version_1_array_tables_with_a_valid_checksum_are_refused(tmp_path, edit):
    path = tmp_path / "forged.hybe"
    path.write_bytes(_forge_table((DATA / FIXTURES[0]).read_bytes(), edit))
    with pytest.raises(ArtifactError):
        load(path)


def test_forged_version_1_conv_geometry_with_a_valid_checksum_is_refused(tmp_path):
    header, arrays, _ = fmt.read(DATA / FIXTURES[1])
    conv = header["layers"][0]
    conv.update(in_height=1 << 23, in_width=1 << 23, stride=1 << 23, in_channels=(1 << 24) - 1)
    header["input"].update(height=1 << 23, width=1 << 23, channels=(1 << 24) - 1)
    path = tmp_path / "forged.hybe"
    path.write_bytes(encode_v1(header, arrays))
    with pytest.raises(ArtifactError, match="more than the limit"):
        load(path)
