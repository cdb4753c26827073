"""Hostile inputs through the real CLI: every case ends in exit code 2, exactly one
`hybnn: error:` line, no traceback, and every file that existed before is unchanged.

The table in docs/hostile-inputs.md lists these cases. Each case runs `hybnn.cli.main` in a
process of its own, forked from one warm process that has imported torch once (a fresh
interpreter per case would spend ~3 s of CPU each just importing torch); the child sets up
nothing else, runs in its case's directory and reports its exit code, stdout and stderr.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.numpy import save_file
from safetensors.torch import load_file

from hybnn import api
from hybnn.artifacts import META_NAME, WEIGHTS_NAME, save_artifact
from hybnn.pipeline.codes import CODES_VERSION, CodeStore, store_sha256
from hybnn.pipeline.config import TrainConfig

# Runs each case of a JSON list read from stdin in a forked child, two at a time.
pytestmark = pytest.mark.slow  # whole-CLI runs in subprocesses

ZYGOTE = r"""
import json, os, sys, traceback
import torch
torch.set_num_threads(1)
from hybnn.cli import main

def child(case):
    os.chdir(case["dir"])
    for fd, name in ((1, "stdout"), (2, "stderr")):
        f = os.open(os.path.join(case["dir"], f".{name}"), os.O_WRONLY | os.O_CREAT, 0o600)
        os.dup2(f, fd)
    sys.stdout = os.fdopen(1, "w")
    sys.stderr = os.fdopen(2, "w")
    try:
        rc = main(case["argv"])
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        rc = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)

cases, running = json.load(sys.stdin), {}
for case in cases + [None, None]:
    if len(running) == 2 or (case is None and running):
        pid, status, usage = os.wait4(-1, 0)
        print(json.dumps({"name": running.pop(pid), "rc": os.waitstatus_to_exitcode(status),
                          "cpu_s": usage.ru_utime + usage.ru_stime,
                          "maxrss_kib": usage.ru_maxrss}), flush=True)
    if case is not None:
        pid = os.fork()
        if pid == 0:
            child(case)
        running[pid] = case["name"]
"""

# kind -> {case name: setup(case directory) -> hybnn arguments}
CASES: dict[str, dict[str, Callable[[Path], list[str]]]] = {
    "data": {}, "artifacts": {}, "commands": {}}


def case(kind: str) -> Callable[[Callable[[Path], list[str]]], Callable[[Path], list[str]]]:
    def register(setup: Callable[[Path], list[str]]) -> Callable[[Path], list[str]]:
        CASES[kind][setup.__name__] = setup
        return setup
    return register


def predict(*inputs: str, model: str = "bcnn") -> list[str]:
    extra = ["--encoder", "enc"] if model == "head" else []
    return ["predict", "--model", model, *extra, *inputs]


def edit_json(path: Path, fn: Callable[[dict], object]) -> None:
    meta = json.loads(path.read_text())
    fn(meta)
    path.write_text(json.dumps(meta))


def png(path: Path, size: int = 8) -> str:
    Image.fromarray(np.full((size, size), 128, np.uint8)).save(path)
    return path.name


def deflated_png(path: Path, side: int) -> str:
    """A complete black PNG of side x side pixels (a few KB to hundreds of KB)."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))
    comp = zlib.compressobj(9)
    row = bytes(side + 1)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(
        ">IIBBBBB", side, side, 8, 0, 0, 0, 0)) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path.name


# --------------------------------------------------------------------------- data files


@case("data")
def png_above_pixel_limit(d):
    return predict(deflated_png(d / "big.png", 5000))


@case("data")
def png_decompression_bomb(d):
    return predict(deflated_png(d / "bomb.png", 12000))


@case("data")
def text_file_named_png(d):
    (d / "fake.png").write_text("hello")
    return predict("fake.png")


@case("data")
def npy_header_claims_1e12_items(d):
    text = repr({"descr": "<f4", "fortran_order": False, "shape": (10**12,)}).encode()
    text += b" " * (-(len(text) + 11) % 64) + b"\n"
    (d / "huge.npy").write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text)
    return predict("huge.npy")


@case("data")
def npy_zero_dimensional(d):
    np.save(d / "scalar.npy", np.float32(0.5))
    return predict("scalar.npy")


