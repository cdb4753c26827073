"""Build the shipped `general` encoder from its recipe, reproducibly (one CPU thread).

    python scripts/train_general_encoder.py [--recipe configs/general-encoder.toml]
        [--out runs/general-encoder] [--ship]

Trains into --out; --ship then copies its meta.json and weights.safetensors into
src/hybnn/encoders/general/ and prints the two SHA-256 to pin in hybnn.encoders.shipped.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

from hybnn.encoders.shipped import META_NAME, WEIGHTS_NAME, shipped_dir
from hybnn.pipeline.general import pretrain_general, read_recipe

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(ROOT / "configs" / "general-encoder.toml"))
    parser.add_argument("--out", default="runs/general-encoder")
    parser.add_argument("--ship", action="store_true",
                        help="copy the result into the package (src/hybnn/encoders/general)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the same arithmetic on every machine, one core
    sources, config = read_recipe(args.recipe)
    recipe = Path(args.recipe).resolve()
    name = str(recipe.relative_to(ROOT)) if recipe.is_relative_to(ROOT) else recipe.name
    encoder = pretrain_general(sources, config, args.out, progress=True,
                               extra={"recipe": name, "threads": 1})
    print(f"encoder {encoder.fingerprint} in {args.out}")
    if args.ship:
        target = shipped_dir("general")
        target.mkdir(exist_ok=True)
        for file in (META_NAME, WEIGHTS_NAME):
            shutil.copyfile(Path(args.out) / file, target / file)
            digest = hashlib.sha256((target / file).read_bytes()).hexdigest()
            print(f"{target / file}: {(target / file).stat().st_size:,} bytes, sha256 {digest}")


if __name__ == "__main__":
    main()
