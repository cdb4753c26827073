"""The ``hybnn`` command: flags built from :mod:`hybnn.api.options`, work done by :mod:`hybnn.api`.

``hybnn --help`` and ``hybnn CMD --help`` import no torch: the option dataclasses are
torch-free and the API functions are imported when a command runs.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import os
import shlex
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from hybnn import api
from hybnn.cli.flags import add_flags, build, given, given_settings
from hybnn.errors import HybnnError, HybnnWarning

Handler = Callable[[argparse.Namespace], int]


def to_json(obj: Any) -> str:
    """Strict JSON: a NaN or infinite number (which ``json.dumps`` would print as the invalid
    ``NaN``/``Infinity``) becomes ``null``."""
    return json.dumps(_finite(obj), allow_nan=False)


def printable(text: Any) -> str:
    """``str(text)`` safe to print as one terminal line: each character that is not printable
    (newline, escape, any control or format character) as its Python escape, e.g. ``\\x1b``."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def cmd_pretrain(args: argparse.Namespace) -> int:
    opts = build(api.PretrainOptions, args)
    enc = api.pretrain(opts)
    usage = json.loads((Path(opts.out) / "bit_usage.json").read_text())
    print(f"encoder {enc.fingerprint[:12]} -> {opts.out} ({usage['dead_bits']} dead bits of "
          f"{usage['bits']}, {usage['unique_codes']} unique codes over {usage['samples']} images)")
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    opts = build(api.DistillOptions, args)
    enc = api.distill(opts)
    agree = enc.meta["bit_agreement"]
    print(f"binary encoder {enc.fingerprint[:12]} ({enc.meta['student']} student, teacher "
          f"{enc.teacher_fingerprint[:12]}) -> "
          f"{opts.out}; bit agreement with the teacher: train {100 * agree['train']:.2f} %, "
          f"test {100 * agree['test']:.2f} %")
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    opts = build(api.QuantizeOptions, args)
    graph = api.quantize(opts)
    cal = graph.meta["quantization"]["calibration"]
    agree = graph.meta.get("bit_agreement")
    same = (f"; {100 * agree['equal_bits']:.2f} % of the bits equal float32's on "
            f"{agree['images']} {agree['split']} images" if agree else "")
    print(f"int8 encoder {graph.fingerprint[:12]} (from encoder {graph.quantized_from[:12]}, "
          f"calibrated on {cal['size']} {cal['source']} {cal['split']} images) -> "
          f"{opts.out} ({len(graph.onnx)} bytes of ONNX){same}")
    return 0


