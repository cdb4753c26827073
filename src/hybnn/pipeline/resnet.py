"""Train the binary ResNet-18 (ReActNet's two steps, ReBNN) and its float twin.

The recipe of ReActNet and ReBNN: Adam; step 1 binarizes the activations and keeps the
weights real; step 2 starts from step 1's weights and binarizes them too, by plain sign
(``ste``), sign times mean |w| (``reactnet``) or ReBNN's learned scale and reconstruction
loss (``rebnn``); either step may learn from a float twin's output distribution
(``teacher``: KL(teacher || student) replaces the cross-entropy, ReActNet's distributional
loss). Images come from memory (:class:`TensorImages`) or are streamed from an image folder
by a DataLoader with worker processes (:class:`StreamedImages`); standard augmentation
(random crop with padding, horizontal flip) is applied to each batch.

The epochs run in the one loop (:func:`hybnn.pipeline.loop.run_epochs`), so the seeded
order, the checkpoint after every epoch and ``resume`` are those of every other model.
Under ``torchrun`` (``WORLD_SIZE`` > 1) the run is data-parallel: each of the loop's
batches is split across the processes (rank r takes every world-th sample from r, a
DistributedSampler's sharding applied to the same global batch), DistributedDataParallel
averages the gradients, and only rank 0 writes checkpoints and the model. Batch norm uses
each process's own samples on CPU (gloo); on CUDA it is synchronized (SyncBatchNorm).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from hybnn.artifacts import require_kind_or_absent
from hybnn.binary.layers import binary_layers
from hybnn.binary.methods import method_callbacks, method_scaling
from hybnn.data.dataset import Dataset
from hybnn.data.folder import FolderImages, ImageFiles, worker_error
from hybnn.data.labels import LabelSpace
from hybnn.data.prep import prepare
from hybnn.errors import ArtifactError, DataError
from hybnn.hooks import Callback, History
from hybnn.models.binary_resnet import BinaryResNet, FloatResNet
from hybnn.models.io import MODEL_KIND, load_model
from hybnn.pipeline.adam import make_adam
from hybnn.pipeline.checkpoint import CHECKPOINT_NAME, run_tag
from hybnn.pipeline.config import ResNetConfig, TrainConfig
from hybnn.pipeline.fit import save_trained
from hybnn.pipeline.loop import Schedule, run_epochs
from hybnn.pipeline.train import optimizer_step, resolve_device

EVAL_BATCH = 256
# step 2's --method -> the binary-layer method of hybnn.binary.methods
BINARY_METHOD = {"ste": "ste", "reactnet": "xnor", "rebnn": "rebnn", "rebnn-const": "rebnn-const"}


class TensorImages:
    """Prepared images (N, C, H, W) and labels held in memory."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, label_space: LabelSpace,
                 name: str) -> None:
        if len(x) != len(y) or x.dim() != 4:
            raise DataError(f"{name}: images must be (N, C, H, W) with a label each")
        if not torch.isfinite(x).all():
            raise DataError(f"{name}: images contain NaN or infinite values")
        self.x, self.y, self.label_space, self.name = x, y, label_space, name

    @classmethod
    def of(cls, data: Dataset, prep: str) -> TensorImages:
        return cls(torch.from_numpy(prepare(data.x, prep)),
                   torch.from_numpy(data.y.astype(np.int64)), data.label_space, data.name)

    def __len__(self) -> int:
        return len(self.y)

    @property
    def shape(self) -> tuple[int, int, int]:
        c, h, w = self.x.shape[1:]
        return int(c), int(h), int(w)

    def batches(self, index: Iterable[torch.Tensor]) -> Iterator[tuple[torch.Tensor,
                                                                        torch.Tensor]]:
        for idx in index:
            yield self.x[idx], self.y[idx]

    def fingerprint(self) -> tuple[torch.Tensor, ...]:
        return self.x, self.y