@case("data")
def npy_truncated(d):
    np.save(d / "t.npy", np.zeros((4, 8, 8), np.float32))
    (d / "t.npy").write_bytes((d / "t.npy").read_bytes()[:200])
    return predict("t.npy")


@case("data")
def npz_empty_file(d):
    (d / "empty.npz").write_bytes(b"")
    return predict("empty.npz")


@case("data")
def npz_truncated(d):
    np.savez(d / "t.npz", x=np.zeros((4, 8, 8), np.float32))
    (d / "t.npz").write_bytes((d / "t.npz").read_bytes()[:150])
    return predict("t.npz")


@case("data")
def npz_zero_images(d):
    np.savez(d / "none.npz", x=np.zeros((0, 8, 8), np.float32))
    return predict("none.npz")


@case("data")
def npz_object_array(d):
    np.savez(d / "obj.npz", x=np.array([object()], dtype=object))
    return predict("obj.npz")


@case("data")
def npy_header_cut_inside_its_dict(d):
    np.save(d / "cut.npy", np.zeros((4, 8, 8), np.float32))
    (d / "cut.npy").write_bytes((d / "cut.npy").read_bytes()[:40])
    return predict("cut.npy")


@case("data")
def input_that_is_a_directory(d):
    (d / "dir.png").mkdir()
    return predict("dir.png")


@case("data")
def npz_member_header_cut(d):
    import zipfile

    np.save(d / "m.npy", np.zeros((2, 8, 8), np.float32))
    with zipfile.ZipFile(d / "cut.npz", "w") as z:
        z.writestr("x.npy", (d / "m.npy").read_bytes()[:50])
    (d / "m.npy").unlink()
    return predict("cut.npz")


@case("data")
def inputs_of_different_sizes(d):
    np.save(d / "ten.npy", np.zeros((1, 10, 10), np.float32))
    return predict(png(d / "a.png"), "ten.npy")


@case("data")
def three_channels_for_a_one_channel_cnn(d):
    np.save(d / "rgb.npy", np.zeros((2, 3, 8, 8), np.float32))
    return predict("rgb.npy")


@case("data")
def three_channels_for_a_head_encoder(d):
    np.save(d / "rgb.npy", np.zeros((2, 3, 8, 8), np.float32))
    return predict("rgb.npy", model="head")


@case("data")
def float_npy_outside_unit_range(d):
    np.save(d / "x.npy", np.full((1, 8, 8), 255.0, np.float32))
    return predict(png(d / "a.png"), "x.npy")


@case("data")
def empty_data_set(d):
    np.savez(d / "empty.npz", x=np.zeros((0, 8, 8), np.uint8), y=np.zeros(0, np.int64))
    return ["train", "--model", "bcnn", "--data", "empty.npz", "--out", "bcnn", "--epochs", "1"]


@case("data")
def gzip_idx_claiming_gigabytes(d):
    import gzip

    header = bytes([0, 0, 8, 3]) + struct.pack(">3I", 4_000_000, 28, 28)
    (d / "x.idx.gz").write_bytes(gzip.compress(header + bytes(1 << 20)))
    (d / "y.idx").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 4]) + bytes(4))
    return ["train", "--model", "fpcnn", "--data", "x.idx.gz,y.idx", "--out", "bcnn"]


# ----------------------------------------------- model, encoder and code-store artifacts


@case("artifacts")
def model_meta_deeply_nested(d):
    (d / "head" / META_NAME).write_text("[" * 100_000 + "]" * 100_000)
    return ["evaluate", "--model", "head", "--codes", "te01.safetensors"]


@case("artifacts")
def encoder_meta_deeply_nested(d):
    (d / "enc" / META_NAME).write_text('{"a":' * 50_000 + "1" + "}" * 50_000)
    return ["extract", "--encoder", "enc", "--data", "digits", "--out", "te01.safetensors"]


@case("artifacts")
def model_meta_unknown_prep(d):
    edit_json(d / "bcnn" / META_NAME, lambda m: m.update(prep="sideways"))
    return predict(png(d / "a.png"))


@case("artifacts")
def model_meta_task_not_a_string(d):
    edit_json(d / "bcnn" / META_NAME, lambda m: m.update(task=["0v1"]))
    return ["evaluate", "--model", "bcnn"]


