"""The `hybnn federate` subcommand: thin wrapper around `federate` and `deploy`."""

from __future__ import annotations

import argparse

from hybnn.federated.config import MODELS, STRATEGIES, FedConfig
from hybnn.federated.encoding import ENCODINGS
from hybnn.federated.partition import SCHEMES

DEFAULTS = FedConfig()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "federate", help="FedHyBNN on Flower: simulation here, or --deploy with real "
        "SuperLink/SuperNode processes on 127.0.0.1",
        description="Federated training of the BNN head (or a CNN baseline) with Flower. "
        "Writes results.json, results.md, accuracy.png and bytes.png into --out.")
    p.add_argument("--data", default=DEFAULTS.data, help="data source (default: %(default)s)")
    p.add_argument("--task", default=DEFAULTS.task, help="all, or a pair such as 0v1")
    p.add_argument("--model", choices=MODELS, default=DEFAULTS.model,
                   help="hybnn: BNN head on codes; bcnn/fpcnn: FedAvg of the whole CNN")
    p.add_argument("--clients", type=int, default=DEFAULTS.clients)
    p.add_argument("--rounds", type=int, default=DEFAULTS.rounds)
    p.add_argument("--local-epochs", type=int, default=DEFAULTS.local_epochs)
    p.add_argument("--partition", choices=SCHEMES, default=DEFAULTS.partition,
                   help="iid, dirichlet (see --alpha) or classes (see --classes-per-client)")
    p.add_argument("--alpha", type=float, default=DEFAULTS.alpha, help="Dirichlet alpha")
    p.add_argument("--classes-per-client", type=int, default=DEFAULTS.classes_per_client)
    p.add_argument("--encoding", choices=ENCODINGS, default=DEFAULTS.encoding,
                   help="fp32: latent weights; 1bit: packed signs + per-tensor scales")
    p.add_argument("--strategy", choices=STRATEGIES, default=DEFAULTS.strategy)
    p.add_argument("--trim-beta", type=float, default=DEFAULTS.trim_beta,
                   help="fraction cut from each tail by --strategy trimmed")
    p.add_argument("--fraction", type=float, default=DEFAULTS.fraction,
                   help="fraction of clients sampled for training each round")
    p.add_argument("--fraction-evaluate", type=float, default=DEFAULTS.fraction_evaluate,
                   help="fraction asked to evaluate the global model on their own data")
    p.add_argument("--min-clients", type=int, default=DEFAULTS.min_clients,
                   help="nodes needed to start a round and valid updates to aggregate")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed)
    p.add_argument("--lr", type=float, default=DEFAULTS.lr,
                   help="learning rate (default: 1e-2 binary, 1e-3 float)")
    p.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size)
    p.add_argument("--encoder", default="", help="encoder directory (default: pretrain one)")
    p.add_argument("--pretrain-epochs", type=int, default=20,
                   help="VAE epochs when no --encoder is given")
    p.add_argument("--round-timeout", type=float, default=DEFAULTS.round_timeout,
                   help="seconds to wait for replies in a round")
    p.add_argument("--no-centralized", action="store_true",
                   help="skip the centralized reference run")
    p.add_argument("--deploy", action="store_true",
                   help="run a real deployment: flower-superlink, --clients flower-supernode "
                   "processes and `flwr run` on 127.0.0.1, then stop them")
    p.add_argument("--out", default="runs/federate", help="output directory")
    p.set_defaults(func=cmd_federate)


def config_from_args(args: argparse.Namespace) -> FedConfig:
    return FedConfig(
        data=args.data, task=args.task, model=args.model, clients=args.clients,
        rounds=args.rounds, local_epochs=args.local_epochs, partition=args.partition,
        alpha=args.alpha, classes_per_client=args.classes_per_client, encoding=args.encoding,
        strategy=args.strategy, trim_beta=args.trim_beta, fraction=args.fraction,
        fraction_evaluate=args.fraction_evaluate,
        min_clients=min(args.min_clients, args.clients), seed=args.seed, lr=args.lr,
        batch_size=args.batch_size, encoder=args.encoder, round_timeout=args.round_timeout,
    )


def cmd_federate(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if args.deploy:
        from hybnn.federated.deploy import deploy

        res = deploy(cfg, args.out, pretrain_epochs=args.pretrain_epochs,
                     centralized=not args.no_centralized)
    else:
        from hybnn.federated.simulation import federate

        res = federate(cfg, args.out, pretrain_epochs=args.pretrain_epochs,
                       centralized=not args.no_centralized)
    up, down = res["bytes_up_per_client_round"] or 0, res["bytes_down_per_client_round"] or 0
    central = res["centralized_acc"]
    print(f"{res['model']} {cfg.task}, {res['clients']} clients x {cfg.rounds} rounds "
          f"({res.get('runtime')}): global accuracy {res['final_acc']:.4f}"
          + (f" (centralized {central:.4f})" if central is not None else "")
          + f"; per client per round {up:,.0f} B up, {down:,.0f} B down ({res['encoding']})"
          f" -> {args.out}/results.json")
    return 0
