"""The statistics training and the model cards use come from the platform's one metrics
module (:mod:`radsight.monitor.metrics`): DeLong AUROC intervals, Wilson proportions, and the
seeded paired bootstraps the experiments compare designs with."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from radsight.monitor.metrics import (
    case_bootstrap,
    paired_auroc_bootstrap,
    paired_difference,
    wilson,
)


def _scores(seed: int = 3) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(40, int), np.zeros(60, int)]
    good = labels * 1.2 + rng.normal(0, 1, 100)
    weak = labels * 0.3 + rng.normal(0, 1, 100)
    return labels, {"good": good, "weak": weak}


def test_paired_auroc_bootstrap_gives_each_auroc_and_its_difference_to_the_base() -> None:
    labels, scores = _scores()
    out = paired_auroc_bootstrap(labels, scores, "good", n_boot=300, seed=11)
    for name, s in scores.items():
        est = out[name].auroc
        assert est.value == pytest.approx(roc_auc_score(labels, s))
        assert 0.0 <= est.lower < est.value < est.upper <= 1.0
    base = out["good"].minus_base
    assert (base.value, base.lower, base.upper) == (0.0, 0.0, 0.0)
    diff = out["weak"].minus_base
    assert diff.value == pytest.approx(out["weak"].auroc.value - out["good"].auroc.value)
    assert diff.lower < diff.value < diff.upper < 0.0  # clearly worse: the whole CI below 0
    again = paired_auroc_bootstrap(labels, scores, "good", n_boot=300, seed=11)
    assert again["weak"].minus_base == diff  # seeded: the same interval every run


def test_paired_auroc_bootstrap_refuses_a_missing_base() -> None:
    labels, scores = _scores()
    with pytest.raises(ValueError, match="base score"):
        paired_auroc_bootstrap(labels, scores, "absent")


def test_paired_difference_of_hit_rates() -> None:
    rng = np.random.default_rng(5)
    a = rng.random(83) < 0.6
    b = rng.random(83) < 0.4
    est = paired_difference(a, b, n_boot=500, seed=20240601)
    assert est.value == pytest.approx(a.mean() - b.mean())
    assert est.lower < est.value < est.upper and est.n == 83
    same = paired_difference(a, a, n_boot=500)
    assert (same.value, same.lower, same.upper) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="equally long"):
        paired_difference(a, b[:-1])


def test_case_bootstrap_of_a_mean() -> None:
    values = np.linspace(0.0, 1.0, 50)
    est = case_bootstrap(len(values), lambda i: float(values[i].mean()), n_boot=400, seed=1)
    assert est.value == pytest.approx(0.5)
    assert 0.35 < est.lower < 0.5 < est.upper < 0.65
    with pytest.raises(ValueError):
        case_bootstrap(0, lambda i: 0.0)


def test_estimate_as_tuple_is_the_model_cards_shape() -> None:
    p, lo, hi = wilson(7, 10).as_tuple()
    assert p == 0.7 and 0.39 < lo < p < hi < 0.92


def test_mmg_comparisons_keep_the_experiments_json_shape() -> None:
    """The mammography training and experiments write these rows into marks.json and the
    experiments' JSON; the card's "Also tried" tables quote them."""
    pytest.importorskip("torch", reason="radsight_train.mmg needs the train extra")
    from radsight_train.mmg.marks import compare_aurocs, paired_hits

    labels, scores = _scores()
    out = compare_aurocs(labels, scores, "good")
    assert set(out["weak"]) == {"auroc", "ci", "minus_good", "paired_ci"}
    assert out["good"]["minus_good"] == 0.0 and out["good"]["paired_ci"] == [0.0, 0.0]
    assert out["weak"]["paired_ci"][1] < 0.0
    a = np.array([1, 1, 0, 1] * 20, bool)
    b = np.array([0, 1, 0, 1] * 20, bool)
    diff, low, high = paired_hits(a, b)
    assert diff == 0.25 and low < 0.25 < high
