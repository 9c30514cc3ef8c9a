"""The wheel ships the training package split by model and none of the experiments: the
package discovery of pyproject.toml (setuptools ``find`` under ``src``) sees exactly that."""

from __future__ import annotations

import tomllib
from pathlib import Path

from setuptools import find_packages

REPO = Path(__file__).resolve().parents[2]


def test_package_discovery_finds_every_model_and_no_experiment() -> None:
    find = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    found = set(find_packages(str(REPO / find["find"]["where"][0])))
    for model in ("cxr", "mmg", "ct_brain", "ct_chest", "xrv"):
        assert f"radsight_train.{model}" in found
    assert not any(name.split(".")[0] == "experiments" for name in found)
    assert (REPO / "experiments" / "mmg_convergence.py").is_file()  # they exist, outside src