class StreamedImages:
    """Images of a folder read on demand by ``workers`` processes, resized to ``size``."""

    def __init__(self, files: ImageFiles, size: int, prep: str, workers: int) -> None:
        if len(files) == 0:
            raise DataError(f"{files.root}: no images for this task and split")
        self.data = FolderImages(files, size)
        self.files, self.size, self.prep, self.workers = files, size, prep, workers
        self.label_space, self.name = files.label_space, f"folder:{files.root}"

    def __len__(self) -> int:
        return len(self.files)

    @property
    def shape(self) -> tuple[int, int, int]:
        return 3, self.size, self.size

    def batches(self, index: Iterable[torch.Tensor]) -> Iterator[tuple[torch.Tensor,
                                                                        torch.Tensor]]:
        loader: torch.utils.data.DataLoader[Any] = torch.utils.data.DataLoader(
            self.data, batch_sampler=(idx.tolist() for idx in index),  # type: ignore[arg-type]
            num_workers=self.workers)
        try:
            for xb, yb in loader:
                x = xb.float().div_(255.0)
                yield (x - 0.5 if self.prep == "centered" else x), yb.long()
        except DataError as exc:  # re-raised from a worker with its traceback in the text
            raise (worker_error(exc) or exc) from None

    def fingerprint(self) -> tuple[torch.Tensor, ...]:
        paths = "\n".join(str(p) for p in self.files.files).encode()
        digest = torch.frombuffer(bytearray(hashlib.sha256(paths).digest()), dtype=torch.uint8)
        return digest, torch.from_numpy(self.files.labels), torch.tensor([self.size])


Images = TensorImages | StreamedImages


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random crop after zero padding by 1/8 of the side (4 pixels at 32), and a random
    horizontal flip, per image (zero is mid-grey in the centred preparation)."""
    n, c, h, w = x.shape
    pad = max(1, min(h, w) // 8)
    padded = F.pad(x, (pad, pad, pad, pad))
    # offsets drawn by the CPU generator, the crop one gather on x's device
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    out = padded[torch.arange(n, device=x.device)[:, None, None, None],
                 torch.arange(c, device=x.device)[None, :, None, None], rows, cols]
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    return torch.where(flip.view(-1, 1, 1, 1), out.flip(3), out)


def autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager[Any]:
    """bfloat16 autocast on ``device`` with ``amp`` (no loss scaling needed), else nothing."""
    return torch.autocast(device.type, torch.bfloat16) if amp else contextlib.nullcontext()


def distribution_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """ReActNet's distributional loss: KL(softmax(teacher) || softmax(student)), batch mean."""
    return F.kl_div(F.log_softmax(student, 1), F.log_softmax(teacher, 1), log_target=True,
                    reduction="batchmean")


def build_resnet(arch: str, shape: tuple[int, int, int], num_classes: int,
                 resnet: ResNetConfig, step: int = 1, scaling: str = "none") -> BinaryResNet:
    """``resnet18`` (step 1: real weights; step 2: binary, with ``scaling``) or
    ``resnet18-float`` for images of ``shape`` (C, H, W)."""
    c, h, w = shape
    if arch == "resnet18-float":
        return FloatResNet(num_classes, c, resnet.width, stem=resnet.stem, image_size=(h, w))
    if arch == "resnet18":
        return BinaryResNet(num_classes, c, resnet.width, scaling=scaling, stem=resnet.stem,
                            weights="real" if step == 1 else "binary", image_size=(h, w))
    raise ValueError(f"unknown ResNet {arch!r}; use resnet18 or resnet18-float")


