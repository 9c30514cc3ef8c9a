"""The command line every experiment takes: ``python -m experiments.<name> [DATA] [WORK]``."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from radsight_train.data import REPO_ROOT, default_data_root


def arguments(
    argv: list[str] | None, usage: str | None, work_name: str
) -> tuple[Path, Path] | None:
    """The data folder and the work folder (``build/<work_name>`` by default), with logging
    set up; ``None`` once the usage is printed for ``-h`` / ``--help``."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] in (["-h"], ["--help"]):
        print(usage)
        return None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    data = Path(args[0]) if args else default_data_root()
    work = Path(args[1]) if len(args) > 1 else REPO_ROOT / "build" / work_name
    return data, work
