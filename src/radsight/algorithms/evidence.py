"""Shipped evidence: the calibration summary a package ships beside its model (pure).

A built-in algorithm keeps ``evidence.json`` next to its code: the figures of its model
card as the summary ``radsight evaluate`` stores (reference, number of studies, classes,
AUROC with its 95 % CI, sensitivity and specificity at the operating point, how and when it
was measured). ``python -m radsight_train evidence`` writes it from a reference set; the
admission gate judges it by the acceptance rule in force (docs/quality.md, "Admission").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from radsight.errors import ConfigError


def load_evidence(path: Path, name: str, version: str) -> dict[str, Any] | None:
    """The evidence at ``path`` for exactly ``name`` ``version``; None when there is none.

    Evidence of another version is no evidence for this one (a new version must earn its
    own): it is ignored, not an error.
    """
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"shipped evidence {path} is unreadable: {exc}") from exc
    algorithm = data.get("algorithm") or {}
    if (algorithm.get("name"), algorithm.get("version")) != (name, version):
        return None
    return data
