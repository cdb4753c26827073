"""Device-agnostic code: every model trains a step on the ``meta`` device (any tensor left on
the CPU by mistake fails there as it would on CUDA), and, where a CUDA GPU is present, every
command that trains or encodes runs on it end to end (skipped elsewhere)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from hybnn.binary.layers import binary_layers
from hybnn.binary.methods import method_callbacks
from hybnn.models import BinaryCNN, BinaryLatentVAE, BNNHead, FloatCNN
from hybnn.models.vae import vae_loss
from hybnn.pipeline.train import resolve_device

META = torch.device("meta")


def one_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, callbacks=()) -> None:
    model.to(META).train()
    loss = F.cross_entropy(model(x.to(META)), y.to(META))
    for cb in callbacks:
        term = cb.extra_loss(model)
        if term is not None:
            loss = loss + term
    loss.backward()
    for cb in callbacks:
        cb.on_after_backward(model)
    for _, layer in binary_layers(model):
        layer.clip_latent_()
    assert all(p.grad is not None and p.grad.device == META
               for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("make", [lambda: BNNHead(200, 2, (128,)),
                                  lambda: BNNHead(200, 10, (64,), scaling="learned"),
                                  lambda: BinaryCNN((28, 28), 1, 2, scaling="xnor")],
                         ids=["head", "head-learned", "bcnn-xnor"])
def test_binary_models_train_a_step_on_the_meta_device(make):
    model = make()
    x = torch.randn(8, 200) if isinstance(model, BNNHead) else torch.randn(8, 1, 28, 28)
    one_step(model, x, torch.randint(0, 2, (8,)))


def test_float_cnn_trains_a_step_on_the_meta_device():
    one_step(FloatCNN((28, 28), 1, 2), torch.rand(8, 1, 28, 28), torch.randint(0, 2, (8,)))


def test_vae_loss_backpropagates_on_the_meta_device():
    vae = BinaryLatentVAE((28, 28), 1, 200).to(META)
    loss, _, _ = vae_loss(vae, torch.rand(4, 1, 28, 28, device=META), beta=0.25)
    loss.backward()
    assert all(p.grad is not None and p.grad.device == META for p in vae.parameters())


def test_meta_device_is_accepted_and_unknown_ones_refused():
    assert resolve_device("meta") == META
    from hybnn.errors import DataError

    with pytest.raises(DataError, match="unknown device"):
        resolve_device("tpu7")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_every_training_and_encoding_command_runs_on_cuda(tmp_path):
    def hybnn(*args: str) -> None:
        proc = subprocess.run([sys.executable, "-m", "hybnn", *args], capture_output=True,
                              text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr

    enc, tr, te = tmp_path / "enc", tmp_path / "tr.safetensors", tmp_path / "te.safetensors"
    hybnn("pretrain", "--data", "digits", "--epochs", "1", "--out", str(enc), "--device", "cuda")
    for split, out in (("train", tr), ("test", te)):
        hybnn("extract", "--encoder", str(enc), "--data", "digits", "--task", "0v1",
              "--split", split, "--out", str(out), "--device", "cuda")
    hybnn("train", "--codes", str(tr), "--test-codes", str(te), "--epochs", "2",
          "--out", str(tmp_path / "head"), "--device", "cuda")
    hybnn("train", "--model", "bcnn", "--data", "digits", "--epochs", "1",
          "--out", str(tmp_path / "bcnn"), "--device", "cuda")
    hybnn("evaluate", "--model", str(tmp_path / "head"), "--encoder", str(enc),
          "--data", "digits", "--device", "cuda")
    hybnn("reproduce", "--quick", "--data", "digits", "--tasks", "0v1",
          "--out", str(tmp_path / "rep"), "--device", "cuda")
    hybnn("federate", "--data", "digits", "--rounds", "1", "--clients", "2",
          "--encoder", str(enc), "--out", str(tmp_path / "fed"), "--device", "cuda",
          "--no-centralized")


def test_rebnn_step_runs_on_the_meta_device():
    model = BNNHead(200, 2, (64,), scaling="learned").to(META)
    callbacks = method_callbacks("rebnn", model)
    for cb in callbacks:
        cb.on_train_begin(model)
    one_step(model, torch.randn(8, 200), torch.randint(0, 2, (8,)), callbacks)