def start_from_step1(model: BinaryResNet, directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Load step 1's weights (``hybnn train --model resnet18 --step 1``) into the binary
    ``model`` of step 2; a learned scale starts at mean |w| of its channel. Returns step 1's
    metadata."""
    prev, meta = load_model(directory)
    if type(prev) is not BinaryResNet or \
            prev.config.get("weights") != "real":
        raise DataError(f"--from {directory}: not a step-1 resnet18 (train one with "
                        "`hybnn train --model resnet18 --step 1`)")
    same = ("num_classes", "in_channels", "width", "blocks", "stem")
    diff = [k for k in same if prev.config[k] != model.config[k]]
    if diff:
        raise DataError(f"--from {directory}: its {', '.join(diff)} differ from this run's "
                        f"({', '.join(f'{k}={prev.config[k]}' for k in diff)})")
    missing, unexpected = model.load_state_dict(prev.state_dict(), strict=False)
    if unexpected or any(not k.endswith(".alpha") for k in missing):
        raise ArtifactError(f"--from {directory}: weights do not fit step 2 ({missing}, "
                            f"{unexpected})")
    with torch.no_grad():
        for _, layer in binary_layers(model):
            layer.clip_latent_()
            if layer.scaling == "learned":
                layer.alpha.copy_(layer._mean_abs_weight())
    return meta


def load_teacher(directory: str | os.PathLike[str], model: BinaryResNet,
                 prep: str) -> nn.Module:
    """A float ResNet trained by hybnn, frozen, for the classes, channels and input
    preparation of ``model``."""
    teacher, meta = load_model(directory)
    if not isinstance(teacher, FloatResNet):
        raise DataError(f"--teacher {directory}: a {meta['config']['arch']} model; the teacher "
                        "is a resnet18-float (`hybnn train --model resnet18-float`)")
    for key in ("num_classes", "in_channels"):
        if teacher.config[key] != model.config[key]:
            raise DataError(f"--teacher {directory}: {key} {teacher.config[key]} differs "
                            f"from this run's {model.config[key]}")
    if meta.get("prep") != prep:
        raise DataError(f"--teacher {directory} was trained on --prep {meta.get('prep')}, "
                        f"this run uses {prep}")
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.eval()


class Distributed:
    """This process's place in a ``torchrun`` run (rank 0 of 1 without one)."""

    def __init__(self, device: torch.device) -> None:
        self.started = False
        if dist.is_available() and not dist.is_initialized() and \
                int(os.environ.get("WORLD_SIZE", "1")) > 1:
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            self.started = True
        on = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if on else 0
        self.world = dist.get_world_size() if on else 1

    def device(self, device: torch.device) -> torch.device:
        """One GPU per process: ``cuda`` becomes ``cuda:LOCAL_RANK``."""
        if device.type == "cuda" and self.world > 1 and device.index is None:
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return device

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        if self.world == 1:
            return model
        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def sum(self, *values: torch.Tensor) -> list[float]:
        """The sum of each value over the processes."""
        t = torch.stack([v.detach().double().cpu() for v in values])
        if self.world > 1:
            dist.all_reduce(t)
        return t.tolist()

    def close(self) -> None:
        if self.started:
            dist.destroy_process_group()


@torch.no_grad()
def evaluate_images(model: nn.Module, data: Images, device: torch.device,
                    batch_size: int = EVAL_BATCH) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` in eval mode on ``data``."""
    was = model.training
    model.eval()
    loss, correct = 0.0, 0
    for xb, yb in data.batches(torch.arange(len(data)).split(batch_size)):
        logits = model(xb.to(device))
        yb = yb.to(device)
        loss += float(F.cross_entropy(logits, yb, reduction="sum"))
        correct += int((logits.argmax(1) == yb).sum())
    model.train(was)
    return loss / max(len(data), 1), correct / max(len(data), 1)


def fit_resnet(model: BinaryResNet, train: Images, test: Images | None, config: TrainConfig,
               augmentation: str = "standard", teacher: nn.Module | None = None,
               callbacks: Sequence[Callback] = (), checkpoint: Path | None = None,
               resume: bool = False, progress: bool = True, desc: str = "train resnet",
               tag_settings: dict[str, Any] | None = None, amp: bool = False) -> History:
    """Train ``model`` on ``train`` (the module docstring says how); evaluates on ``test``
    after every epoch on rank 0. Returns the history (on rank 0 with the test results).
    ``amp`` runs the forward passes in bfloat16 autocast (no loss scaling needed)."""
    device = resolve_device(config.device)
    world = Distributed(device)
    try:
        device = world.device(device)
        if config.batch_size < 2 * world.world:
            raise DataError(f"--batch-size {config.batch_size} is split over {world.world} "
                            f"processes: give at least 2 per process")
        model.to(device)
        net = world.wrap(model, device)
        if teacher is not None:
            teacher.to(device)
        optimizer = make_adam(model, config)
        callbacks = list(callbacks)
        for cb in callbacks:
            cb.on_train_begin(model)
        latent = [layer for _, layer in binary_layers(model)]
        for layer in latent:
            layer.clip_latent_()
        settings = {k: v for k, v in asdict(config).items() if k != "device"}
        tag = run_tag(model, {**settings, "augment": augmentation, **(tag_settings or {})},
                      *train.fingerprint())

        def body(epoch: int, batches: Iterator[torch.Tensor]) -> dict[str, Any]:
            net.train()
            gen = torch.Generator().manual_seed(
                (config.seed * 100_003 + epoch) * 1_009 + world.rank)
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            kd_sum = torch.zeros((), dtype=torch.float64, device=device)
            correct = torch.zeros((), dtype=torch.long, device=device)
            seen = torch.zeros((), dtype=torch.long, device=device)
            shards = (idx[world.rank::world.world] for idx in batches if len(idx) >= world.world)
            for xb, yb in train.batches(shards):
                xb, yb = xb.to(device), yb.to(device)
                if augmentation == "standard":
                    xb = augment(xb, gen)
                with autocast(device, amp):
                    logits = net(xb).float()
                    if teacher is not None:
                        with torch.no_grad():
                            soft = teacher(xb).float()
                loss = F.cross_entropy(logits, yb)
                objective = loss
                if teacher is not None:
                    objective = distribution_loss(logits, soft)
                    kd_sum += objective.detach() * len(yb)
                optimizer_step(model, optimizer, objective, callbacks, latent)
                with torch.no_grad():
                    loss_sum += loss.detach() * len(yb)
                    correct += (logits.argmax(1) == yb).sum()
                    seen += len(yb)
            loss_t, kd_t, correct_t, n = world.sum(loss_sum, kd_sum, correct, seen)
            logs = {"train_loss": loss_t / max(n, 1), "train_acc": correct_t / max(n, 1)}
            if teacher is not None:
                logs["distill_loss"] = kd_t / max(n, 1)
            return logs

        def after(epoch: int, logs: dict[str, Any]) -> None:
            if test is not None and world.rank == 0:
                logs["test_loss"], logs["test_acc"] = evaluate_images(model, test, device)
            for cb in callbacks:
                cb.on_epoch_end(model, epoch, logs)

        schedule = Schedule(config.epochs, config.lr, config.batch_size, config.seed,
                            config.schedule)
        history = run_epochs(schedule, len(train), model, optimizer, body, desc=desc,
                             progress=progress and world.rank == 0, checkpoint=checkpoint,
                             resume=resume, tag=tag, after=after,
                             write_checkpoints=world.rank == 0)
        model.eval()
        return history
    finally:
        world.close()


def train_resnet(arch: str, train: Images, test: Images | None, prep: str, config: TrainConfig,
                 resnet: ResNetConfig, out: str | os.PathLike[str] | None = None,
                 resume: bool = False, start: str | os.PathLike[str] | None = None,
                 teacher: str | os.PathLike[str] | None = None, progress: bool = True,
                 extra: dict[str, Any] | None = None,
                 callbacks: Sequence[Callback] = ()) -> tuple[BinaryResNet, History]:
    """``hybnn train --model resnet18|resnet18-float``: build the model of ``resnet``'s step
    (step 2 from the step-1 model in ``start``), train it, save it into ``out`` (rank 0).
    ``callbacks`` run after the method's own (e.g. a :class:`FlipMonitor`)."""
    resnet.validate()
    step = resnet.step or 1
    if arch == "resnet18-float" and (resnet.step or start):
        raise DataError("--step and --from are the binary resnet18's two steps; "
                        "resnet18-float trains in one")
    if step == 2 and start is None:
        raise DataError("--step 2 binarizes the weights of a step-1 model: give --from "
                        "STEP1_DIR (from `hybnn train --model resnet18 --step 1`)")
    if step == 1 and start is not None:
        raise DataError("--from starts step 2 from a step-1 model: add --step 2")
    if out is not None and int(os.environ.get("RANK", "0")) == 0:
        require_kind_or_absent(out, MODEL_KIND)
    method = (resnet.method or "rebnn") if step == 2 else None
    binary = BINARY_METHOD[method] if method else None
    torch.manual_seed(config.seed)
    model = build_resnet(arch, train.shape, len(train.label_space), resnet, step,
                         method_scaling(binary) if binary else "none")
    info: dict[str, Any] = {"step": step if arch == "resnet18" else None, "method": method}
    if start is not None:
        meta = start_from_step1(model, start)
        if meta.get("prep") != prep:
            raise DataError(f"--from {start} was trained on --prep {meta.get('prep')}; use it "
                            "for step 2 too")
        info["from"] = str(start)
    frozen = None
    if teacher is not None:
        frozen = load_teacher(teacher, model, prep)
        info["teacher"] = str(teacher)
    callbacks = [*(method_callbacks(binary, model) if binary else []), *callbacks]
    history = fit_resnet(model, train, test, config, resnet.augment, frozen, callbacks,
                         Path(out) / CHECKPOINT_NAME if out is not None else None, resume,
                         progress, desc=f"train {arch}" + (f" step {step}" if info["step"]
                                                           else ""),
                         tag_settings={**asdict(resnet), **info}, amp=resnet.amp)
    if out is not None and int(os.environ.get("RANK", "0")) == 0:
        save_trained(out, model, history, config, {
            "prep": prep, "source": train.name, "label_space": train.label_space.to_json(),
            "resnet": {**asdict(resnet), **info}, **(extra or {})})
    return model, history
