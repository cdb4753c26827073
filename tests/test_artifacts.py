"""Artifact files: atomic writes, fingerprints, and validated safetensors + JSON bundles."""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import signal
import stat
import subprocess
import sys
import time

import pytest
import torch

from blocking import deadline
from hybnn import __version__
from hybnn.artifacts import (
    FORMAT_VERSION,
    MAX_META_BYTES,
    META_NAME,
    WEIGHTS_NAME,
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    load_artifact,
    read_json,
    save_artifact,
    sha256_file,
)
from hybnn.errors import ArtifactError, HybnnError

# ------------------------------------------------------------------------------- atomic write


def test_atomic_write_creates_parents_and_returns_the_path(tmp_path):
    target = tmp_path / "a" / "b" / "file.bin"
    assert atomic_write_bytes(target, b"abc") == target
    assert target.read_bytes() == b"abc"


def test_atomic_write_replaces_an_existing_file(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    atomic_write(target, lambda p: p.write_text("new"))
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


@pytest.mark.parametrize(
    ("exc", "raised"),
    [(RuntimeError("boom"), RuntimeError),
     (OSError(28, "No space left on device"), ArtifactError),  # OS errors become one message
     (KeyboardInterrupt(), KeyboardInterrupt)],
    ids=["error", "oserror", "interrupt"],
)
def test_failed_writer_leaves_the_old_file_and_no_temporary(tmp_path, exc, raised):
    target = tmp_path / "model.json"
    target.write_text('{"good": true}')

    def writer(p):
        p.write_text('{"half')
        raise exc

    with pytest.raises(raised):
        atomic_write(target, writer)
    assert target.read_text() == '{"good": true}'
    assert [p.name for p in tmp_path.iterdir()] == ["model.json"]


def test_os_error_of_the_writer_names_the_target_not_the_temporary(tmp_path):
    def writer(p):
        raise OSError(28, "No space left on device", str(p))

    with pytest.raises(ArtifactError, match=r"cannot write .*codes\.bin: No space left"):
        atomic_write(tmp_path / "codes.bin", writer)


def test_path_under_a_regular_file_is_an_artifact_error(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("I am a file")
    with pytest.raises(ArtifactError, match="cannot write"):
        atomic_write_bytes(blocker / "sub" / "out.bin", b"x")
    with pytest.raises(ArtifactError, match="cannot write"):
        save_artifact(blocker / "model", "model", {"w": torch.zeros(2)}, {})
    assert blocker.read_text() == "I am a file"


def test_target_that_is_a_directory_is_an_artifact_error(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("keep")
    with pytest.raises(ArtifactError, match=r"cannot write .*out"):
        atomic_write_bytes(tmp_path / "out", b"x")
    assert (tmp_path / "out" / "keep.txt").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_write_json_is_readable_json_with_newline(tmp_path):
    path = atomic_write_json(tmp_path / "m.json", {"b": [1, 2], "a": "é"})
    text = path.read_text()
    assert text.endswith("\n") and json.loads(text) == {"b": [1, 2], "a": "é"}
    assert read_json(path, "meta") == {"b": [1, 2], "a": "é"}


def test_sha256_file_is_the_sha256_of_the_bytes(tmp_path):
    data = bytes(range(256)) * 5000  # more than one 1 MiB read block
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------- read_json


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "meta not found"), ("{not json", "not valid JSON"), ("[1, 2]", "JSON object"),
     (b"\xff\xfe\x00", "not valid JSON"), ("", "not valid JSON")],
    ids=["missing", "syntax", "list", "binary", "empty"],
)
def test_read_json_errors_are_artifact_errors(tmp_path, content, message):
    path = tmp_path / "m.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(ArtifactError, match=message):
        read_json(path, "meta")


# ----------------------------------------------------------------------------------- bundles


TENSORS = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([1, 2], dtype=torch.int64)}


def test_bundle_roundtrip_and_metadata(tmp_path):
    meta = save_artifact(tmp_path / "art", "thing", TENSORS, {"size": 3}, {"note": "hi"})
    tensors, loaded = load_artifact(tmp_path / "art", "thing")

    assert set(tensors) == {"w", "b"}
    for k, v in TENSORS.items():
        assert torch.equal(tensors[k], v) and tensors[k].dtype == v.dtype
    assert loaded == meta
    assert meta["kind"] == "thing" and meta["format_version"] == FORMAT_VERSION
    assert meta["hybnn_version"] == __version__
    assert meta["config"] == {"size": 3} and meta["note"] == "hi"
    assert meta["fingerprint"] == sha256_file(tmp_path / "art" / WEIGHTS_NAME)
    assert sorted(p.name for p in (tmp_path / "art").iterdir()) == sorted([WEIGHTS_NAME, META_NAME])