@case("artifacts")
def vae_relabelled_as_a_model(d):
    edit_json(d / "enc" / META_NAME, lambda m: m.update(
        kind="model", config={"arch": "vae", "arch_config": m["config"]}))
    return predict(png(d / "a.png"), model="enc")


@case("artifacts")
def encoder_kind_changed_to_model(d):
    edit_json(d / "enc" / META_NAME, lambda m: m.update(kind="model"))
    return ["evaluate", "--model", "enc", "--codes", "te01.safetensors"]


@case("artifacts")
def model_meta_hidden_1e9(d):
    edit_json(d / "head" / META_NAME, lambda m: m["config"]["arch_config"].update(
        hidden=[10**9]))
    return ["evaluate", "--model", "head", "--codes", "te01.safetensors"]


@case("artifacts")
def model_meta_64_layers_of_65536(d):
    edit_json(d / "head" / META_NAME, lambda m: m["config"]["arch_config"].update(
        hidden=[65536] * 64))
    return ["evaluate", "--model", "head", "--codes", "te01.safetensors"]


@case("artifacts")
def encoder_meta_latent_bits_1e9(d):
    edit_json(d / "enc" / META_NAME, lambda m: m["config"].update(latent_bits=10**9))
    return ["extract", "--encoder", "enc", "--data", "digits", "--out", "te01.safetensors"]


@case("artifacts")
def encoder_meta_unknown_code_layer(d):
    edit_json(d / "enc" / META_NAME, lambda m: m["config"].update(code="conv9"))
    return ["extract", "--encoder", "enc", "--data", "digits", "--out", "te01.safetensors"]


@case("artifacts")
def encoder_meta_code_layer_a_list(d):
    edit_json(d / "enc" / META_NAME, lambda m: m["config"].update(code=["conv2"]))
    return ["recode", "--encoder", "enc", "--out", "enc2"]


def resave(directory: Path, edit: Callable[[dict[str, torch.Tensor]], object]) -> None:
    """Rewrite a model's weights with ``edit`` applied, with a valid fingerprint."""
    tensors = load_file(str(directory / WEIGHTS_NAME))
    meta = json.loads((directory / META_NAME).read_text())
    edit(tensors)
    extra = {k: v for k, v in meta.items()
             if k not in ("kind", "format_version", "hybnn_version", "fingerprint", "config")}
    save_artifact(directory, meta["kind"], tensors, meta["config"], extra)


@case("artifacts")
def model_int_weights(d):
    resave(d / "head", lambda t: t.update({"net.0.weight": t["net.0.weight"].to(torch.int32)}))
    return ["evaluate", "--model", "head", "--codes", "te01.safetensors"]


@case("artifacts")
def model_bool_weights(d):
    resave(d / "bcnn", lambda t: t.update(
        {"features.0.weight": t["features.0.weight"] > 0}))
    return predict(png(d / "a.png"))


@case("artifacts")
def model_nan_weights_json(d):
    resave(d / "bcnn", lambda t: t["classifier.1.weight"].view(-1).__setitem__(0, float("nan")))
    return [*predict(png(d / "a.png")), "--json"]


@case("artifacts")
def model_negative_running_var(d):
    resave(d / "head", lambda t: t["net.1.running_var"].fill_(-1e6))
    return ["evaluate", "--model", "head", "--codes", "te01.safetensors"]


@case("artifacts")
def encoder_inf_weights(d):
    resave(d / "enc", lambda t: t["encoder.0.weight"].view(-1).__setitem__(0, float("inf")))
    return ["extract", "--encoder", "enc", "--data", "digits", "--out", "te01.safetensors"]


def flip_byte(path: Path, tensor: str, index: int = 0) -> None:
    raw = bytearray(path.read_bytes())
    size = int.from_bytes(raw[:8], "little")
    start, _ = json.loads(raw[8:8 + size])[tensor]["data_offsets"]
    raw[8 + size + start + index] ^= 1
    path.write_bytes(bytes(raw))


@case("artifacts")
def code_store_flipped_code_byte(d):
    flip_byte(d / "te01.safetensors", "codes", 5)
    return ["evaluate", "--model", "head", "--codes", "te01.safetensors"]


