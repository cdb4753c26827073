"""The ``hybnn`` command. Every subcommand is a thin wrapper around a library function."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from hybnn.errors import HybnnError

DEFAULT_DATA = "mnist-5k"


def _common_train(p: argparse.ArgumentParser, epochs: int | None = None) -> None:
    p.add_argument("--epochs", type=int, default=epochs,
                   help="training epochs (default: 100 for hybnn, 15 for CNNs)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=None,
                   help="Adam learning rate (default: 1e-2 binary, 1e-3 float)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")


def _progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hybnn", description="Hybrid binary neural networks: HyBNN, FedHyBNN, ReBNN and a "
        "packed XNOR/popcount inference engine.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("pretrain", help="phase 1: train and freeze the binary-latent VAE")
    p.add_argument("--data", default=DEFAULT_DATA, help="data source (default: %(default)s)")
    p.add_argument("--out", default="runs/encoder", help="encoder directory to write")
    p.add_argument("--bits", type=int, default=200, help="latent bits (default: 200)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--beta", type=float, default=0.25, help="KL weight (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    _progress(p)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("extract", help="phase 2: encode a data set into packed binary codes")
    p.add_argument("--encoder", required=True, help="encoder directory from `hybnn pretrain`")
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--task", default="all", help="all, or a pair such as 0v1")
    p.add_argument("--split", choices=("train", "test", "all"), default="train")
    p.add_argument("--out", required=True, help="code store file to write (.safetensors)")
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("train", help="phase 3: train the BNN head on codes, or a CNN baseline")
    p.add_argument("--model", choices=("hybnn", "bcnn", "fpcnn"), default="hybnn")
    p.add_argument("--codes", help="training code store (hybnn)")
    p.add_argument("--test-codes", help="code store evaluated every epoch (hybnn)")
    p.add_argument("--hidden", type=int, nargs="+", default=[128], help="hidden widths")
    p.add_argument("--data", default=DEFAULT_DATA, help="data source (bcnn, fpcnn)")
    p.add_argument("--task", default="0v1", help="task (bcnn, fpcnn)")
    p.add_argument("--prep", choices=("unit", "centered"), default="centered",
                   help="input preparation for CNNs: unit = paper setting, centered = fair")
    p.add_argument("--scaling", choices=("none", "xnor", "learned"), default="none")
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--resume", action="store_true", help="continue from out/checkpoint.pt")
    _common_train(p)
    _progress(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="accuracy of a trained model on a split")
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--codes", help="code store to evaluate a BNN head on")
    p.add_argument("--encoder", help="encoder directory (a BNN head evaluated on images)")
    p.add_argument("--data", default=None, help="data source (default: the model's)")
    p.add_argument("--task", default=None, help="task (default: the model's)")
    p.add_argument("--split", choices=("train", "test", "all"), default="test")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="classify image files or an array file")
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--encoder", help="encoder directory (needed for a BNN head)")
    p.add_argument("--engine", choices=("torch", "packed"), default="torch",
                   help="torch (default) or the packed XNOR/popcount engine")
    p.add_argument("--json", action="store_true", help="print predictions as JSON")
    p.add_argument("inputs", nargs="+", help="PNG/JPEG images, .npy arrays or .npz (x)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="export a BNN head or binary CNN for the packed engine")
    p.add_argument("model", help="model directory (from `hybnn train`)")
    p.add_argument("--out", required=True, help="engine file to write (e.g. head.hybe)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("summary", help="binary vs float parameters and deployed bytes")
    p.add_argument("model", help="model directory")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("reproduce", help="the paper's whole experiment, honestly (main job)")
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--out", default="runs/reproduce")
    p.add_argument("--quick", action="store_true", help="fewer epochs and seeds (< 3 min)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="default: 0 1 2")
    p.add_argument("--tasks", nargs="+", default=None,
                   help="default: the paper's 0v1 2v3 4v5 6v7 8v9")
    p.add_argument("--encoder", help="reuse a pretrained encoder directory (skip phase 1)")
    p.add_argument("--vae-epochs", type=int, help="phase-1 epochs (default 20, quick 5)")
    p.add_argument("--head-epochs", type=int, help="BNN-head epochs (default 100, quick 40)")
    p.add_argument("--cnn-epochs", type=int, help="baseline CNN epochs (default 15, quick 3)")
    p.add_argument("--max-train", type=int, help="cap training samples per task")
    p.add_argument("--device", default="cpu")
    _progress(p)
    p.set_defaults(func=cmd_reproduce)

    from hybnn.experiments.study_cli import register as register_study
    register_study(sub)
    from hybnn.federated.cli import register as register_federate
    register_federate(sub)
    return parser


def cmd_pretrain(args: argparse.Namespace) -> int:
    from hybnn.experiments.workflows import pretrain_on_source
    from hybnn.pipeline.pretrain import PretrainConfig

    config = PretrainConfig(args.bits, args.epochs, args.batch_size, args.lr, args.beta,
                            seed=args.seed, device=args.device)
    enc = pretrain_on_source(args.data, args.out, config, progress=not args.no_progress)
    usage = json.loads((Path(args.out) / "bit_usage.json").read_text())
    print(f"encoder {enc.fingerprint[:12]} -> {args.out} ({usage['dead_bits']} dead bits of "
          f"{usage['bits']}, {usage['unique_codes']} unique codes over {usage['samples']} images)")
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    from hybnn.experiments.workflows import extract_codes

    store = extract_codes(args.encoder, args.data, args.task, args.split)
    store.save(args.out)
    print(f"{len(store)} codes x {store.num_bits} bits ({store.bytes_per_sample} B each) "
          f"-> {args.out}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from hybnn.experiments.workflows import train_from_args

    history = train_from_args(args)
    acc = history.last("test_acc")
    msg = f"test accuracy {acc:.4f}" if acc == acc else "no test split given"
    print(f"trained {args.model} for {len(history.epochs)} epochs -> {args.out}; {msg}; "
          f"{history.train_seconds_per_epoch():.3f} s/epoch")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from hybnn.experiments.workflows import evaluate_model

    result = evaluate_model(args.model, codes=args.codes, encoder=args.encoder,
                            data=args.data, task=args.task, split=args.split)
    print(json.dumps(result))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from hybnn.experiments.workflows import predict_files

    rows = predict_files(args.model, args.inputs, encoder=args.encoder, engine=args.engine)
    if args.json:
        print(json.dumps(rows))
    else:
        for r in rows:
            print(f"{r['input']}: class {r['class']} (p={r['probability']:.3f})")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from hybnn.engine import export_artifact
    from hybnn.errors import ArtifactError

    try:
        header = export_artifact(args.model, args.out)
    except (TypeError, ValueError) as exc:  # an architecture or layer the engine cannot run
        raise ArtifactError(f"cannot export {args.model}: {exc}") from None
    size = Path(args.out).stat().st_size
    print(f"exported {header['arch']} ({len(header['layers'])} layers) -> {args.out} "
          f"({size} bytes)")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from hybnn.binary.summary import summary_table
    from hybnn.models.io import load_model

    model, _ = load_model(args.model)
    print(summary_table(model))
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from hybnn.experiments.reproduce import ReproduceConfig, reproduce

    overrides = {k: v for k, v in (("encoder", args.encoder), ("vae_epochs", args.vae_epochs),
                                   ("head_epochs", args.head_epochs),
                                   ("cnn_epochs", args.cnn_epochs),
                                   ("max_train", args.max_train)) if v is not None}
    config = ReproduceConfig.make(data=args.data, quick=args.quick, seeds=args.seeds,
                                  tasks=args.tasks, device=args.device, **overrides)
    reproduce(config, args.out, progress=not args.no_progress)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except HybnnError as exc:
        print(f"hybnn: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"hybnn: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "),
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hybnn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
