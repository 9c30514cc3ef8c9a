"""Diagnostic accuracy statistics with confidence intervals (pure: numpy and scipy).

- AUROC with its DeLong variance (DeLong, DeLong & Clarke-Pearson, Biometrics 44:837,
  1988), computed with the midrank algorithm of Sun & Xu (IEEE SPL 21:1389, 2014);
- a stratified percentile bootstrap for any statistic, a case-resampling one for a
  statistic of case indices (Efron & Tibshirani, An Introduction to the Bootstrap, 1993),
  and seeded paired bootstraps of a difference in hit rates or in AUROC (the same
  resamples for both sides, so their correlation is kept);
- sensitivity, specificity, PPV and NPV with Wilson score intervals (Wilson, JASA 1927);
- operating-point selection (Youden's J, a target sensitivity or specificity);
- reliability (calibration) curve, expected calibration error and Brier score;
- drift: the population stability index and the two-sample Kolmogorov-Smirnov test.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from radsight.errors import InvalidInput

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Estimate:
    """A figure with its 95 % interval; ``n`` is how many cases it rests on."""

    value: float
    lower: float
    upper: float
    n: int = 0

    def to_json(self) -> dict[str, float | int | None]:
        def r(x: float) -> float | None:
            return None if math.isnan(x) else round(x, 4)

        return {"value": r(self.value), "lower": r(self.lower), "upper": r(self.upper), "n": self.n}

    def as_tuple(self) -> tuple[float, float, float]:
        """``(value, lower, upper)``: the shape of the model cards' ``metrics.json`` files."""
        return self.value, self.lower, self.upper


NAN = Estimate(float("nan"), float("nan"), float("nan"), 0)


def _as_arrays(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray):  # type: ignore[no-untyped-def]
    y = np.asarray(labels)
    x = np.asarray(scores, dtype=np.float64)
    if y.shape != x.shape or y.ndim != 1:
        raise ValueError(f"labels and scores must be 1-D and equally long ({y.shape} vs {x.shape})")
    if not np.isin(y, (0, 1, True, False)).all():
        raise ValueError("labels must be 0 (negative) or 1 (positive)")
    if not np.isfinite(x).all():
        raise ValueError("scores must be finite numbers")
    return y.astype(bool), x


def _midranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    n = len(x)
    ranks = np.empty(n, dtype=np.float64)
    i = 0
    while i < n:
        j = i
        while j < n and xs[j] == xs[i]:
            j += 1
        ranks[order[i:j]] = 0.5 * (i + j - 1) + 1
        i = j
    return ranks


def delong(
    labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray
) -> tuple[float, float]:
    """AUROC and its DeLong variance (ties count one half)."""
    y, x = _as_arrays(labels, scores)
    pos, neg = x[y], x[~y]
    m, n = len(pos), len(neg)
    if m == 0 or n == 0:
        return float("nan"), float("nan")
    tz = _midranks(np.r_[pos, neg])
    tx, ty = _midranks(pos), _midranks(neg)
    auc = float((tz[:m].sum() - m * (m + 1) / 2) / (m * n))
    v01 = (tz[:m] - tx) / n  # placement of each positive among the negatives
    v10 = 1.0 - (tz[m:] - ty) / m  # placement of each negative among the positives
    s01 = float(np.var(v01, ddof=1)) if m > 1 else 0.0
    s10 = float(np.var(v10, ddof=1)) if n > 1 else 0.0
    return auc, s01 / m + s10 / n