@case("artifacts")
def code_store_flipped_label_byte(d):
    flip_byte(d / "tr01.safetensors", "labels", 0)
    return ["train", "--codes", "tr01.safetensors", "--out", "head", "--epochs", "1"]


def forge_store(path: Path, labels: np.ndarray, header: dict) -> None:
    store = CodeStore.load(path)
    codes = np.resize(store.packed, (len(labels), store.packed.shape[1]))
    head = {"kind": "codes", "format_version": CODES_VERSION, "num_bits": store.num_bits,
            "encoder_fingerprint": store.encoder_fingerprint, **store.meta, **header}
    if "sha256" not in head:  # a valid checksum over the forged header and payload
        head["sha256"] = store_sha256({k: v for k, v in head.items() if v is not None},
                                      codes, labels)
    save_file({"codes": codes, "labels": labels}, str(path),
              metadata={"hybnn": json.dumps({k: v for k, v in head.items() if v is not None})})


@case("artifacts")
def code_store_without_checksum(d):
    store = CodeStore.load(d / "te01.safetensors")
    forge_store(d / "te01.safetensors", store.labels, {"sha256": None})
    return ["evaluate", "--model", "head", "--codes", "te01.safetensors"]


@case("artifacts")
def code_store_labels_beyond_its_classes(d):
    forge_store(d / "tr01.safetensors", np.arange(40) % 3, {})  # 3 labels, 2 classes recorded
    return ["train", "--codes", "tr01.safetensors", "--out", "head", "--epochs", "1"]


@case("artifacts")
def code_store_truncated(d):
    p = d / "tr01.safetensors"
    p.write_bytes(p.read_bytes()[:-50])
    return ["train", "--codes", "tr01.safetensors", "--out", "head", "--epochs", "1"]


@case("artifacts")
def model_meta_over_one_mib(d):
    edit_json(d / "head" / META_NAME, lambda m: m.update({"note": "x" * (2 << 20)}))
    return ["evaluate", "--model", "head", "--codes", "te01.safetensors"]


@case("artifacts")
def model_batch_norm_weight_1e30(d):
    resave(d / "head", lambda t: t["net.3.weight"].fill_(1e30))
    return ["evaluate", "--model", "head", "--codes", "te01.safetensors"]


@case("artifacts")
def code_store_num_classes_1e9_with_valid_hash(d):
    store = CodeStore.load(d / "tr01.safetensors")
    forge_store(d / "tr01.safetensors", store.labels, {"num_classes": 10**9})
    return ["train", "--codes", "tr01.safetensors", "--out", "head", "--epochs", "1"]


@case("artifacts")
def code_store_num_bits_fractional_with_valid_hash(d):
    store = CodeStore.load(d / "tr01.safetensors")
    forge_store(d / "tr01.safetensors", store.labels, {"num_bits": store.num_bits + 0.9})
    return ["train", "--codes", "tr01.safetensors", "--out", "head", "--epochs", "1"]


@case("artifacts")
def code_store_header_edited_after_hashing(d):
    store = CodeStore.load(d / "te01.safetensors")
    forge_store(d / "te01.safetensors", store.labels, {"sha256": store_sha256(
        {"kind": "codes"}, store.packed, store.labels)})
    return ["evaluate", "--model", "head", "--codes", "te01.safetensors"]


# ------------------------------------------------------------------- commands and flags


@case("commands")
def evaluate_pair_head_on_all_codes(d):
    return ["evaluate", "--model", "head", "--codes", "teall.safetensors"]


@case("commands")
def evaluate_pair_head_on_task_all(d):
    return ["evaluate", "--model", "head", "--encoder", "enc", "--data", "digits",
            "--task", "all"]


@case("commands")
def evaluate_pair_cnn_on_task_all(d):
    return ["evaluate", "--model", "bcnn", "--data", "digits", "--task", "all"]


@case("commands")
def evaluate_on_zero_samples(d):
    forge_store(d / "te01.safetensors", np.zeros(0, np.int64), {})
    return ["evaluate", "--model", "head", "--codes", "te01.safetensors"]


@case("commands")
def train_with_test_codes_of_more_classes(d):
    return ["train", "--codes", "tr01.safetensors", "--test-codes", "teall.safetensors",
            "--out", "head", "--epochs", "1"]


@case("commands")
def export_over_a_code_store(d):
    return ["export", "head", "--out", "te01.safetensors"]