def test_bundle_fingerprint_is_stable_for_the_same_tensors(tmp_path):
    a = save_artifact(tmp_path / "a", "thing", TENSORS, {})
    b = save_artifact(tmp_path / "b", "thing", dict(reversed(TENSORS.items())), {})
    assert a["fingerprint"] == b["fingerprint"]


def test_bundle_saves_non_contiguous_and_grad_tensors(tmp_path):
    w = torch.randn(3, 4, requires_grad=True)
    save_artifact(tmp_path / "a", "thing", {"wt": w.t()}, {})
    tensors, _ = load_artifact(tmp_path / "a", "thing")
    assert torch.equal(tensors["wt"], w.detach().t())


def edit_meta(directory, **changes):
    path = directory / META_NAME
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))


@pytest.fixture
def bundle(tmp_path):
    save_artifact(tmp_path / "art", "thing", TENSORS, {})
    return tmp_path / "art"


def test_load_artifact_missing_directory(tmp_path):
    with pytest.raises(ArtifactError, match="thing artifact not found"):
        load_artifact(tmp_path / "absent", "thing")


def test_load_artifact_wrong_kind(bundle):
    with pytest.raises(ArtifactError, match="holds a 'thing' artifact, expected 'encoder'"):
        load_artifact(bundle, "encoder")


@pytest.mark.parametrize("version", [FORMAT_VERSION + 1, 0, None, "1"])
def test_load_artifact_unsupported_format_version(bundle, version):
    edit_meta(bundle, format_version=version)
    with pytest.raises(ArtifactError, match=r"format version .* is not supported"):
        load_artifact(bundle, "thing")


def test_load_artifact_tampered_weights(bundle):
    weights = bundle / WEIGHTS_NAME
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0x01  # one bit of one tensor value
    weights.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="fingerprint"):
        load_artifact(bundle, "thing")


def test_load_artifact_missing_weights(bundle):
    (bundle / WEIGHTS_NAME).unlink()
    with pytest.raises(ArtifactError, match="weights missing"):
        load_artifact(bundle, "thing")


def test_load_artifact_corrupt_meta(bundle):
    (bundle / META_NAME).write_text('{"kind": "thing", ')
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_artifact(bundle, "thing")


def test_load_artifact_unreadable_weights_with_matching_fingerprint(bundle):
    weights = bundle / WEIGHTS_NAME
    weights.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken!")
    edit_meta(bundle, fingerprint=sha256_file(weights))
    with pytest.raises(ArtifactError, match="cannot read"):
        load_artifact(bundle, "thing")


def test_artifact_errors_are_hybnn_errors():
    assert issubclass(ArtifactError, HybnnError)


# ------------------------------------------------------------- what a loader opens and reads


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")
@pytest.mark.parametrize("name", [META_NAME, WEIGHTS_NAME])
def test_a_fifo_in_an_artifact_is_refused_at_once(bundle, name):
    (bundle / name).unlink()
    os.mkfifo(bundle / name)
    with deadline(), pytest.raises(ArtifactError, match="not a regular file") as caught:
        load_artifact(bundle, "thing")
    assert str(bundle / name) in str(caught.value)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")
def test_a_fifo_as_json_metadata_is_refused_at_once(tmp_path):
    os.mkfifo(tmp_path / "m.json")
    with deadline(), pytest.raises(ArtifactError, match=r"m\.json: it is not a regular file"):
        read_json(tmp_path / "m.json", "meta")


def _load_checkpoint(path):
    from hybnn.pipeline.checkpoint import load_checkpoint

    model = torch.nn.Linear(2, 2)
    return load_checkpoint(path, model, torch.optim.SGD(model.parameters(), lr=0.1), "tag")


def _load_code_store(path):
    from hybnn.pipeline.codes import CodeStore

    return CodeStore.load(path)


def _load_engine_file(path):
    from hybnn.engine import format as engine_format

    return engine_format.read(path)


