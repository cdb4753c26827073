"""The binary ResNet-18 through `hybnn train`: ReActNet's two steps, ReBNN, distillation from
the float twin, in-memory and streamed images, resume, and the flags it refuses."""

from __future__ import annotations

import json

import pytest
import torch

from hybnn.binary.layers import binary_layers
from hybnn.cli import main
from hybnn.data import train_test
from hybnn.hooks import Callback
from hybnn.models.binary_resnet import BinaryResNet, FloatResNet
from hybnn.models.io import load_model
from hybnn.pipeline.config import ResNetConfig, TrainConfig, scheduled_lr
from hybnn.pipeline.resnet import (
    TensorImages,
    augment,
    build_resnet,
    distribution_loss,
    fit_resnet,
    start_from_step1,
)

TINY = ["--width", "4", "--epochs", "1", "--batch-size", "8", "--no-progress"]


def cli(capsys, *args):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err.strip().splitlines()


def test_two_steps_on_cifar_files_with_rebnn(tmp_path, write_cifar, capsys):
    data = f"cifar10:{write_cifar(tmp_path / 'cifar')}"
    s1, s2 = tmp_path / "step1", tmp_path / "step2"
    assert cli(capsys, "train", "--model", "resnet18", "--data", data, "--out", s1, *TINY)[0] == 0
    first, meta = load_model(s1)
    assert type(first) is BinaryResNet and first.config["weights"] == "real"
    assert not list(binary_layers(first)) and meta["resnet"]["step"] == 1
    rc, _, _ = cli(capsys, "train", "--model", "resnet18", "--step", "2", "--from", s1,
                   "--method", "rebnn", "--data", data, "--out", s2, *TINY)
    assert rc == 0
    second, meta = load_model(s2)
    layers = dict(binary_layers(second))
    assert len(layers) == 16 and all(la.scaling == "learned" for la in layers.values())
    assert meta["resnet"]["method"] == "rebnn" and "rebnn_gamma" in meta["history"][-1]
    rc, out, _ = cli(capsys, "evaluate", "--model", s2, "--json")
    assert rc == 0 and json.loads(out)["samples"] == 4
    rc, out, _ = cli(capsys, "summary", s2)
    assert rc == 0 and "deployed" in out


@pytest.mark.parametrize("method, scaling", [("ste", "none"), ("reactnet", "xnor"),
                                             ("rebnn", "learned")])
def test_step2_starts_from_step1_weights(method, scaling):
    cfg = ResNetConfig(width=4)
    first = build_resnet("resnet18", (3, 8, 8), 3, cfg, step=1)
    second = build_resnet("resnet18", (3, 8, 8), 3, cfg, step=2, scaling=scaling)
    import tempfile

    from hybnn.models.io import save_model

    with tempfile.TemporaryDirectory() as tmp:
        save_model(tmp, first, prep="centered")
        start_from_step1(second, tmp)
    w1 = first.blocks[3].conv.weight
    w2 = second.blocks[3].conv
    assert torch.equal(w2.weight, w1.clamp(-1, 1))
    if scaling == "learned":
        assert torch.allclose(w2.alpha, w1.abs().flatten(1).mean(1))
    x = torch.randn(2, 3, 8, 8)
    assert second.eval()(x).shape == (2, 3)


def test_float_teacher_on_a_streamed_folder(tmp_path, image_folder, capsys):
    data = f"folder:{image_folder}"
    teacher, student = tmp_path / "teacher", tmp_path / "student"
    common = ["--data", data, "--image-size", "16", "--workers", "1", *TINY]
    assert cli(capsys, "train", "--model", "resnet18-float", "--out", teacher, *common)[0] == 0
    model = load_model(teacher)[0]
    assert type(model) is FloatResNet and model.config["image_size"] == [16, 16]
    rc, _, _ = cli(capsys, "train", "--model", "resnet18", "--teacher", teacher,
                   "--out", student, *common)
    assert rc == 0
    history = load_model(student)[1]["history"][-1]
    assert history["distill_loss"] >= 0 and "test_acc" in history