@case("commands")
def export_c_named_after_a_standard_header(d):
    return ["export", "bcnn", "--format", "c", "--name", "stdint", "--out", "firmware"]


@case("commands")
def export_c_name_with_a_leading_underscore(d):
    return ["export", "bcnn", "--format", "c", "--name", "_STDINT", "--out", "firmware"]


def forge_int8_encoder(d: Path, raw: torch.Tensor | None = None, **changes: object) -> list[str]:
    """An int8-encoder artifact ``enc8`` with a valid fingerprint and the given defects;
    the command that extracts codes with it."""
    config: dict[str, object] = {"latent_bits": 200, "in_channels": 1, "image_size": [8, 8],
                                 "input_name": "images", "output_name": "logits", "opset": 18}
    extra: dict[str, object] = {"quantized_from": "a" * 64, "quantization": {}}
    for key, value in changes.items():
        (config if key in config else extra)[key] = value
    onnx = torch.frombuffer(bytearray(b"\x08\x07not a graph"), dtype=torch.uint8)
    save_artifact(d / "enc8", "int8-encoder", {"onnx": onnx if raw is None else raw}, config,
                extra)
    return ["extract", "--encoder", "enc8", "--data", "digits", "--out", "te01.safetensors"]


@case("artifacts")
def int8_encoder_not_a_graph(d):
    return forge_int8_encoder(d)


@case("artifacts")
def int8_encoder_float_array(d):
    return forge_int8_encoder(d, torch.zeros(16))


@case("artifacts")
def int8_encoder_latent_bits_bool(d):
    return forge_int8_encoder(d, latent_bits=True)


@case("artifacts")
def int8_encoder_without_its_source(d):
    return forge_int8_encoder(d, quantized_from="vae")


@case("commands")
def quantize_an_int8_encoder(d):
    forge_int8_encoder(d)
    return ["quantize", "--encoder", "enc8", "--out", "enc8b"]


@case("commands")
def quantize_calibration_samples_0(d):
    return ["quantize", "--encoder", "enc", "--out", "enc8", "--calibration-samples", "0"]


@case("commands")
def recode_an_int8_encoder(d):
    forge_int8_encoder(d)
    return ["recode", "--encoder", "enc8", "--out", "enc2"]


def pretrain(*flags: str) -> Callable[[Path], list[str]]:
    return lambda d: ["pretrain", "--data", "digits", "--out", "enc", *flags]


def train(*flags: str) -> Callable[[Path], list[str]]:
    return lambda d: ["train", "--codes", "tr01.safetensors", "--out", "head", *flags]


FLAG_CASES = {
    "pretrain_beta_nan": pretrain("--beta", "nan"), "pretrain_beta_neg": pretrain("--beta", "-1"),
    "pretrain_lr_inf": pretrain("--lr", "inf"), "pretrain_lr_zero": pretrain("--lr", "0"),
    "pretrain_tau_nan": pretrain("--tau", "nan"), "pretrain_bits_0": pretrain("--bits", "0"),
    "pretrain_bits_1e9": pretrain("--bits", "1000000000"),
    "pretrain_epochs_0": pretrain("--epochs", "0"),
    "pretrain_batch_size_0": pretrain("--batch-size", "0"),
    "pretrain_shift_neg": pretrain("--shift", "-2"), "pretrain_seed_neg": pretrain("--seed", "-1"),
    "train_lr_nan": train("--lr", "nan"), "train_lr_neg": train("--lr", "-1"),
    "train_weight_decay_nan": train("--weight-decay", "nan"),
    "train_code_noise_half": train("--code-noise", "0.5"),
    "train_epochs_neg": train("--epochs", "-1"), "train_seed_neg": train("--seed", "-3"),
    "train_hidden_1e9": train("--hidden", "1000000000"),
    "train_hidden_0": train("--hidden", "128", "0"),
    "train_epochs_0": train("--epochs", "0"), "train_device_meta": train("--device", "meta"),
    "train_seed_1e20": train("--seed", "99999999999999999999"),
    "federate_rounds_1e12": lambda d: ["federate", "--rounds", "1000000000000", "--out", "f"],
    "federate_clients_1e9": lambda d: ["federate", "--clients", "1000000000", "--out", "f"],
    "federate_hidden_1e9": lambda d: ["federate", "--hidden", "1000000000", "--out", "f"],
    "distill_width_1e5": lambda d: ["distill", "--encoder", "enc", "--width", "100000",
                                    "--out", "student"],
    "continual_memory_fraction_nan": lambda d: ["continual", "--encoder", "enc",
                                                "--memory-fraction", "nan", "--out", "c"],
}
for _name, _setup in FLAG_CASES.items():
    _setup.__name__ = _name
    case("commands")(_setup)

