"""`hybnn train --model resnet18` under torchrun: 2 CPU processes (gloo on 127.0.0.1) take
one optimizer step that equals one process's step on the same global batch.

On CPU each process normalizes its batch-norm layers over its own half of the batch
(SyncBatchNorm needs CUDA), so the one-process reference takes the same two halves through
the same network and averages their losses, as DistributedDataParallel averages gradients.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import torch
import torch.nn.functional as F

from hybnn.data import load_split
from hybnn.models.io import load_model
from hybnn.pipeline.config import ResNetConfig
from hybnn.pipeline.loop import Schedule
from hybnn.pipeline.resnet import TensorImages, build_resnet


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_processes_take_the_step_of_one(tmp_path, write_cifar):
    data = f"cifar10:{write_cifar(tmp_path / 'cifar', records=2)}"  # 10 training images
    out = tmp_path / "ddp"
    lr, batch = 0.01, 10  # one step: the whole training set
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYBNN_NO_PROGRESS": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node",
         "2", "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "-m", "hybnn",
         "train", "--model", "resnet18", "--data", data, "--width", "4", "--epochs", "1",
         "--batch-size", str(batch), "--lr", str(lr), "--augment", "none", "--out", str(out),
         "--no-progress"], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.count("trained resnet18") == 1  # rank 0 reports, and saves
    ddp, meta = load_model(out)
    assert (out / "checkpoint.pt").is_file() and len(meta["history"]) == 1

    images = TensorImages.of(load_split(data, "all", "train"), "centered")
    torch.manual_seed(0)  # the run's seed, before the model is built
    model = build_resnet("resnet18", images.shape, 10, ResNetConfig(width=4), step=1)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    idx = next(Schedule(1, lr, batch, 0).batches(len(images), 0))  # the one full batch
    model.train()
    loss = sum(F.cross_entropy(model(images.x[idx[r::2]]), images.y[idx[r::2]])
               for r in range(2)) / 2
    loss.backward()
    optimizer.step()
    trained = ddp.state_dict()
    moved = 0
    for name, p in model.named_parameters():
        assert torch.allclose(trained[name], p.detach(), atol=1e-5), name
        moved += int(not torch.equal(trained[name], start[name]))
    assert moved > 10  # the step changed the weights