def _load_artifact_file(path):
    from hybnn.bundle import format as bundle_format

    return bundle_format.read(path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")
@pytest.mark.parametrize("load", [_load_checkpoint, _load_code_store, _load_engine_file,
                                  _load_artifact_file, sha256_file],
                         ids=["checkpoint", "code-store", "engine-file", "bundle-file", "sha256"])
def test_every_artifact_file_loader_refuses_a_fifo_at_once(tmp_path, load):
    fifo = tmp_path / "artifact"
    os.mkfifo(fifo)
    with deadline(), pytest.raises(ArtifactError, match="not a regular file") as caught:
        load(fifo)
    assert str(fifo) in str(caught.value)


@pytest.mark.parametrize("name", [META_NAME, WEIGHTS_NAME])
def test_a_directory_in_an_artifact_is_named_by_its_path(bundle, name):
    (bundle / name).unlink()
    (bundle / name).mkdir()
    with pytest.raises(ArtifactError, match=rf"{re.escape(str(bundle / name))}: it is a "
                                            "directory"):
        load_artifact(bundle, "thing")


def test_metadata_above_its_cap_is_refused_before_it_is_read(bundle):
    edit_meta(bundle, padding="x" * (2 << 20))  # 2 MiB: a valid JSON object, too large
    with pytest.raises(ArtifactError, match=r"meta\.json has 2,09\d,\d{3} bytes, more than the "
                                            r"limit of 1,048,576"):
        load_artifact(bundle, "thing")
    with pytest.raises(ArtifactError, match="more than the limit"):
        read_json(bundle / META_NAME, "meta")
    assert MAX_META_BYTES == 1 << 20


def test_every_file_of_a_saved_artifact_is_owner_only(tmp_path):
    previous = os.umask(0o022)
    try:
        save_artifact(tmp_path / "art", "thing", TENSORS, {})
        save_artifact(tmp_path / "art", "thing", TENSORS, {})  # and when replaced
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "art").iterdir()}
    assert modes == {META_NAME: 0o600, WEIGHTS_NAME: 0o600}


# --------------------------------------------------------- staging left by a killed save


def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def staging(tmp_path, name, pid=None):
    tag = f"{pid}-{secrets.token_hex(4)}" if pid is not None else secrets.token_hex(4)
    path = tmp_path / f".{name}.new-{tag}"
    path.mkdir()
    (path / WEIGHTS_NAME).write_bytes(b"half a save")
    return path


def test_a_save_removes_the_staging_left_by_dead_writers_of_its_destination(tmp_path):
    dead = staging(tmp_path, "art", dead_pid())
    old_unowned = staging(tmp_path, "art")  # an older hybnn's name: judged by age
    os.utime(old_unowned, (time.time() - 7200, time.time() - 7200))
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as live:
        try:
            writing = staging(tmp_path, "art", live.pid)  # a concurrent writer, alive
            recent_unowned = staging(tmp_path, "art")
            other = staging(tmp_path, "other", dead_pid())  # another destination
            previous = tmp_path / ".art.old-0123abcd"  # an interrupted swap's old version
            previous.mkdir()
            save_artifact(tmp_path / "art", "thing", TENSORS, {})
        finally:
            live.kill()
    assert not dead.exists() and not old_unowned.exists()
    assert writing.exists() and recent_unowned.exists() and other.exists()
    assert previous.exists()
    assert (writing / WEIGHTS_NAME).read_bytes() == b"half a save"
    load_artifact(tmp_path / "art", "thing")


KILLED_SAVE = """
import os, sys, time
import torch
from hybnn import artifacts

def stop(directory):
    print("staged", flush=True)
    time.sleep(60)

artifacts._fsync_dir = stop
artifacts.save_artifact(sys.argv[1], "thing", {"w": torch.zeros(3)}, {})
"""


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs kill -9")
def test_staging_of_a_save_killed_with_sigkill_is_gone_after_the_next_save(tmp_path):
    save_artifact(tmp_path / "art", "thing", TENSORS, {})
    proc = subprocess.Popen([sys.executable, "-c", KILLED_SAVE, str(tmp_path / "art")],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "staged"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    left = list(tmp_path.glob(".art.new-*"))
    assert len(left) == 1 and left[0].name.startswith(f".art.new-{proc.pid}-")
    tensors, _ = load_artifact(tmp_path / "art", "thing")  # the killed save changed nothing
    assert torch.equal(tensors["w"], TENSORS["w"])
    save_artifact(tmp_path / "art", "thing", TENSORS, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]