ALL = {name: (kind, setup) for kind, cases in CASES.items() for name, setup in cases.items()}


# ----------------------------------------------------------------------------- running


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, tiny_encoder) -> Path:
    """A real artifact set from digits: the conftest's encoder (1 epoch), 0v1 and all codes,
    a 0v1 head and a 0v1 binary CNN (1 epoch each)."""
    root = tmp_path_factory.mktemp("artifacts")
    shutil.copytree(tiny_encoder[0], root / "enc")
    torch.manual_seed(0)
    for task, split, name in (("0v1", "train", "tr01"), ("0v1", "test", "te01"),
                              ("all", "test", "teall")):
        api.extract(api.ExtractOptions(encoder=str(root / "enc"), data="digits", task=task,
                                       split=split, out=str(root / f"{name}.safetensors")))
    api.train(api.TrainOptions(codes=str(root / "tr01.safetensors"), out=str(root / "head"),
                               epochs=1, hidden=[32], progress=False))
    api.train(api.TrainOptions(model="bcnn", data="digits", task="0v1", out=str(root / "bcnn"),
                               epochs=1, config=TrainConfig(batch_size=256), progress=False))
    for p in root.glob("*/checkpoint.pt"):
        p.unlink()
    return root


def hashes(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file() and not p.name.startswith(".std")}


@pytest.fixture(scope="module")
def runs(artifacts, tmp_path_factory) -> dict[str, tuple[dict, dict, dict]]:
    """name -> (hashes before, hashes after, {"rc", "stdout", "stderr"})."""
    jobs, before = [], {}
    for name, (_, setup) in ALL.items():
        d = tmp_path_factory.mktemp(name)
        shutil.copytree(artifacts, d, dirs_exist_ok=True)
        argv = setup(d)
        before[name] = hashes(d)
        jobs.append({"name": name, "dir": str(d), "argv": [*argv, *_no_progress(argv)]})
    proc = subprocess.run([sys.executable, "-c", ZYGOTE], input=json.dumps(jobs), text=True,
                          capture_output=True, timeout=600, check=True)
    reports = {r["name"]: r for r in map(json.loads, proc.stdout.splitlines())}
    codes = {name: r["rc"] for name, r in reports.items()}
    out = {}
    for job in jobs:
        d = Path(job["dir"])
        result = {"rc": codes[job["name"]], "stdout": (d / ".stdout").read_text(),
                  "stderr": (d / ".stderr").read_text()}
        out[job["name"]] = (before[job["name"]], hashes(d), result)
    return out


def _no_progress(argv: list[str]) -> list[str]:
    return ["--no-progress"] if argv[0] in ("pretrain", "train") else []


@pytest.mark.parametrize("name", sorted(ALL), ids=[f"{ALL[n][0]}-{n}" for n in sorted(ALL)])
def test_hostile_input_gives_one_clear_error_and_keeps_files(runs, name):
    before, after, result = runs[name]
    err = result["stderr"]
    assert result["rc"] == 2, err
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("hybnn: error: "), err
    assert {k: v for k, v in after.items() if k in before} == before
    assert not [k for k in after if k.endswith(".tmp")], after


def test_the_table_counts_every_case():
    text = (Path(__file__).parents[1] / "docs" / "hostile-inputs.md").read_text()
    for kind, title in (("data", "Data files"), ("artifacts", "Model, encoder and code-store "
                                                 "artifacts"), ("commands", "Commands and flags")):
        assert f"## {title}" in text
        section = text.split(f"## {title}")[1].split("\n## ")[0]
        counts = [int(row.split("|")[-3]) for row in section.splitlines()
                  if row.startswith("| ") and row.split("|")[-3].strip().isdigit()]
        assert sum(counts) == len(CASES[kind]), (title, counts, len(CASES[kind]))
