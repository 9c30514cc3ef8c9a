"""``python -m radsight_train <model>`` trains (``cxr-tb``: the TB head of cxr);
``python -m radsight_train evaluate <model>`` evaluates (cxr, cxr-tb, ct-chest, mmg, ...);
``python -m radsight_train export-xrv`` exports torchxrayvision weights for the
``radsight-xrv`` adapter; ``python -m radsight_train evidence`` writes the evidence an
algorithm ships for its admission."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from radsight_train.data import REPO_ROOT, default_data_root


def main(argv: list[str] | None = None) -> int:
    from radsight_train.evidence import CARD_SETS  # no torch: the CLI's choices

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
    tb = sub.add_parser(
        "cxr-tb",
        parents=[common],
        help="train the tuberculosis-like lesion head on the frozen cxr backbone (TBX11K boxes)",
    )
    tb.add_argument("--work", type=Path, default=REPO_ROOT / "build" / "cxr-tb")
    ct = sub.add_parser(
        "ct-chest", parents=[common], help="train the chest CT lesion model and export it to ONNX"
    )
    ct.add_argument("--steps", type=int, default=3000)
    ct.add_argument("--threads", type=int, default=2)
    ct.add_argument("--max-minutes", type=float, default=18.0, help="wall-clock budget")
    ct.add_argument("--work", type=Path, default=REPO_ROOT / "build" / "ct-chest-train")
    mg = sub.add_parser(
        "mmg", parents=[common], help="fit the mammography model (patient-pair CV), export it"
    )
    mg.add_argument("--folds", type=int, default=5)
    mg.add_argument("--work", type=Path, default=REPO_ROOT / "build" / "mmg-train")
    cb = sub.add_parser(
        "ct-brain",
        parents=[common],
        help="cross-validate and train the brain CT haemorrhage model, export it to ONNX",
    )
    cb.add_argument("--epochs", type=int, default=200)
    cb.add_argument("--folds", type=int, default=5)
    # one thread: on the shared 2-core machine two threads ran 10x slower (oversubscribed)
    cb.add_argument("--threads", type=int, default=1)
    cb.add_argument("--work", type=Path, default=REPO_ROOT / "build" / "ct-brain-train")
    ev = sub.add_parser("evaluate", parents=[common], help="evaluate an exported model")
    ev.add_argument("model", choices=list(MODELS))
    ev.add_argument(
        "--mmg-work", type=Path, default=REPO_ROOT / "build" / "mmg-train", help="fold models"
    )
    ev.add_argument(
        "--out",
        type=Path,
        default=None,
        help="default: docs/models/<model> (cxr-tb: docs/models/cxr)",
    )
    ev.add_argument(
        "--bootstrap",
        type=int,
        default=2000,
        help="resamples for the ct-chest Dice intervals (AUROC intervals are DeLong's)",
    )
    ev.add_argument("--limit", type=int, default=0, help="about this many images per set (smoke)")
    xr = sub.add_parser(
        "export-xrv",
        help="export torchxrayvision DenseNet-121 weights to ONNX for radsight-xrv",
    )
    xr.add_argument("--weights", default="densenet121-res224-all", help="torchxrayvision name")
    xr.add_argument(
        "--weights-file", type=Path, default=None, help="a local .pt instead of downloading"
    )
    xr.add_argument("--out", type=Path, required=True, help="model directory to write")
    xr.add_argument("--version", default="1.0.0", help="algorithm version to register")
    xr.add_argument("--study-types", default="cxr", help="comma-separated, e.g. cxr,flg")
    xr.add_argument("--cache-dir", type=Path, default=None, help="default ~/.torchxrayvision")
    ed = sub.add_parser(
        "evidence",
        parents=[common],
        help="run a calibration test and write the evidence.json an algorithm ships",
    )
    ed.add_argument("algorithm", help="a registered name, or name@version")
    source = ed.add_mutually_exclusive_group(required=True)
    source.add_argument("--reference", type=Path, help="a reference set (labels.csv)")
    source.add_argument(
        "--synthetic", type=int, default=0, help="N synthetic bright-region studies"
    )
    source.add_argument(
        "--card-set",
        choices=sorted(CARD_SETS),
        default=None,
        help="a model card's test split in the shared data (--data)",
    )
    ed.add_argument("--out", type=Path, required=True, help="the evidence.json to write")
    ed.add_argument("--study-type", default=None)
    ed.add_argument("--note", default="", help="what the reference set is, in a sentence")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.command == "evidence":
        import sys

        from radsight.algorithms.registry import Registry
        from radsight_train.evidence import main as evidence_main

        data = args.data or default_data_root()
        if args.card_set is not None:
            card = CARD_SETS[args.card_set]
            if missing := card.missing(data):
                parser.error(
                    f"no {card.what} data: {', '.join(map(str, missing))} "
                    "not found (set --data or RADSIGHT_SHARED_DATA)"
                )
        evidence = evidence_main(
            Registry.from_entry_points().resolve(args.algorithm),
            out=args.out,
            reference=args.reference,
            synthetic=args.synthetic,
            study_type=args.study_type,
            note=args.note,
            argv=list(argv if argv is not None else sys.argv[1:]),
            card_set=args.card_set,
            data=data,
        )
        auroc = evidence.get("auroc") or {}
        print(
            f"{args.out}: {evidence['num_studies']} studies "
            f"({evidence['positives']} positive, {evidence['negatives']} negative, "
            f"{evidence['num_not_analysed']} not analysed), AUROC {auroc.get('value')} "
            f"(95 % CI {auroc.get('lower')}-{auroc.get('upper')}); "
            + ("passes" if evidence.get("passed") else "fails")
            + " the default acceptance rule"
            + "".join(f"; {f}" for f in evidence.get("failures", []))
        )
        return 0
    if args.command == "export-xrv":
        from radsight_train.xrv.export import ExportError, export

        try:
            config = export(
                args.out,
                args.weights,
                args.weights_file,
                args.version,
                tuple(t.strip() for t in args.study_types.split(",") if t.strip()),
                args.cache_dir,
            )
        except ExportError as exc:
            parser.exit(2, f"radsight-train export-xrv: error: {exc}\n")
        print(
            f"exported {config['name']} {config['version']} to {args.out}; run it with "
            f"RADSIGHT_XRV_MODEL_DIR={args.out.resolve()}"
        )
        return 0
    data = args.data or default_data_root()
    model = MODELS[args.model if args.command == "evaluate" else args.command]
    if not all((data / folder).is_dir() for folder in model.data.split(",")):
        parser.error(f"no {model.what} data under {data} (set --data or RADSIGHT_SHARED_DATA)")
    if args.command == "evaluate":
        model.evaluate(args, data, args.out or REPO_ROOT / "docs" / "models" / model.out)
    else:
        model.train(args, data)
    return 0


# Each model's training and evaluation entry points, imported on use (torch is heavy).


def _train_cxr(args: argparse.Namespace, data: Path) -> None:
    from radsight_train.cxr.train import train

    epochs = 0 if args.recalibrate else args.epochs
    train(data, args.work, epochs, args.pediatric_per_class, args.threads, args.max_minutes)


def _evaluate_cxr(args: argparse.Namespace, data: Path, out: Path) -> None:
    from radsight_train.cxr.evaluate import evaluate

    evaluate(data, out, args.limit)


def _train_cxr_tb(args: argparse.Namespace, data: Path) -> None:
    from radsight_train.cxr.train_tb import train

    train(data, args.work)


def _evaluate_cxr_tb(args: argparse.Namespace, data: Path, out: Path) -> None:
    from radsight_train.cxr.evaluate_tb import evaluate_tb

    evaluate_tb(data, out, args.limit)


def _train_ct_chest(args: argparse.Namespace, data: Path) -> None:
    from radsight_train.ct_chest.train import train

    train(data, args.work, args.steps, args.threads, args.max_minutes)


def _evaluate_ct_chest(args: argparse.Namespace, data: Path, out: Path) -> None:
    from radsight_train.ct_chest.evaluate import evaluate

    evaluate(data, out, args.bootstrap, args.limit)


def _train_mmg(args: argparse.Namespace, data: Path) -> None:
    from radsight_train.mmg.train import train

    train(data, args.work, args.folds)


def _evaluate_mmg(args: argparse.Namespace, data: Path, out: Path) -> None:
    from radsight_train.mmg.evaluate import evaluate

    evaluate(data, out, args.mmg_work)


def _train_ct_brain(args: argparse.Namespace, data: Path) -> None:
    from radsight_train.ct_brain.train import train

    train(data, args.work, args.epochs, args.folds, args.threads)


def _evaluate_ct_brain(args: argparse.Namespace, data: Path, out: Path) -> None:
    from radsight_train.ct_brain.evaluate import evaluate

    evaluate(data, out)


@dataclass(frozen=True)
class _Model:
    #: the folders under the data root that training and evaluation read (comma-separated)
    data: str
    #: what the data is, for the error when it is missing
    what: str
    #: evaluation output under docs/models unless --out says otherwise
    out: str
    train: Callable[[argparse.Namespace, Path], None]
    evaluate: Callable[[argparse.Namespace, Path, Path], None]


MODELS = {
    "cxr": _Model("cxr", "chest radiograph", "cxr", _train_cxr, _evaluate_cxr),
    "cxr-tb": _Model(
        # the evaluation reads the adult and pediatric sets too (specificity, firing rates)
        "cxr/tbx11k-tb-boxes-256,cxr/covid-qu-ex-adult,cxr/kermany-pediatric-pneumonia-224",
        "TBX11K / COVID-QU-Ex / Kermany",
        "cxr",
        _train_cxr_tb,
        _evaluate_cxr_tb,
    ),
    "ct-chest": _Model(
        "ct-chest/covid-semiseg-infnet",
        "chest CT",
        "ct-chest",
        _train_ct_chest,
        _evaluate_ct_chest,
    ),
    "mmg": _Model("mmg/mini-mias-train", "mammography", "mmg", _train_mmg, _evaluate_mmg),
    "ct-brain": _Model(
        "ct-brain/head-ct-hemorrhage-256",
        "head CT",
        "ct-brain",
        _train_ct_brain,
        _evaluate_ct_brain,
    ),
}


if __name__ == "__main__":
    raise SystemExit(main())
