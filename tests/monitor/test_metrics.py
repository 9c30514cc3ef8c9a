"""The statistics against reference implementations and hand-computable tables."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from radsight.monitor import metrics


def naive_delong(y, x):
    """DeLong et al. (1988) written out pairwise: placement values V10, V01 and their
    variances (O(m*n)), independent of the midrank algorithm under test."""
    pos, neg = x[y == 1], x[y == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    auc = psi.mean()
    return auc, v10.var(ddof=1) / len(pos) + v01.var(ddof=1) / len(neg)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ties", [False, True])
def test_auroc_and_delong_match_sklearn_and_the_definition(seed, ties):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    x = rng.normal(y * 0.8, 1.0)
    if ties:
        x = np.round(x, 1)  # many tied scores
    auc, var = metrics.delong(y, x)
    assert auc == pytest.approx(roc_auc_score(y, x), abs=1e-12)
    ref_auc, ref_var = naive_delong(y, x)
    assert auc == pytest.approx(ref_auc, abs=1e-12)
    assert var == pytest.approx(ref_var, rel=1e-9)
    est = metrics.auroc_ci(y, x)
    half = 1.959964 * math.sqrt(ref_var)
    assert (est.lower, est.upper) == pytest.approx((ref_auc - half, ref_auc + half), abs=1e-6)


def test_published_rating_example_hanley_mcneil_1982():
    """Hanley & McNeil, Radiology 143:29 (1982), Table 1: five-point ratings of 58 normal
    and 51 abnormal CT images; published AUC 0.893 with SE 0.032."""
    normal = np.repeat([1, 2, 3, 4, 5], [33, 6, 6, 11, 2])
    abnormal = np.repeat([1, 2, 3, 4, 5], [3, 2, 2, 11, 33])
    y = np.r_[np.zeros(len(normal)), np.ones(len(abnormal))]
    x = np.r_[normal, abnormal].astype(float)
    auc, var = metrics.delong(y, x)
    assert round(auc, 3) == 0.893
    assert math.sqrt(var) == pytest.approx(0.032, abs=0.002)  # DeLong vs their SE formula


def test_roc_points_match_sklearn():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 200)
    x = np.round(rng.random(200), 2)
    fpr, tpr, thr = metrics.roc_points(y, x)
    sf, st, sth = roc_curve(y, x, drop_intermediate=False)
    assert np.allclose(fpr, sf) and np.allclose(tpr, st) and np.allclose(thr[1:], sth[1:])


def test_confusion_figures_on_a_hand_computable_table():
    # 40 diseased: 36 called positive; 60 healthy: 9 called positive
    y = np.r_[np.ones(40), np.zeros(60)]
    x = np.r_[np.ones(36), np.zeros(4), np.ones(9), np.zeros(51)]
    c = metrics.Confusion.at(y, x, 0.5)
    assert (c.tp, c.fn, c.fp, c.tn) == (36, 4, 9, 51)
    assert c.sensitivity().value == 0.9 and c.specificity().value == 0.85
    assert c.ppv().value == pytest.approx(36 / 45) and c.npv().value == pytest.approx(51 / 55)
    assert c.agreement().value == pytest.approx(0.87)
    # Wilson interval of 36/40 by hand: (p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)
    z, n, p = 1.959964, 40, 0.9
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    s = c.sensitivity()
    assert (s.lower, s.upper) == pytest.approx((centre - half, centre + half), abs=1e-6)
    assert (round(s.lower, 3), round(s.upper, 3)) == (0.769, 0.960)


def test_wilson_edges_and_bad_input():
    assert metrics.wilson(0, 10).lower == 0.0 and metrics.wilson(10, 10).upper == 1.0
    assert math.isnan(metrics.wilson(0, 0).value)
    with pytest.raises(ValueError, match="0 <= k <= n"):
        metrics.wilson(5, 3)
    with pytest.raises(ValueError, match="0 .negative. or 1"):
        metrics.auroc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="finite"):
        metrics.auroc([0, 1], [0.1, float("nan")])


def test_bootstrap_ci_brackets_the_delong_one():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 400)
    x = rng.normal(y, 1.0)
    boot = metrics.bootstrap_ci(y, x, n_boot=500)
    de = metrics.auroc_ci(y, x)
    assert boot.value == pytest.approx(de.value)
    assert boot.lower == pytest.approx(de.lower, abs=0.02)
    assert boot.upper == pytest.approx(de.upper, abs=0.02)


def test_threshold_picking():
    y = np.array([0, 0, 0, 0, 1, 0, 1, 1, 1, 1])
    x = np.array([0.1, 0.2, 0.3, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9])
    # Youden: >= 0.6 gives sens 0.8, spec 1.0 (J 0.8); >= 0.45 gives 1.0, 0.8 (J 0.8):
    # ties go to the higher threshold
    assert metrics.pick_threshold(y, x, "youden") == 0.6
    assert metrics.pick_threshold(y, x, "sensitivity", 1.0) == 0.45
    assert metrics.pick_threshold(y, x, "sensitivity", 0.6) == 0.7
    assert metrics.pick_threshold(y, x, "specificity", 1.0) == 0.6
    assert metrics.pick_threshold(y, x, "specificity", 0.8) == 0.45
    assert metrics.parse_method("sensitivity=0.95") == ("sensitivity", 0.95)
    for bad in ("youden=1", "sensitivity", "recall=0.9", "specificity=2"):
        with pytest.raises(ValueError):
            metrics.parse_method(bad)


def test_calibration_curve():
    y = np.array([0, 0, 1, 1, 1, 0])
    p = np.array([0.05, 0.15, 0.85, 0.95, 0.9, 0.9])
    cal = metrics.calibration_curve(y, p)
    assert [b[2] for b in cal.bins] == [1, 1, 1, 3]
    assert cal.brier == pytest.approx(np.mean((p - y) ** 2))


def test_psi_and_ks():
    rng = np.random.default_rng(11)
    base = rng.normal(0, 1, 2000)
    same = rng.normal(0, 1, 2000)
    shifted = rng.normal(0.8, 1, 2000)
    assert metrics.psi(base, same) < 0.05
    assert metrics.psi(base, shifted) > 0.25
    assert metrics.ks_test(base, same)[1] > 0.01
    assert metrics.ks_test(base, shifted)[1] < 1e-6
    assert (
        metrics.psi_categorical(["GE"] * 50 + ["Siemens"] * 50, ["GE"] * 50 + ["Siemens"] * 50) == 0
    )
    assert (
        metrics.psi_categorical(["GE"] * 90 + ["Siemens"] * 10, ["GE"] * 10 + ["Siemens"] * 90) > 1
    )
