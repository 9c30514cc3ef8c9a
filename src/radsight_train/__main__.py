"""``python -m radsight_train cxr`` trains; ``python -m radsight_train evaluate cxr`` evaluates."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from radsight_train.data import REPO_ROOT, default_data_root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="radsight-train")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data",
        type=Path,
        default=None,
        help="shared data root (default: $RADSIGHT_SHARED_DATA or ../shared/data)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser(
        "cxr", parents=[common], help="train the chest radiograph model and export it to ONNX"
    )
    tr.add_argument("--epochs", type=int, default=16)
    tr.add_argument("--pediatric-per-class", type=int, default=600)
    tr.add_argument("--threads", type=int, default=2)
    tr.add_argument(
        "--max-minutes",
        type=float,
        default=0,
        help="wall-clock budget: the schedule anneals by time if it runs out",
    )
    tr.add_argument(
        "--recalibrate",
        action="store_true",
        help="no training: calibrate and export the last checkpoint in --work again",
    )
    tr.add_argument("--work", type=Path, default=REPO_ROOT / "build" / "cxr-train")
    ev = sub.add_parser("evaluate", parents=[common], help="evaluate an exported model")
    ev.add_argument("model", choices=["cxr"])
    ev.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "models" / "cxr")
    ev.add_argument("--bootstrap", type=int, default=2000)
    ev.add_argument("--limit", type=int, default=0, help="about this many images per set (smoke)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    data = args.data or default_data_root()
    if not (data / "cxr").is_dir():
        parser.error(f"no chest radiograph data under {data} (set --data or RADSIGHT_SHARED_DATA)")
    if args.command == "cxr":
        from radsight_train.train_cxr import train

        train(
            data,
            args.work,
            0 if args.recalibrate else args.epochs,
            args.pediatric_per_class,
            args.threads,
            args.max_minutes,
        )
    else:
        from radsight_train.evaluate_cxr import evaluate

        evaluate(data, args.out, args.bootstrap, args.limit)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
