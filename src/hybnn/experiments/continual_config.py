"""Settings of the continual-learning experiment (``hybnn continual``); no torch import."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hybnn.data.names import DEFAULT_SOURCE, PAPER_TASKS
from hybnn.models.names import SPECS
from hybnn.pipeline.config import PretrainConfig
from hybnn.settings import setting

# class: one head over every class, no task id at test time; domain: one 2-output head,
# the label is the position of the class in its pair.
SCENARIOS = ("class", "domain")
SCENARIO_TITLES = {"class": "class-incremental", "domain": "domain-incremental"}
# finetune: the paper's failure; replay: stored codes; generative: codes sampled from
# per-class bit frequencies; ewc: a quadratic penalty; joint: every task so far at once.
STRATEGIES = ("finetune", "replay", "generative", "ewc", "joint")
STRATEGY_TITLES = {
    "finetune": "fine-tuning",
    "replay": "replay (stored codes)",
    "generative": "generative replay (Bernoulli bits)",
    "ewc": "EWC",
    "joint": "joint (ceiling)",
}
# Strategies whose memory is held to --memory-fraction (the benchmark's <= 1 % target):
# replay's reservoir is sized to it, generative replay picks its bits per frequency to fit.
BUDGETED = ("replay", "generative")
# What --quick changes (about a minute on 2 cores); every other field keeps its default.
CONTINUAL_QUICK: dict[str, Any] = {"seeds": [0], "epochs": 5, "vae_epochs": 3}


@dataclass
class ContinualConfig:
    data: str = setting(DEFAULT_SOURCE, "data source")
    tasks: list[str] = setting(help="pair tasks, in the order they arrive (the paper's five)",
                               factory=lambda: list(PAPER_TASKS))
    scenarios: list[str] = setting(help="class: one 10-class head, no task id at test time; "
                                   "domain: one 2-output head", factory=lambda: list(SCENARIOS),
                                   choices=SCENARIOS)
    strategies: list[str] = setting(help="continual-learning strategies compared",
                                    factory=lambda: list(STRATEGIES), choices=STRATEGIES)
    seeds: list[int] = setting(help="seeds (quick: 0)", factory=lambda: [0, 1, 2])
    memory_fraction: float = setting(0.01, "memory budget of replay and generative replay, as "
                                     "a fraction of the bytes of all training codes (+1 B "
                                     "label each)")
    generator_bits: int | None = setting(None, "bits per stored bit frequency of generative "
                                         "replay (default: the most, up to 8, that fit the "
                                         "memory budget; mnist-5k: 4, 100 B per class)")
    # measured on mnist-5k class-incremental (3 seeds, contrastive encoder): final accuracy
    # 94.05 % (T 1, 1x) -> 94.6 % (T 1.33, 2x) -> 95.4 % (T 2, 2x); T 2.9: 95.3; 3x: 94.9
    generator_temperature: float = setting(2.0, "sampling temperature of generative replay "
                                           "(P(bit) = sigmoid(logit(f) / T); 1: the stored "
                                           "frequencies f)")
    generator_samples: float = setting(2.0, "generated codes per old class, as a multiple of "
                                       "a new class's training codes")
    ewc_lambda: float = setting(100.0, "weight of the EWC penalty")
    # 15 epochs at batch 128 keep the full run (30 sequences of 5 tasks) to minutes
    epochs: int = setting(15, "head epochs per task (quick: 5)")
    lr: float = setting(SPECS["head"].lr, "head learning rate")
    batch_size: int = setting(128, "batch size")
    hidden: list[int] = setting(help="hidden widths of the 2-output (domain) head",
                                factory=lambda: [128])
    hidden_multiclass: list[int] = setting(help="hidden widths of the class-incremental head",
                                           factory=lambda: [512])
    latent_bits: int = setting(PretrainConfig.latent_bits, "latent bits of the VAE",
                               flag="--bits")
    vae_epochs: int = setting(PretrainConfig.epochs, "phase-1 epochs (quick: 3)")
    encoder: str | None = setting(None, "reuse a pretrained encoder directory (skip phase 1)")
    device: str = setting("cpu", "torch device: cpu, cuda, cuda:1, ...")
    quick: bool = setting(False, "one seed, few epochs (about a minute)")

    @classmethod
    def make(cls, quick: bool = False, **values: Any) -> ContinualConfig:
        """The full run, or the ``--quick`` preset; ``values`` override either."""
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise TypeError(f"unknown continual setting(s): {', '.join(sorted(unknown))}")
        preset = CONTINUAL_QUICK if quick else {}
        return cls(**{**preset, **{k: v for k, v in values.items() if v is not None},
                      "quick": quick})
