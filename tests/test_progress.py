"""Progress: a line per finished step when stderr is not a terminal; silence when asked."""

from __future__ import annotations

from hybnn.progress import bar


def test_a_log_gets_one_line_per_finished_step(capsys, monkeypatch):
    monkeypatch.delenv("HYBNN_NO_PROGRESS", raising=False)  # the suite silences it
    assert list(bar(range(3), "pretrain VAE")) == [0, 1, 2]
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line.split(",")[0] for line in lines] == [
        "pretrain VAE: 1/3 (33 %)", "pretrain VAE: 2/3 (66 %)", "pretrain VAE: 3/3 (100 %)"]


def test_no_progress_and_the_environment_silence_it(capsys, monkeypatch):
    assert list(bar(range(2), "x", enabled=False)) == [0, 1]
    monkeypatch.setenv("HYBNN_NO_PROGRESS", "1")
    assert list(bar(range(2), "x")) == [0, 1]
    assert capsys.readouterr().err == ""


def test_training_reports_each_epoch_with_its_loss_and_accuracy_and_writes_curves(
        capsys, monkeypatch, tmp_path):
    import numpy as np
    import torch

    from hybnn.pipeline.codes import CodeStore, pack_code_bits
    from hybnn.pipeline.config import TrainConfig
    from hybnn.pipeline.fit import train_head

    monkeypatch.delenv("HYBNN_NO_PROGRESS", raising=False)
    rng = np.random.default_rng(0)
    bits = rng.random((200, 40)) < 0.5
    labels = bits[:, 0].astype(np.int64)  # learnable: the first bit
    store = CodeStore(pack_code_bits(bits), labels, 40, "f" * 64, {"num_classes": 2})
    torch.manual_seed(0)
    _, history = train_head(store, store, TrainConfig(epochs=3, lr=1e-2), (16,),
                            out=tmp_path / "head", progress=True)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith("train BNN head: epoch 1/3  loss ")
    last = history.epochs[-1]
    assert f"acc {100 * last['train_acc']:.2f} %" in lines[-1]
    assert f"test acc {100 * last['test_acc']:.2f} %" in lines[-1]
    for name in ("accuracy.png", "loss.png"):
        assert (tmp_path / "head" / name).read_bytes()[:4] == b"\x89PNG"
