"""The phase-3 trainer: it learns, it is deterministic, and a run killed with -9 resumes exactly."""

from __future__ import annotations

import math
import pickle
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from safetensors.torch import save_file

from hybnn.errors import ArtifactError, DataError
from hybnn.hooks import Callback, History
from hybnn.models import BNNHead
from hybnn.pipeline.config import TrainConfig
from hybnn.pipeline.train import evaluate_classifier, fit_classifier, resolve_device

BITS = 32
CONFIG = TrainConfig(epochs=6, batch_size=16, lr=1e-2, seed=3)


def separable(n: int = 96, seed: int = 0, flip: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """±1 codes: a class prototype (+p or -p) with a fraction ``flip`` of its bits flipped."""
    proto = torch.randint(0, 2, (BITS,), generator=torch.Generator().manual_seed(123)) * 2 - 1
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = proto.float() * (y[:, None] * 2 - 1).float()
    x = torch.where(torch.rand(n, BITS, generator=g) < flip, -x, x)
    return x, y


def head(seed: int = 0) -> BNNHead:
    torch.manual_seed(seed)
    return BNNHead(BITS, 2, (16,))


def without_seconds(history: History) -> list[dict]:
    return [{k: v for k, v in e.items() if k != "seconds"} for e in history.epochs]


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


# ----------------------------------------------------------------------------------- learning


def test_learns_a_separable_problem():
    train, test = separable(256, seed=0), separable(128, seed=1)
    model = head()
    config = TrainConfig(epochs=10, batch_size=16, lr=1e-2, seed=0)
    history = fit_classifier(model, train, test, config, progress=False)
    assert history.last("test_acc") >= 0.95
    assert history.last("train_acc") >= 0.95
    assert history.series("train_loss")[-1] < history.series("train_loss")[0]
    assert not model.training
    assert all(layer.weight.abs().max() <= 1.0 for layer in (model.net[0], model.net[2]))


def test_history_records_every_epoch():
    history = fit_classifier(head(), separable(), separable(32, 1), CONFIG, progress=False)
    assert [e["epoch"] for e in history.epochs] == [1, 2, 3, 4, 5, 6]
    for e in history.epochs:
        assert {"train_loss", "train_acc", "test_loss", "test_acc", "seconds", "lr"} <= set(e)
        assert 0.0 <= e["train_acc"] <= 1.0 and e["seconds"] >= 0
    assert history.train_seconds_per_epoch() == pytest.approx(
        sum(history.series("seconds")) / 6)
    assert math.isnan(History().last("test_acc")) and History().series("x") == []


def test_cosine_schedule_per_epoch():
    history = fit_classifier(head(), separable(), None, CONFIG, progress=False)
    expected = [0.5 * 1e-2 * (1 + math.cos(math.pi * e / 6)) for e in range(6)]
    assert history.series("lr") == pytest.approx(expected)
    assert "test_acc" not in history.epochs[0]


def test_constant_schedule_and_unknown_schedule():
    cfg = TrainConfig(epochs=2, lr=5e-3, schedule="constant")
    assert fit_classifier(head(), separable(), None, cfg, progress=False).series("lr") == [5e-3] * 2
    with pytest.raises(ValueError, match="cosine, linear or constant"):
        fit_classifier(head(), separable(), None, TrainConfig(epochs=1, schedule="step"),
                       progress=False)


def test_a_last_batch_of_one_sample_is_skipped_not_fed_to_batch_norm():
    x, y = separable(17)
    history = fit_classifier(head(), (x, y), None, TrainConfig(epochs=1, batch_size=16),
                             progress=False)
    assert len(history.epochs) == 1


def test_same_seed_same_history_and_weights():
    a, b = head(), head()
    ha = fit_classifier(a, separable(), separable(32, 1), CONFIG, progress=False)
    hb = fit_classifier(b, separable(), separable(32, 1), CONFIG, progress=False)
    assert without_seconds(ha) == without_seconds(hb)
    assert_same_weights(a, b)


def test_different_seed_different_run():
    a, b = head(), head()
    fit_classifier(a, separable(), None, CONFIG, progress=False)
    fit_classifier(b, separable(), None, TrainConfig(epochs=6, batch_size=16, seed=4),
                   progress=False)
    assert not torch.equal(a.net[0].weight, b.net[0].weight)


def test_evaluate_classifier_keeps_the_training_mode():
    model = head().train()
    loss, acc = evaluate_classifier(model, *separable(40), batch_size=7)
    assert model.training and loss > 0 and 0 <= acc <= 1


# ---------------------------------------------------------------------------------- callbacks


class Recorder(Callback):
    def __init__(self):
        self.calls: list[str] = []
        self.grad_seen = False

    def on_train_begin(self, model):
        self.calls.append("begin")

    def extra_loss(self, model):
        return 0.0 * model.net[0].weight.sum()

    def on_after_backward(self, model):
        self.grad_seen = self.grad_seen or model.net[0].weight.grad is not None

    def on_step_end(self, model):
        self.calls.append("step")

    def on_epoch_end(self, model, epoch, logs):
        self.calls.append(f"epoch{epoch}")
        logs["custom"] = epoch * 10


def test_callbacks_are_called_in_order_and_can_log():
    rec = Recorder()
    history = fit_classifier(head(), separable(32), None, TrainConfig(epochs=2, batch_size=16),
                             callbacks=[rec], progress=False)
    assert rec.calls == ["begin", "step", "step", "epoch0", "step", "step", "epoch1"]
    assert rec.grad_seen
    assert history.series("custom") == [0, 10]


def test_a_zero_extra_loss_does_not_change_training():
    a, b = head(), head()
    fit_classifier(a, separable(), None, CONFIG, callbacks=[Recorder()], progress=False)
    # callbacks train through autograd; so does b here, for a bit-exact comparison
    fit_classifier(b, separable(), None, CONFIG, progress=False, fused=False)
    assert_same_weights(a, b)


# ------------------------------------------------------------------------------- bad inputs


def test_nan_inputs_are_a_data_error():
    x, y = separable()
    x[3, 4] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        fit_classifier(head(), (x, y), None, CONFIG, progress=False)
    x[3, 4] = float("inf")
    with pytest.raises(DataError, match="infinite"):
        fit_classifier(head(), (x, y), None, CONFIG, progress=False)


def test_mismatched_or_empty_training_set_is_a_data_error():
    x, y = separable()
    with pytest.raises(DataError, match="as many labels"):
        fit_classifier(head(), (x, y[:-1]), None, CONFIG, progress=False)
    with pytest.raises(DataError, match="as many labels"):
        fit_classifier(head(), (x[:0], y[:0]), None, CONFIG, progress=False)


@pytest.mark.parametrize(
    "config",
    [TrainConfig(batch_size=0), TrainConfig(epochs=-1), TrainConfig(lr=0.0),
     TrainConfig(lr=float("nan")), TrainConfig(lr=float("inf"))],
    ids=["batch0", "epochs-1", "lr0", "lr-nan", "lr-inf"],
)
def test_impossible_settings_are_data_errors(config):
    with pytest.raises(DataError, match="batch size >= 1, epochs >= 0 and a positive"):
        fit_classifier(head(), separable(), None, config, progress=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_without_cuda_is_a_data_error(device):
    with pytest.raises(DataError, match=f"--device {device} requested but CUDA is not available"):
        resolve_device(device)
    with pytest.raises(DataError, match="CUDA is not available"):
        fit_classifier(head(), separable(), None, TrainConfig(epochs=1, device=device),
                       progress=False)


def test_unknown_device_is_a_data_error():
    with pytest.raises(DataError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    assert resolve_device("cpu") == torch.device("cpu")


# ------------------------------------------------------------------------ checkpoint + resume

KILLED_RUN = textwrap.dedent(
    """
    import sys, time
    import torch
    from safetensors.torch import load_file
    from hybnn.models import BNNHead
    from hybnn.hooks import Callback
    from hybnn.pipeline.config import TrainConfig
    from hybnn.pipeline.train import fit_classifier

    torch.set_num_threads(1)
    data_path, ckpt, marker = sys.argv[1:4]
    d = load_file(data_path)
    model = BNNHead({bits}, 2, (16,))
    model.load_state_dict({{k[6:]: v for k, v in d.items() if k.startswith("model.")}})

    class HangInThirdEpoch(Callback):
        done = 0

        def on_epoch_end(self, model, epoch, logs):
            self.done = epoch + 1

        def on_step_end(self, model):
            if self.done >= 2:  # mid-epoch 3, after one more optimizer step
                open(marker, "w").close()
                time.sleep(600)

    fit_classifier(model, (d["x"], d["y"]), (d["tx"], d["ty"]), TrainConfig(**{config}),
                   checkpoint=ckpt, callbacks=[HangInThirdEpoch()], progress=False)
    """
)


@pytest.mark.slow
def test_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path):
    (x, y), (tx, ty) = separable(), separable(32, 1)
    init = head(seed=5)
    data = {"x": x, "y": y, "tx": tx, "ty": ty,
            **{f"model.{k}": v for k, v in init.state_dict().items()}}
    save_file(data, str(tmp_path / "data.safetensors"))
    script = tmp_path / "run.py"
    config = {"epochs": 6, "batch_size": 16, "lr": 1e-2, "seed": 3}
    script.write_text(KILLED_RUN.format(bits=BITS, config=config))
    ckpt, marker = tmp_path / "checkpoint.pt", tmp_path / "hanging"

    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "data.safetensors"),
                             str(ckpt), str(marker)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "training subprocess never reached epoch 3"
            time.sleep(0.05)
        assert torch.load(ckpt, weights_only=True)["epoch"] >= 2
    finally:
        proc.kill()  # SIGKILL: no cleanup, no final checkpoint
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -9
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files

    resumed = head(seed=99)  # its own initial weights must not matter
    cfg = TrainConfig(**config)
    # the killed run trained through autograd (it has a callback): so do these, bit-exactly
    h_resumed = fit_classifier(resumed, (x, y), (tx, ty), cfg, checkpoint=ckpt, resume=True,
                               progress=False, fused=False)

    reference = head(seed=99)
    reference.load_state_dict(init.state_dict())
    h_reference = fit_classifier(reference, (x, y), (tx, ty), cfg, progress=False,
                                 fused=False)

    assert without_seconds(h_resumed) == without_seconds(h_reference)
    assert_same_weights(resumed, reference)
    assert torch.load(ckpt, weights_only=True)["epoch"] == 6


def test_resume_of_a_finished_run_trains_nothing(tmp_path):
    ckpt = tmp_path / "ckpt.pt"
    first = head()
    h1 = fit_classifier(first, separable(), None, CONFIG, checkpoint=ckpt, progress=False)
    again = head(seed=1)
    h2 = fit_classifier(again, separable(), None, CONFIG, checkpoint=ckpt, resume=True,
                        progress=False)
    assert h2.epochs == h1.epochs  # seconds included: nothing was re-run
    assert_same_weights(first, again)


def test_without_resume_an_existing_checkpoint_is_ignored_and_replaced(tmp_path):
    ckpt = tmp_path / "ckpt.pt"
    ckpt.write_bytes(b"junk from an old run")
    fit_classifier(head(), separable(), None, TrainConfig(epochs=1), checkpoint=ckpt,
                   progress=False)
    assert torch.load(ckpt, weights_only=True)["epoch"] == 1


def test_resume_without_a_checkpoint_starts_fresh(tmp_path):
    h = fit_classifier(head(), separable(), None, TrainConfig(epochs=2),
                       checkpoint=tmp_path / "none.pt", resume=True, progress=False)
    assert len(h.epochs) == 2


@pytest.mark.parametrize(
    ("other_config", "other_data"),
    [(TrainConfig(epochs=6, batch_size=16, lr=1e-3, seed=3), None),
     (TrainConfig(epochs=6, batch_size=16, lr=1e-2, seed=4), None),
     (TrainConfig(epochs=8, batch_size=16, lr=1e-2, seed=3), None),
     (CONFIG, 80)],
    ids=["lr", "seed", "epochs", "data-size"],
)
def test_checkpoint_of_another_run_is_refused(tmp_path, other_config, other_data):
    ckpt = tmp_path / "ckpt.pt"
    fit_classifier(head(), separable(), None, TrainConfig(epochs=2, batch_size=16, seed=3),
                   checkpoint=ckpt, progress=False)
    fit_classifier(head(), separable(), None, CONFIG, checkpoint=ckpt, progress=False)
    with pytest.raises(ArtifactError, match="belongs to another run"):
        fit_classifier(head(), separable(other_data or 96), None, other_config, checkpoint=ckpt,
                       resume=True, progress=False)


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    ckpt = tmp_path / "ckpt.pt"
    fit_classifier(head(), separable(), None, CONFIG, checkpoint=ckpt, progress=False)
    torch.manual_seed(0)
    wider = BNNHead(BITS, 2, (24,))
    with pytest.raises(ArtifactError, match="belongs to another run"):
        fit_classifier(wider, separable(), None, CONFIG, checkpoint=ckpt, resume=True,
                       progress=False)


class _Touch:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


@pytest.mark.parametrize("kind", ["garbage", "truncated", "empty", "pickle", "not-a-dict"])
def test_corrupt_checkpoint_is_an_artifact_error(tmp_path, kind):
    ckpt = tmp_path / "ckpt.pt"
    fit_classifier(head(), separable(), None, CONFIG, checkpoint=ckpt, progress=False)
    marker = tmp_path / "executed"
    if kind == "garbage":
        ckpt.write_bytes(b"\x00garbage" * 100)
    elif kind == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[:-200])
    elif kind == "empty":
        ckpt.write_bytes(b"")
    elif kind == "pickle":
        ckpt.write_bytes(pickle.dumps({"epoch": 1, "tag": _Touch(marker)}, protocol=2))
    else:
        torch.save([1, 2, 3], ckpt)
    with pytest.raises(ArtifactError, match=r"cannot resume from .*corrupt checkpoint"):
        fit_classifier(head(), separable(), None, CONFIG, checkpoint=ckpt, resume=True,
                       progress=False)
    assert not marker.exists()
