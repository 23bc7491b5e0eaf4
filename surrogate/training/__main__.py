"""``python -m surrogate.training``: train on a prepared store, alone or under torchrun.

Examples::

    python -m surrogate.training --store runs/x/prepare --out runs/x/train --set train.steps=200
    torchrun --nproc_per_node 4 -m surrogate.training --config configs/<domain>/train.yaml \\
        --store runs/x/prepare --out runs/x/train

Under torchrun every process runs this; gradients are averaged, so the effective batch size is
train.batch_size x nproc (surrogate.training.distributed). Only rank 0 prints and writes checkpoints.
No MLflow tracking here: that is the ``surrogate train`` stage's job.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from surrogate.errors import SurrogateError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m surrogate.training", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML config (any subset of sections; the domain defaults to the store's)")
    parser.add_argument("--store", required=True, help="prepare output folder (store.h5 + transform.json)")
    parser.add_argument("--out", required=True, help="folder for checkpoints/")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    from surrogate.config import load_config
    from surrogate.training.loop import train

    rank = int(os.environ.get("RANK", "0"))
    try:
        cfg = load_config(args.config, [*_store_domain(Path(args.store)), *args.set])
        result = train(cfg, Path(args.store), Path(args.out), progress=not args.no_progress)
    except SurrogateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if rank == 0:
        print(f"{result.steps} steps in {result.seconds:.1f} s ({result.steps_per_second:.2f} steps/s) on "
              f"{result.device}; last checkpoint {result.checkpoint}")
    return 0


def _store_domain(store_dir: Path) -> list[str]:
    """``["domain=<name>"]`` from the store's attributes (prepare writes it), so a config may omit it."""
    from surrogate.data.hdf5 import open_h5

    path = store_dir / "store.h5"
    if not path.is_file():
        return []
    with open_h5(path) as f:
        domain = f.attrs.get("domain")
    return [f"domain={domain}"] if isinstance(domain, str) and domain else []


if __name__ == "__main__":
    sys.exit(main())
