"""Ten classes on wider codes: the benchmark's frozen VAE read at its conv maps (`hybnn recode`).

Used by `bench/hybnn_targets.py`, or standalone on a finished reproduce run with `all`:
python -m bench.wide_codes RUN_DIR [--encoder DIR] [--out DIR] [--layers conv3 conv2]
[--json FILE]. For each code layer, the reproduce run's encoder (phase 1
as measured, labels unused) is recoded, the `all` training and test splits are encoded with
it, and the ten-class head trains with the run's own recipe (epochs, batch, lr, code noise,
hidden widths) for every seed. Rows are cached in OUT/DATA/wide/LAYER.json with their
settings, so a rerun with the same settings reuses them.
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as `python bench/NAME.py`: import bench.* from the repository root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import json
import statistics
import time
from dataclasses import asdict
from typing import Any

from bench.common import target, write_json
from hybnn.experiments.config import ReproduceConfig
from hybnn.settings import from_dict

LAYERS = ("conv3", "conv2")


def wide_code_rows(config: ReproduceConfig, encoder_dir: Path, out: Path,
                   layers: tuple[str, ...] = LAYERS) -> dict[str, dict[str, Any]]:
    """Per code layer: bits, bytes per code, the head's `all` accuracy per seed, its seconds
    per epoch and the extraction's microseconds per image."""
    from hybnn import api
    from hybnn.data import load_source, select_task, train_test
    from hybnn.encoders.vae import load as load_encoder
    from hybnn.experiments.reproduce import _subsample
    from hybnn.pipeline.extract import encode_to_codes
    from hybnn.pipeline.fit import train_head

    source = load_encoder(encoder_dir)
    train, test = train_test(load_source(config.data))
    tr = _subsample(select_task(train, "all"), config.max_train, 0)
    te = select_task(test, "all")
    rows = {}
    for layer in layers:
        settings = {"layer": layer, "encoder": source.fingerprint, "seeds": list(config.seeds),
                    "head": asdict(config.head_train_config(0)),
                    "hidden": config.head.hidden_multiclass, "samples": len(tr)}
        cache = out / f"{layer}.json"
        if cache.is_file() and json.loads(cache.read_text())["settings"] == settings:
            rows[layer] = json.loads(cache.read_text())
            continue
        encoder = api.recode(api.RecodeOptions(encoder=str(encoder_dir), code=layer,
                                               out=str(out / layer)))
        t0 = time.perf_counter()
        train_codes = encode_to_codes(encoder, tr, {"task": "all", "split": "train"})
        extract_us = 1e6 * (time.perf_counter() - t0) / len(tr)
        test_codes = encode_to_codes(encoder, te, {"task": "all", "split": "test"})
        accs, epoch_s = [], []
        for seed in config.seeds:
            _, history = train_head(train_codes, test_codes, config.head_train_config(seed),
                                    config.head.hidden_multiclass, progress=False)
            accs.append(history.last("test_acc"))
            epoch_s.append(statistics.mean(history.series("seconds")))
            print(f"wide codes {config.data} {layer} seed {seed}: {100 * accs[-1]:.2f} %",
                  flush=True)
        rows[layer] = {"layer": layer, "bits": encoder.latent_bits,
                       "bytes_per_code": -(-encoder.latent_bits // 8),
                       "acc_mean": statistics.mean(accs),
                       "acc_std": statistics.pstdev(accs), "accs": accs,
                       "head_s_per_epoch": statistics.mean(epoch_s),
                       "extract_us_per_image": extract_us,
                       "code_encoder": encoder.fingerprint[:12], "settings": settings}
        out.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(rows[layer], indent=2))
    return rows


def wide_code_targets(data: str, rows: dict[str, dict[str, Any]], all_row: dict[str, Any],
                      latent_bytes: int) -> list[dict[str, Any]]:
    """The ten-class gap target once per wider code, beside the latent's own target line."""
    found = []
    cnn, latent = all_row["fpcnn"]["acc_mean"], all_row["hybnn"]
    bcnn_epoch = all_row["bcnn_centered"]["train_s_per_epoch"]
    for layer, r in rows.items():
        gap = 100 * (cnn - r["acc_mean"])
        detail = (f"- all, {layer} codes ({r['bits']} bits, {r['bytes_per_code']} B a code vs "
                  f"the latent's {latent_bytes}): HyBNN "
                  f"{100 * r['acc_mean']:.2f} ± {100 * r['acc_std']:.2f} % vs FP CNN "
                  f"{100 * cnn:.2f} %: gap {gap:.2f} points (target <= 1): "
                  f"{'PASS' if gap <= 1 else 'MISS'}; the latent's "
                  f"{100 * latent['acc_mean']:.2f} %; head epoch {r['head_s_per_epoch']:.2f} s "
                  f"vs the binary CNN's {bcnn_epoch:.2f} s in the reproduce run "
                  f"({bcnn_epoch / r['head_s_per_epoch']:.1f}x, not interleaved); extraction "
                  f"{r['extract_us_per_image']:.1f} µs an image")
        found.append({**target(f"all {data} gap vs float CNN, {layer} codes (points)",
                               round(gap, 2), "<= 1", gap <= 1), "detail": detail})
    return found


def all_run_results(parser: argparse.ArgumentParser, run: Path) -> dict[str, Any]:
    """A finished reproduce run's results.json; one parser error where it has no `all`."""
    results: dict[str, Any] = json.loads((run / "results.json").read_text())
    if "all" not in results["tasks"]:
        parser.error(f"{run} has no `all` task")
    return results


def main() -> None:
    """Standalone: the wide-code targets of one finished reproduce run, as JSON targets."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="reproduce run directory with the `all` task "
                        "(results.json inside)")
    parser.add_argument("--encoder", type=Path, help="encoder directory (default: the one the "
                        "run's results.json records)")
    parser.add_argument("--out", type=Path, help="where the recoded encoders and cached rows "
                        "go (default: RUN/../wide)")
    parser.add_argument("--layers", nargs="+", default=list(LAYERS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", metavar="FILE", help="write the targets here as JSON")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    results = all_run_results(parser, args.run)
    config = from_dict(ReproduceConfig, results["config"])
    encoder = args.encoder or Path(results["encoder"]["path"])
    rows = wide_code_rows(config, encoder, args.out or args.run.parent / "wide",
                          tuple(args.layers))
    found = wide_code_targets(config.data, rows, results["tasks"]["all"],
                              -(-config.vae.latent_bits // 8))
    for t in found:
        print(t["detail"])
    if args.json:
        write_json(args.json, found, threads=args.threads, wide_codes=rows,
                   command=" ".join(["python -m bench.wide_codes", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
