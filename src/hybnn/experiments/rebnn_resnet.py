"""The ReBNN study on the network ReBNN was made for: the binary ResNet-18
(``hybnn study rebnn --net resnet18``).

Every run goes through the ResNet trainer (:func:`hybnn.pipeline.resnet.train_resnet`),
with ReActNet's and ReBNN's two steps:

- the float twin (``resnet18-float``) is trained once, the ceiling and the teacher;
- per seed, step 1 (binary activations, real weights) is trained once per teacher setting;
- step 2 starts from it with each method (``ste``, ``reactnet``, ``rebnn``, ``rebnn-const``),
  a :class:`FlipMonitor` logging the sign flips of the 16 binary convolutions.

``without`` and ``with`` the teacher are two families of the study's results:
``resnet18`` (cross-entropy) and ``resnet18-kd`` (the distributional loss of ReActNet, in
both steps). The images are the ``centered`` preparation of the data source.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from hybnn.binary.oscillation import late_flip_ratio
from hybnn.data.dataset import Dataset
from hybnn.experiments.config import StudyConfig
from hybnn.hooks import History

PREP = "centered"
KD_SUFFIX = "-kd"


def family_name(teacher: bool) -> str:
    """``resnet18`` without the teacher, ``resnet18-kd`` with it."""
    return "resnet18" + (KD_SUFFIX if teacher else "")


def run_resnet(cfg: StudyConfig, train: Dataset, test: Dataset, out: Path, progress: bool,
               log: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Train the float twin (if a family uses it), then per family and seed step 1 and the
    methods' step 2 on ``train``, evaluated on ``test`` after every epoch. Returns (the
    families, each with its methods summarized, the float twin's result or None)."""
    from hybnn.binary.oscillation import FlipMonitor
    from hybnn.experiments.rebnn_study import summarize
    from hybnn.pipeline.config import ResNetConfig, TrainConfig
    from hybnn.pipeline.resnet import TensorImages, train_resnet

    rc = cfg.resnet
    tr, te = TensorImages.of(train, PREP), TensorImages.of(test, PREP)
    base = ResNetConfig(width=rc.width, augment=rc.augment, amp=rc.amp)
    sizes = {"train": len(tr), "test": len(te)}

    def config(epochs: int, seed: int) -> TrainConfig:
        return TrainConfig(epochs=epochs, batch_size=rc.batch_size, lr=rc.lr,
                           schedule=rc.schedule, seed=seed, device=cfg.device)

    teacher_dir: Path | None = None
    twin: dict[str, Any] | None = None
    if any(rc.teacher):
        teacher_dir = out / "teacher"
        _, h = train_resnet("resnet18-float", tr, te, PREP,
                            config(rc.teacher_epochs, cfg.subset_seed), base, teacher_dir,
                            progress=progress)
        twin = {"acc": h.last("test_acc"), "train_seconds": sum(h.series("seconds")),
                "epochs": rc.teacher_epochs, "test_acc_curve": h.series("test_acc")}
        log(f"[rebnn study] resnet18-float (teacher): test acc {twin['acc']:.4f}")
    families: dict[str, Any] = {}
    for kd in rc.teacher:
        family, t0 = family_name(kd), time.perf_counter()
        teacher = teacher_dir if kd else None
        histories: dict[str, list[History]] = {}
        step1: list[float] = []
        for seed in cfg.seeds:
            start = out / f"{family}-step1-seed{seed}"
            _, h1 = train_resnet("resnet18", tr, te, PREP, config(rc.step1_epochs, seed),
                                 replace(base, step=1), start, teacher=teacher,
                                 progress=progress)
            step1.append(h1.last("test_acc"))
            for method in cfg.methods:
                _, h = train_resnet("resnet18", tr, te, PREP, config(rc.epochs, seed),
                                    replace(base, step=2, method=method), start=start,
                                    teacher=teacher, progress=progress,
                                    callbacks=[FlipMonitor()])
                histories.setdefault(method, []).append(h)
                log(f"[rebnn study] {family} {method} seed {seed}: test acc "
                    f"{h.last('test_acc'):.4f}, late flip ratio {late_flip_ratio(h):.5f}")
        families[family] = {"methods": summarize(histories), "sizes": sizes,
                            "step1_acc": step1, "seconds": time.perf_counter() - t0}
    return families, twin