def test_distribution_loss_is_zero_only_for_equal_outputs():
    a = torch.tensor([[3.0, 0.0, -1.0]])
    assert float(distribution_loss(a, a)) == pytest.approx(0, abs=1e-7)
    assert float(distribution_loss(a, a.flip(1))) > 0.1


def test_augment_crops_and_flips_reproducibly():
    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).view(2, 1, 8, 8)
    a = augment(x, torch.Generator().manual_seed(3))
    b = augment(x, torch.Generator().manual_seed(3))
    assert a.shape == x.shape and torch.equal(a, b)
    outs = [augment(x, torch.Generator().manual_seed(s)) for s in range(8)]
    assert any(not torch.equal(o, x) for o in outs)  # crops and flips happen
    assert any(torch.equal(o[0], x[0].flip(2)) for o in outs)  # an unshifted flip


def test_linear_schedule():
    assert scheduled_lr(1.0, 0, 4, "linear") == 1.0
    assert scheduled_lr(1.0, 2, 4, "linear") == 0.5


class Stop(Callback):
    def on_epoch_end(self, model, epoch, logs):
        if epoch == 1:
            raise KeyboardInterrupt


def test_resume_continues_exactly(tmp_path, digits):
    train, _ = train_test(digits.subset(torch.arange(60).numpy()))
    images = TensorImages.of(train, "centered")
    config = TrainConfig(epochs=3, batch_size=16, lr=1e-2)

    def run(callbacks=(), resume=False):
        torch.manual_seed(0)
        model = build_resnet("resnet18", images.shape, 10, ResNetConfig(width=4), step=1)
        fit_resnet(model, images, None, config, callbacks=callbacks,
                   checkpoint=tmp_path / "checkpoint.pt", resume=resume, progress=False)
        return model

    whole = run()
    (tmp_path / "checkpoint.pt").unlink()
    with pytest.raises(KeyboardInterrupt):
        run([Stop()])
    resumed = run(resume=True)
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_amp_trains_in_bfloat16_autocast_and_keeps_float32_weights(digits):
    """--amp on a CPU (the same autocast as on CUDA): the step runs, the weights, the
    gradients' effect and the history stay float32 and finite."""
    train, _ = train_test(digits.subset(torch.arange(40).numpy()))
    images = TensorImages.of(train, "centered")
    torch.manual_seed(0)
    model = build_resnet("resnet18", images.shape, 10, ResNetConfig(width=2), step=2,
                         scaling="learned")
    before = model.stem[0].weight.detach().clone()
    history = fit_resnet(model, images, images, TrainConfig(epochs=1, batch_size=16, lr=1e-2),
                         progress=False, amp=True)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert not torch.equal(before, model.stem[0].weight)
    assert 0.0 <= history.last("test_acc") <= 1.0 and history.last("train_loss") > 0


@pytest.mark.parametrize("args, message", [
    (["--width", "0"], "--width must be an integer in 1..1,024"),
    (["--step", "2"], "--step 2 binarizes the weights of a step-1 model: give --from"),
    (["--method", "rebnn"], "--method chooses how step 2"),
    (["--image-size", "32"], "--image-size resizes the images of a folder"),
])
def test_refused_flags_one_line(tmp_path, capsys, args, message):
    rc, _, err = cli(capsys, "train", "--model", "resnet18", "--data", "digits",
                     "--out", tmp_path / "m", *args, "--epochs", "1", "--no-progress")
    assert rc == 2 and len(err) == 1 and message in err[0]


def test_from_must_be_a_step1_resnet(tmp_path, capsys):
    float_dir = tmp_path / "float"
    from hybnn.models.io import save_model

    save_model(float_dir, FloatResNet(10, 1, 4, (1, 1)), prep="centered")
    rc, _, err = cli(capsys, "train", "--model", "resnet18", "--step", "2", "--from",
                     float_dir, "--data", "digits", "--out", tmp_path / "m", *TINY)
    assert rc == 2 and len(err) == 1 and "not a step-1 resnet18" in err[0]
    rc, _, err = cli(capsys, "train", "--model", "bcnn", "--teacher", float_dir,
                     "--out", tmp_path / "b", "--no-progress")
    assert rc == 2 and "train the ResNets" in err[0]