def auroc(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    return delong(labels, scores)[0]


def auroc_ci(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> Estimate:
    """AUROC with its 95 % DeLong interval, clipped to [0, 1]."""
    y = np.asarray(labels)
    auc, var = delong(labels, scores)
    if math.isnan(auc):
        return Estimate(float("nan"), float("nan"), float("nan"), len(y))
    half = Z95 * math.sqrt(max(var, 0.0))
    return Estimate(auc, max(0.0, auc - half), min(1.0, auc + half), len(y))


def bootstrap_ci(
    labels: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    statistic: Callable[[np.ndarray, np.ndarray], float] = auroc,
    n_boot: int = 2000,
    seed: int = 20240601,
) -> Estimate:
    """Percentile bootstrap, resampling positives and negatives separately."""
    y, x = _as_arrays(labels, scores)
    point = statistic(y.astype(int), x)
    pi, ni = np.flatnonzero(y), np.flatnonzero(~y)
    if len(pi) == 0 or len(ni) == 0:
        return Estimate(point, float("nan"), float("nan"), len(y))
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        idx = np.r_[rng.choice(pi, len(pi)), rng.choice(ni, len(ni))]
        boots.append(statistic(y[idx].astype(int), x[idx]))
    lo, hi = np.nanpercentile(boots, [2.5, 97.5])
    return Estimate(point, float(lo), float(hi), len(y))


def case_bootstrap(
    n: int,
    statistic: Callable[[np.ndarray], float],
    n_boot: int = 2000,
    seed: int = 20240601,
) -> Estimate:
    """A statistic of ``n`` cases with its 95 % percentile bootstrap interval.

    Parameters
    ----------
    n
        How many cases (slices, images, studies) the statistic is computed over.
    statistic
        Maps an array of case indices (with repeats) to the figure, e.g. the mean Dice of
        those slices or the pixels found over the pixels there are in them.
    n_boot, seed
        Resamples of ``n`` cases drawn with replacement from ``numpy.random.default_rng(seed)``.

    Returns
    -------
    Estimate
        The statistic of all cases and the 2.5th and 97.5th percentiles of the resamples.
    """
    if n <= 0:
        raise ValueError(f"a bootstrap needs cases, got {n}")
    rng = np.random.default_rng(seed)
    boots = [statistic(rng.integers(0, n, n)) for _ in range(n_boot)]
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return Estimate(float(statistic(np.arange(n))), float(lo), float(hi), n)


def paired_difference(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    n_boot: int = 2000,
    seed: int = 20240601,
) -> Estimate:
    """Mean of ``a`` minus mean of ``b`` over the same cases, with a paired bootstrap CI.

    Used for two hit rates measured on the same images (e.g. two mark rankers' top-mark
    hits): each resample draws cases with replacement and takes both means on it.

    Parameters
    ----------
    a, b
        Per-case values (hits as 0/1 or booleans), equally long.
    n_boot, seed
        ``n_boot`` resamples, drawn at once as ``default_rng(seed).integers(0, n, (n_boot, n))``.

    Returns
    -------
    Estimate
        The difference and the 2.5th and 97.5th percentiles of the resampled differences.
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or len(x) == 0:
        raise ValueError(
            f"paired values must be 1-D, equally long and not empty ({x.shape} vs {y.shape})"
        )
    rows = np.random.default_rng(seed).integers(0, len(x), (n_boot, len(x)))
    diff = x[rows].mean(1) - y[rows].mean(1)
    lo, hi = np.percentile(diff, [2.5, 97.5])
    return Estimate(float(x.mean() - y.mean()), float(lo), float(hi), len(x))


@dataclass(frozen=True)
class AurocComparison:
    """One score's AUROC and its difference to the base score, both with bootstrap CIs."""

    auroc: Estimate
    minus_base: Estimate


def paired_auroc_bootstrap(
    labels: Sequence[int] | np.ndarray,
    scores: Mapping[str, Sequence[float] | np.ndarray],
    base: str,
    n_boot: int = 2000,
    seed: int = 20240601,
) -> dict[str, AurocComparison]:
    """AUROC of several scores of the same cases, each against ``base``, paired.

    Each resample draws positives and negatives separately with replacement (class
    stratified, as :func:`bootstrap_ci`); every score is measured on the same resamples,
    so the interval of a difference keeps the scores' correlation.

    Parameters
    ----------
    labels
        1 positive, 0 negative, one per case.
    scores
        Name -> per-case scores; must hold ``base``.
    base
        The score the others are compared with (its own difference is 0).
    n_boot, seed
        Resamples and the seed of ``numpy.random.default_rng``.

    Returns
    -------
    dict
        Name -> :class:`AurocComparison`: the AUROC with the 2.5th and 97.5th percentiles of
        its resamples, and the difference to ``base`` with the percentiles of the paired
        resampled differences.
    """
    if base not in scores:
        raise ValueError(f"the base score {base!r} is not among {sorted(scores)}")
    y = np.asarray(labels).astype(bool)
    arrays = {name: _as_arrays(y, s)[1] for name, s in scores.items()}
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("an AUROC needs positive and negative cases")
    rng = np.random.default_rng(seed)
    draws = [np.r_[rng.choice(pos, len(pos)), rng.choice(neg, len(neg))] for _ in range(n_boot)]
    base_boot = np.array([auroc(y[d], arrays[base][d]) for d in draws])
    base_auc = auroc(y, arrays[base])
    out = {}
    for name, x in arrays.items():
        boot = base_boot if name == base else np.array([auroc(y[d], x[d]) for d in draws])
        auc = auroc(y, x)
        lo, hi = np.percentile(boot, [2.5, 97.5])
        dlo, dhi = np.percentile(boot - base_boot, [2.5, 97.5])
        out[name] = AurocComparison(
            Estimate(auc, float(lo), float(hi), len(y)),
            Estimate(auc - base_auc, float(dlo), float(dhi), len(y)),
        )
    return out


def wilson(k: int, n: int, z: float = Z95) -> Estimate:
    """A proportion k/n with its Wilson score interval; NaN when n is 0."""
    if k < 0 or n < 0 or k > n:
        raise ValueError(f"a proportion needs 0 <= k <= n, got {k}/{n}")
    if n == 0:
        return NAN
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    lower = 0.0 if k == 0 else max(0.0, c - h)
    upper = 1.0 if k == n else min(1.0, c + h)
    return Estimate(p, lower, upper, n)


@dataclass(frozen=True)
class Confusion:
    tp: int
    fp: int
    tn: int
    fn: int

    @classmethod
    def at(
        cls,
        labels: Sequence[int] | np.ndarray,
        scores: Sequence[float] | np.ndarray,
        threshold: float,
    ) -> Confusion:
        """Positive when score >= threshold (the rule the result encoders use)."""
        y, x = _as_arrays(labels, scores)
        called = x >= threshold
        return cls.of(y, called)

    @classmethod
    def of(
        cls, truth: np.ndarray | Sequence[bool], called: np.ndarray | Sequence[bool]
    ) -> Confusion:
        t = np.asarray(truth, dtype=bool)
        c = np.asarray(called, dtype=bool)
        return cls(
            tp=int((t & c).sum()),
            fp=int((~t & c).sum()),
            tn=int((~t & ~c).sum()),
            fn=int((t & ~c).sum()),
        )

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    def sensitivity(self) -> Estimate:
        return wilson(self.tp, self.tp + self.fn)

    def specificity(self) -> Estimate:
        return wilson(self.tn, self.tn + self.fp)

    def ppv(self) -> Estimate:
        return wilson(self.tp, self.tp + self.fp)

    def npv(self) -> Estimate:
        return wilson(self.tn, self.tn + self.fn)

    def agreement(self) -> Estimate:
        return wilson(self.tp + self.tn, self.n)

    def figures(self) -> dict[str, Estimate]:
        return {
            "sensitivity": self.sensitivity(),
            "specificity": self.specificity(),
            "ppv": self.ppv(),
            "npv": self.npv(),
            "agreement": self.agreement(),
        }

    def to_json(self) -> dict[str, object]:
        return {
            "tp": self.tp,
            "fp": self.fp,
            "tn": self.tn,
            "fn": self.fn,
            **{k: v.to_json() for k, v in self.figures().items()},
        }


def roc_points(
    labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds), one point per distinct score, from (0, 0) to (1, 1).

    ``thresholds[0]`` is +inf; point i calls positive every score >= thresholds[i].
    """
    y, x = _as_arrays(labels, scores)
    m, n = int(y.sum()), int((~y).sum())
    if m == 0 or n == 0:
        raise InvalidInput("a ROC curve needs positive and negative cases")
    order = np.argsort(-x, kind="mergesort")
    xs, ys = x[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(xs)), len(xs) - 1]  # end of each run of ties
    tps = np.cumsum(ys)[last]
    fps = (last + 1) - tps
    tpr = np.r_[0.0, tps / m]
    fpr = np.r_[0.0, fps / n]
    thr = np.r_[np.inf, xs[last]]
    return fpr, tpr, thr


def pick_threshold(
    labels: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    method: str,
    target: float | None = None,
) -> float:
    """The operating threshold chosen on a labelled set.

    ``youden``: maximise sensitivity + specificity - 1; ``sensitivity``: the highest
    threshold whose sensitivity is at least ``target``; ``specificity``: the lowest
    threshold whose specificity is at least ``target``. Ties break toward the higher
    threshold (fewer false positives).
    """
    fpr, tpr, thr = roc_points(labels, scores)
    finite = np.isfinite(thr)
    if method == "youden":
        j = np.where(finite, tpr - fpr, -np.inf)
        return float(thr[int(np.argmax(j))])
    if target is None or not 0.0 < target <= 1.0:
        raise InvalidInput(f"method {method!r} needs a target in (0, 1], got {target}")
    if method == "sensitivity":
        ok = np.flatnonzero(finite & (tpr >= target - 1e-12))
        return float(thr[ok[0]])
    if method == "specificity":
        ok = np.flatnonzero(finite & (1.0 - fpr >= target - 1e-12))
        if len(ok) == 0:
            raise InvalidInput(f"no threshold reaches specificity {target}")
        return float(thr[ok[-1]])
    raise InvalidInput(f"method must be youden, sensitivity or specificity, not {method!r}")


def parse_method(text: str) -> tuple[str, float | None]:
    """``youden``, ``sensitivity=0.95`` or ``specificity=0.9`` -> (method, target)."""
    name, _, value = text.strip().partition("=")
    name = name.strip().lower()
    if name == "youden" and not value:
        return "youden", None
    if name in ("sensitivity", "specificity") and value:
        try:
            target = float(value)
        except ValueError:
            raise InvalidInput(f"{text!r}: the target must be a number like 0.95") from None
        if not 0.0 < target <= 1.0:
            raise InvalidInput(f"{text!r}: the target must lie in (0, 1]")
        return name, target
    raise InvalidInput(f"{text!r}: give youden, sensitivity=0.95 or specificity=0.9")


@dataclass(frozen=True)
class CalibrationCurve:
    #: per non-empty bin: mean predicted probability, observed positive rate, count
    bins: tuple[tuple[float, float, int], ...]
    ece: float
    brier: float


def calibration_curve(
    labels: Sequence[int] | np.ndarray,
    probabilities: Sequence[float] | np.ndarray,
    n_bins: int = 10,
) -> CalibrationCurve:
    """Reliability table over equal-width bins, expected calibration error, Brier score."""
    y, p = _as_arrays(labels, probabilities)
    if len(p) == 0:
        raise ValueError("a calibration curve needs cases")
    if (p < 0).any() or (p > 1).any():
        raise ValueError("probabilities must lie in [0, 1]")
    idx = np.clip((p * n_bins).astype(int), 0, n_bins - 1)
    rows, ece = [], 0.0
    for b in range(n_bins):
        sel = idx == b
        if sel.any():
            conf, acc = float(p[sel].mean()), float(y[sel].mean())
            rows.append((conf, acc, int(sel.sum())))
            ece += sel.mean() * abs(conf - acc)
    brier = float(np.mean((p - y.astype(float)) ** 2))
    return CalibrationCurve(tuple(rows), float(ece), brier)


# --- drift ---------------------------------------------------------------------------


def psi(
    baseline: Sequence[float] | np.ndarray,
    current: Sequence[float] | np.ndarray,
    n_bins: int = 10,
    eps: float = 1e-4,
) -> float:
    """Population stability index of a numeric feature, bins at the baseline's deciles.

    Rule of thumb (Siddiqi, Credit Risk Scorecards, 2006): < 0.1 stable, 0.1-0.25 some
    shift, > 0.25 a real shift.
    """
    b = np.asarray(baseline, dtype=np.float64)
    c = np.asarray(current, dtype=np.float64)
    if len(b) == 0 or len(c) == 0:
        raise ValueError("PSI needs a baseline and a current sample")
    edges = np.unique(np.quantile(b, np.linspace(0, 1, n_bins + 1))[1:-1])
    bi = np.bincount(np.searchsorted(edges, b, side="right"), minlength=len(edges) + 1)
    ci = np.bincount(np.searchsorted(edges, c, side="right"), minlength=len(edges) + 1)
    return _psi_from_counts(bi, ci, eps)


def psi_categorical(baseline: Sequence[str], current: Sequence[str], eps: float = 1e-4) -> float:
    """PSI of a categorical feature (manufacturer, view), one bin per category."""
    if len(baseline) == 0 or len(current) == 0:
        raise ValueError("PSI needs a baseline and a current sample")
    cats = sorted(set(baseline) | set(current))
    bi = np.array([sum(1 for v in baseline if v == k) for k in cats])
    ci = np.array([sum(1 for v in current if v == k) for k in cats])
    return _psi_from_counts(bi, ci, eps)


def _psi_from_counts(bi: np.ndarray, ci: np.ndarray, eps: float) -> float:
    bp = np.maximum(bi / bi.sum(), eps)
    cp = np.maximum(ci / ci.sum(), eps)
    return float(np.sum((cp - bp) * np.log(cp / bp)))


def ks_test(
    baseline: Sequence[float] | np.ndarray, current: Sequence[float] | np.ndarray
) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic and p-value (scipy.stats.ks_2samp)."""
    if len(baseline) == 0 or len(current) == 0:
        raise ValueError("the KS test needs a baseline and a current sample")
    res = stats.ks_2samp(np.asarray(baseline, float), np.asarray(current, float))
    return float(res.statistic), float(res.pvalue)