def cmd_recode(args: argparse.Namespace) -> int:
    opts = build(api.RecodeOptions, args)
    enc = api.recode(opts)
    print(f"encoder {enc.fingerprint[:12]} (recoded from {enc.meta['recoded_from'][:12]}), "
          f"codes from {opts.code}: {enc.latent_bits} bits, {-(-enc.latent_bits // 8)} B a "
          f"code -> {opts.out}")
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    opts = build(api.ExtractOptions, args)
    store = api.extract(opts)
    print(f"{len(store)} codes x {store.num_bits} bits ({store.bytes_per_sample} B each) "
          f"-> {opts.out}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    opts = build(api.TrainOptions, args)
    _, history = api.train(opts)
    if os.environ.get("RANK", "0") != "0":  # under torchrun: rank 0 reports
        return 0
    acc = history.last("test_acc")
    msg = f"test accuracy {acc:.4f}" if acc == acc else "no test split given"
    print(f"trained {opts.model} for {len(history.epochs)} epochs -> {opts.out}; {msg}; "
          f"{history.train_seconds_per_epoch():.3f} s/epoch")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from hybnn.pipeline.metrics import per_class_table

    opts = build(api.EvaluateOptions, args)
    result = api.evaluate(opts)
    if opts.json:
        print(to_json(result))
        return 0
    print(f"{result['arch']} on {result['task']} ({result['split']}, {result['samples']} "
          f"samples): accuracy {100 * result['accuracy']:.2f} %, loss {result['loss']:.4f}\n")
    print(per_class_table(result["per_class"], result["confusion"]))
    print(f"\nconfusion matrix -> {result['confusion_png']}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    opts = build(api.PredictOptions, args)
    rows = api.predict(opts)
    if opts.json:
        print(to_json(rows))
    else:
        for r in rows:
            print(f"{printable(r['input'])}: {printable(r['name'])} "
                  f"(p={r['probability']:.3f})")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    opts = build(api.ExportOptions, args)
    header = api.export(opts)
    if opts.format == "c":
        print(f"exported {header['arch']} ({header['layers']} layers) as C99 -> "
              f"{header['header']}, {header['source']} ({8 * header['weight_words']} bytes of "
              f"weights, {8 * header['work_words']} bytes of work buffer)")
        return 0
    size = Path(opts.out).stat().st_size
    if header["kind"] == "bundle":
        enc = header["encoder"]
        print(f"bundle: {enc['precision']} encoder {enc['fingerprint'][:12]} + BNN head "
              f"({len(header['head']['layers'])} layers) -> {opts.out} ({size} bytes)")
        return 0
    parts = (f"{len(header['layers'])} layers" if "layers" in header
             else f"a graph of {len(header['graph']['nodes'])} nodes")
    print(f"exported {header['arch']} ({parts}) -> {opts.out} ({size} bytes)")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    print(api.summary(build(api.SummaryOptions, args)))
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from hybnn.experiments.config import ReproduceConfig

    config = ReproduceConfig.make(**given_settings(ReproduceConfig, args, "config__"))
    api.reproduce(build(api.ReproduceOptions, args, config=config))
    return 0


def cmd_continual(args: argparse.Namespace) -> int:
    from hybnn.experiments.continual_config import ContinualConfig

    config = ContinualConfig.make(**given(args, "config__"))
    api.continual(build(api.ContinualOptions, args, config=config))
    return 0


def cmd_federate(args: argparse.Namespace) -> int:
    opts = build(api.FederateOptions, args)
    if opts.deploy and opts.insecure:
        print("hybnn: warning: --insecure: the SuperLink and SuperNodes run without TLS and "
              "without SuperNode authentication", file=sys.stderr)
    res = api.federate(opts)
    cfg = opts.config
    up, down = res["bytes_up_per_client_round"] or 0, res["bytes_down_per_client_round"] or 0
    central = res["centralized_acc"]
    clients_acc = res["rounds"][-1].get("clients_global_acc") if res["rounds"] else None
    if res["final_acc"] is not None:
        accuracy = f"global accuracy {res['final_acc']:.4f}"
    elif clients_acc is not None:  # node data without --server-test: the nodes' test sets
        accuracy = f"federated evaluation {clients_acc:.4f} (the nodes' own test sets)"
    else:
        accuracy = "no accuracy (no server test set, no client evaluation)"
    print(f"{res['model']} {cfg.task}, {res['clients']} clients x {cfg.rounds} rounds "
          f"({res.get('runtime')}): {accuracy}"
          + (f" (centralized {central:.4f})" if central is not None else "")
          + f"; per client per round {up:,.0f} B up, {down:,.0f} B down ({res['encoding']})"
          f" -> {opts.out}/results.json")
    return 0


def cmd_pki(args: argparse.Namespace) -> int:
    # --server-name may be repeated; the flag alone keeps only its last use, so gather all.
    names = argparse.ArgumentParser(add_help=False)
    names.add_argument("--server-name", action="extend", nargs="+", default=[])
    args.server_name = names.parse_known_args(args.argv[1:])[0].server_name
    opts = build(api.PkiOptions, args)
    creds = api.pki(opts)
    tls, keys = creds.tls, creds.node_keys
    print(f"CA, SuperLink certificate for {', '.join(opts.server_name)} and {len(keys)} "
          f"SuperNode key pairs -> {tls.ca_cert.parent}")
    print("copy to each machine (private keys 0600; the CA's private key was never written):")
    public = [key.public.name for key in keys]
    public = public if len(public) <= 3 else [public[0], "..", public[-1]]
    print(f"  SuperLink host: {tls.ca_cert.name}, {tls.server_cert.name}, "
          f"{tls.server_key.name} (+ {' '.join(public)} to register: "
          "flwr supernode register supernode-<i>.pub <connection>)")
    for i, key in enumerate(keys):
        print(f"  SuperNode {i}: {tls.ca_cert.name}, {key.private.name} (private key; never "
              "copy it elsewhere)")
    return 0


def cmd_partition(args: argparse.Namespace) -> int:
    opts = build(api.PartitionOptions, args)
    files = api.partition(opts)
    manifest = files.manifest
    sizes = [n["samples"] for n in manifest["nodes"]]
    print(f"{len(sizes)} node files ({opts.partition}, {min(sizes)}-{max(sizes)} images each) "
          f"and the server's test file ({manifest['server_test']['samples']} images) -> "
          f"{files.root}")
    print("copy node-<i>.npz to node i's machine only; run the federation on them with")
    print("  hybnn federate --encoder DIR " + " ".join(shlex.quote(f)
                                                       for f in files.federate_flags()))
    return 0


def cmd_study_rebnn(args: argparse.Namespace) -> int:
    opts = build(api.StudyOptions, args)
    api.study_rebnn(opts)
    print(Path(opts.out, "table.md").read_text())
    print(f"results -> {opts.out}/results.json, plots -> {opts.out}/plots/")
    return 0


COMMANDS: list[tuple[str, type, Handler, str]] = [
    ("pretrain", api.PretrainOptions, cmd_pretrain,
     "phase 1: train and freeze the binary-latent VAE"),
    ("distill", api.DistillOptions, cmd_distill,
     "distil a fully binary encoder from the frozen VAE (labels unused)"),
    ("quantize", api.QuantizeOptions, cmd_quantize,
     "the frozen encoder as an int8 ONNX graph: train on the codes the int8 bundle computes"),
    ("recode", api.RecodeOptions, cmd_recode,
     "the frozen VAE with its codes from another layer: wider codes, no training"),
    ("extract", api.ExtractOptions, cmd_extract,
     "phase 2: encode a data set into packed binary codes"),
    ("train", api.TrainOptions, cmd_train,
     "phase 3: train the BNN head on codes, or a CNN baseline"),
    ("evaluate", api.EvaluateOptions, cmd_evaluate, "accuracy of a trained model on a split"),
    ("predict", api.PredictOptions, cmd_predict, "classify image files or an array file"),
    ("export", api.ExportOptions, cmd_export,
     "export a BNN head or binary CNN for the packed engine, or a deployable bundle"),
    ("summary", api.SummaryOptions, cmd_summary, "binary vs float parameters and deployed bytes"),
    ("reproduce", api.ReproduceOptions, cmd_reproduce,
     "the paper's whole experiment, honestly (main job)"),
    ("continual", api.ContinualOptions, cmd_continual,
     "continual learning: the pair tasks in order, one head, replay / EWC / joint"),
    ("federate", api.FederateOptions, cmd_federate,
     "FedHyBNN on Flower: simulation here, or --deploy with real SuperLink/SuperNode "
     "processes on 127.0.0.1"),
    ("pki", api.PkiOptions, cmd_pki,
     "certificates and keys for a deployment over several machines, and where each goes"),
    ("partition", api.PartitionOptions, cmd_partition,
     "a federation's partition of a data set as one data file per node"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hybnn", allow_abbrev=False, description="Hybrid binary neural networks: HyBNN, "
        "FedHyBNN, ReBNN and a packed XNOR/popcount inference engine.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, options, handler, help_text in COMMANDS:
        p = sub.add_parser(name, help=help_text, description=options.__doc__,
                           allow_abbrev=False)  # --ep is not silently --epochs
        add_recipe_flag(p)
        add_flags(p, options)
        p.set_defaults(func=handler)
    study = sub.add_parser("study", help="method studies (rebnn: ste vs xnor vs ReBNN)")
    studies = study.add_subparsers(dest="study", required=True, metavar="STUDY")
    r = studies.add_parser("rebnn", allow_abbrev=False,
                           help="ReBNN vs ste/xnor: accuracy and weight oscillation",
                           description=api.StudyOptions.__doc__)
    add_recipe_flag(r)
    add_flags(r, api.StudyOptions)
    r.set_defaults(func=cmd_study_rebnn)
    return parser


def add_recipe_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", dest="recipe", metavar="FILE", default=argparse.SUPPRESS,
                        help="a recipe (TOML) of this command's settings, e.g. "
                        "configs/paper.toml; flags given beside it override it")


def apply_recipe(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """Make the settings of the ``--config FILE`` in ``argv`` the defaults of the command it
    is given to (so flags still override them); a bad recipe ends in one error line."""
    path = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"),
                next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None))
    if path is None:
        return
    from hybnn.cli.recipes import read_recipe, recipe_defaults

    words = [a for a in argv if not a.startswith("-")]
    command = _subparser(parser, words)
    name = command.prog.removeprefix("hybnn ").replace(" ", "-")
    try:
        defaults = recipe_defaults(command, read_recipe(path, name), path, name)
    except HybnnError as exc:
        print(f"hybnn: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    for action in command._actions:
        if action.dest in defaults:
            action.required = False  # the recipe gives it
    command.set_defaults(**defaults)


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """``parser.parse_args(argv)``, but an unknown flag is reported by the subcommand that
    got it, with its usage and the closest flags it has ("did you mean"); so is an unknown
    command."""
    words = [a for a in argv if not a.startswith("-")]
    commands = next((a.choices for a in parser._actions
                     if isinstance(a, argparse._SubParsersAction)), {})
    if words and words[0] not in commands and argv and argv[0] == words[0]:
        close = difflib.get_close_matches(words[0], list(commands), n=1, cutoff=0.6)
        parser.error(f"unknown command {words[0]!r}"
                     + (f": did you mean {close[0]}?" if close else
                        f"; choose from {', '.join(commands)}"))
    apply_recipe(parser, argv)
    args, extra = parser.parse_known_args(argv)
    if not extra:
        return args
    command = _subparser(parser, [a for a in argv if not a.startswith("-")])
    known = [o for action in command._actions for o in action.option_strings]
    hints = []
    for flag in (e.split("=", 1)[0] for e in extra if e.startswith("-")):
        close = ([k for k in known if k.startswith(flag)][:3]  # an abbreviation
                 or difflib.get_close_matches(flag, known, n=1, cutoff=0.6))
        if close:
            hints.append(f"{flag}: did you mean {' or '.join(close)}?")
    command.error(f"unrecognized arguments: {' '.join(extra)}"
                  + (f" ({'; '.join(hints)})" if hints else ""))
    raise AssertionError("unreachable: error() exits")


def _subparser(parser: argparse.ArgumentParser, words: list[str]) -> argparse.ArgumentParser:
    """The deepest subcommand parser that ``words`` (the non-flag arguments) name."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for word in words:
                if word in action.choices:
                    return _subparser(action.choices[word], words[words.index(word) + 1:])
    return parser


# Third-party modules that only an extra installs (pyproject.toml), and that extra.
EXTRAS = {"torch": "train", "tqdm": "train", "matplotlib": "train", "sklearn": "train",
          "mlxtend": "train", "onnx": "train", "onnxscript": "train", "flwr": "fed",
          "ray": "fed", "cryptography": "fed"}


def missing_extra(exc: ModuleNotFoundError) -> str | None:
    """The extra that installs the module ``exc`` misses, or None if no extra does."""
    return EXTRAS.get((exc.name or "").split(".")[0])


def _show_warning(message: Warning | str, category: type[Warning], filename: str,
                  lineno: int, file: TextIO | None = None, line: str | None = None) -> None:
    """hybnn's own warnings as one ``hybnn: warning:`` line; others as Python shows them."""
    if issubclass(category, HybnnWarning):
        print(f"hybnn: warning: {printable(message)}", file=sys.stderr)
    else:
        _PYTHON_SHOWWARNING(message, category, filename, lineno, file, line)


_PYTHON_SHOWWARNING = warnings.showwarning


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    warnings.showwarning = _show_warning
    args = parse(build_parser(), argv)
    args.argv = argv  # the command line, recorded beside results that need it
    try:
        return int(args.func(args) or 0)
    except HybnnError as exc:
        print(f"hybnn: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"hybnn: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "),
              file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        extra = missing_extra(exc)
        if extra is None:
            raise
        print(f"hybnn: error: {args.command} needs {exc.name}: pip install 'hybnn[{extra}]'",
              file=sys.stderr)
        return 2
    except MemoryError:
        print("hybnn: error: out of memory (an input or setting too large for this machine)",
              file=sys.stderr)
        return 2
    except RecursionError:
        print("hybnn: error: an input is nested too deeply to read (e.g. JSON in meta.json)",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hybnn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
