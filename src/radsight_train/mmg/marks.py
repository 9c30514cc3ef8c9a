"""The mark ranker of the shipped mammography model (``mmg.json`` ``heads.ranker``).

A logistic regression over the mark candidates of :mod:`radsight.algorithms.mmg.features`
(numpy, 512-px canvas, breast normalised by its own percentiles), fitted on candidates
inside a lesion circle against all others (:func:`mark_candidates`, :func:`fit_ranker`).
:func:`ranker_experiment` compares a few declared feature subsets, the choice nested inside
each training split; :func:`stacking_experiment` checks whether the ranker's best candidate
helps the image head (it does not: not shipped). Both run in every ``python -m
radsight_train mmg`` and write ``marks.json``. The intervals come from
:mod:`radsight.monitor.metrics` (Wilson; seeded paired bootstraps).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from radsight.monitor.metrics import paired_auroc_bootstrap, paired_difference, wilson
from radsight_train.data import SPLIT_SEED, read_gray
from radsight_train.mmg.model import MiasImage, apply_head, fit_head

#: the mark ranker (docs/models/mmg.md, "Marks"): an L2 logistic regression over
#: radsight.algorithms.mmg.features.CANDIDATE_FEATURES, candidates whose centre lies in a
#: lesion circle against all others (balanced classes). The variants compared, each a
#: subset of the features (declared before the nested run). The shipped variant is the one
#: with the most out-of-fold top-mark hits; the honest figure is the nested one (the
#: variant chosen by the inner folds of each training split), recorded beside it.
RANKER_C = 0.1
RANKER_VARIANTS = {
    "blobs_brightness_place": [
        "dog_s4",
        "dog_s8",
        "dog_s16",
        "dog_s32",
        "local_z",
        "x_from_chest_wall",
        "y_from_top",
        "from_bright",
    ],  # fmt: skip
    "plus_place_terms": [
        "dog_s4",
        "dog_s8",
        "dog_s16",
        "dog_s32",
        "local_z",
        "x_from_chest_wall",
        "y_from_top",
        "from_bright",
        "x2",
        "y2",
        "xy",
        "top_chest_wall_corner",
    ],  # fmt: skip
    "plus_bilateral": [],  # every feature
}


@dataclass
class Candidates:
    """Every image's mark candidates through the platform code (both breasts of a woman as
    one study): feature rows, hit labels, image index; and the blob marks' top-mark hits."""

    rows: np.ndarray
    hit: np.ndarray
    image: np.ndarray
    blob_top_hit: np.ndarray  # per image, the DoG filter bank's top mark (model 1)


def inside(item: MiasImage, x: float, y: float) -> bool:
    """The hit rule of the evaluation: inside a lesion circle (radius at least 10 px)."""
    return any(
        (x - les.x) ** 2 + (y - les.y) ** 2 <= max(les.radius, 10.0) ** 2 for les in item.lesions
    )


def mark_candidates(items: list[MiasImage]) -> Candidates:
    """The shipped candidates (1.1.0's generator) of every image, through the platform."""
    from radsight.algorithms.mmg.features import DEFAULT_CANDIDATES

    return candidates_by_generator(items, (DEFAULT_CANDIDATES,))[DEFAULT_CANDIDATES]


def candidates_by_generator(
    items: list[MiasImage], generators: tuple[str, ...] | None = None
) -> dict[str, Candidates]:
    """Per candidate generator (``features.CANDIDATE_VARIANTS``, default all), every image's
    candidates through the platform code, both breasts of a woman as one study."""
    from radsight.algorithms.mmg import contralateral as pick_other
    from radsight.algorithms.mmg import image_features as platform_features
    from radsight.algorithms.mmg.features import CANDIDATE_VARIANTS, candidates, with_candidates
    from radsight_train.mmg.evaluate import mias_image_input

    chosen = {n: CANDIDATE_VARIANTS[n] for n in generators or CANDIDATE_VARIANTS}
    parts: dict[str, tuple[list, list, list]] = {n: ([], [], []) for n in chosen}
    blob_hit = np.zeros(len(items), bool)
    by_pair: dict[int, list[int]] = {}
    for i, it in enumerate(items):
        by_pair.setdefault(it.pair, []).append(i)
    for idx in by_pair.values():
        feats = {
            i: platform_features(mias_image_input(items[i], read_gray(items[i].path))) for i in idx
        }
        for i in idx:
            f = feats[i]
            other = pick_other(f, [feats[j] for j in idx])
            if f.marks["all"]:
                blob_hit[i] = inside(items[i], f.marks["all"][0].x, f.marks["all"][0].y)
            if f.breast is None:
                continue
            for name, settings in chosen.items():
                breast = with_candidates(f.breast, settings)
                if not breast.candidates:
                    continue
                rows, hits, image = parts[name]
                rows.append(candidates(breast, other.breast if other is not f else None))
                for cand in breast.candidates:
                    hits.append(inside(items[i], *breast.to_source(cand.x, cand.y)))
                    image.append(i)
    return {
        name: Candidates(np.concatenate(rows), np.array(hits), np.array(image), blob_hit)
        for name, (rows, hits, image) in parts.items()
    }


def ranker_columns(name: str) -> list[int]:
    from radsight.algorithms.mmg.features import CANDIDATE_FEATURES

    names = RANKER_VARIANTS[name] or CANDIDATE_FEATURES
    return [CANDIDATE_FEATURES.index(n) for n in names]


def fit_ranker(cands: Candidates, use: np.ndarray, variant: str) -> dict:
    """The ranker on the candidates ``use`` (boolean), as a head over every feature (the
    features the variant leaves out get weight 0)."""
    from sklearn.linear_model import LogisticRegression

    cols = ranker_columns(variant)
    x = cands.rows[use]
    mu, sd = x.mean(0), x.std(0) + 1e-6
    model = LogisticRegression(C=RANKER_C, max_iter=5000, class_weight="balanced")
    model.fit(((x - mu) / sd)[:, cols], cands.hit[use])
    coef = np.zeros(x.shape[1])
    coef[cols] = model.coef_[0]
    return {
        "variant": variant,
        "mean": mu.round(6).tolist(),
        "scale": sd.round(6).tolist(),
        "coef": coef.round(6).tolist(),
        "intercept": round(float(model.intercept_[0]), 6),
    }


def top_hits(cands: Candidates, ranker: dict, images: np.ndarray) -> np.ndarray:
    """Per image in ``images`` (with candidates): does the top-ranked candidate hit?"""
    z = ((cands.rows - np.array(ranker["mean"])) / np.array(ranker["scale"])) @ np.array(
        ranker["coef"]
    )
    out = []
    for i in images:
        m = np.nonzero(cands.image == i)[0]
        out.append(bool(cands.hit[m[np.argmax(z[m])]]) if len(m) else False)
    return np.array(out)


def ranker_experiment(items: list[MiasImage], cands: Candidates, fold: np.ndarray) -> dict:
    """Top-mark hit rates out of fold: each ranker variant, the nested choice among them
    (chosen by the inner folds' hit count, inside each training split), and the paired
    difference of the nested choice to model 1's blob marks (2,000 bootstraps of images).
    The variant to ship is the one with the most out-of-fold hits (ties: the first)."""
    located = np.array([i for i, it in enumerate(items) if it.lesions])
    cfold = fold[cands.image]
    per_variant: dict[str, np.ndarray] = {}
    for name in RANKER_VARIANTS:
        hits = np.zeros(len(items), bool)
        for k in sorted(set(fold)):
            ranker = fit_ranker(cands, cfold != k, name)
            test = located[fold[located] == k]
            hits[test] = top_hits(cands, ranker, test)
        per_variant[name] = hits[located]
    nested = np.zeros(len(items), bool)
    chosen = []
    for k in sorted(set(fold)):
        inner_folds = sorted(set(fold) - {k})
        score = {}
        for name in RANKER_VARIANTS:
            n = 0
            for j in inner_folds:
                ranker = fit_ranker(cands, (cfold != k) & (cfold != j), name)
                n += int(top_hits(cands, ranker, located[fold[located] == j]).sum())
            score[name] = n
        best = max(RANKER_VARIANTS, key=lambda v: score[v])  # ties: the first listed
        chosen.append(best)
        test = located[fold[located] == k]
        nested[test] = top_hits(cands, fit_ranker(cands, cfold != k, best), test)
    nested = nested[located]
    blob = cands.blob_top_hit[located]
    return {
        "images_with_circles": len(located),
        "variants": {n: wilson(int(h.sum()), len(h)).as_tuple() for n, h in per_variant.items()},
        "nested_choice": wilson(int(nested.sum()), len(nested)).as_tuple(),
        "nested_chosen_per_fold": chosen,
        "blob_marks_model_1": wilson(int(blob.sum()), len(blob)).as_tuple(),
        "shipped_variant": max(RANKER_VARIANTS, key=lambda v: int(per_variant[v].sum())),
        "nested_minus_blob_paired_ci": paired_hits(nested, blob),
        "candidates_per_image": round(len(cands.hit) / len(items), 2),
        "images_with_a_hit_candidate": int(len({int(i) for i in cands.image[cands.hit]})),
    }


def stacking_experiment(
    items: list[MiasImage], x: np.ndarray, cands: Candidates, fold: np.ndarray, variant: str
) -> dict:
    """Would the ranker's best candidate help the image head? (Not shipped: docs/models/mmg.md.)

    The abnormal head refitted per fold on the shipped design, and on it plus the image's
    highest ranker score and that minus the other breast's. The training images' ranker
    scores are cross-fitted (rankers fitted without the outer and the inner fold)."""
    labels = np.array([it.abnormal for it in items])
    by_key = {(it.pair, it.side): i for i, it in enumerate(items)}
    other = np.array(
        [by_key.get((it.pair, "R" if it.side == "L" else "L"), i) for i, it in enumerate(items)]
    )
    cfold = fold[cands.image]

    def best(ranker: dict, images: np.ndarray, into: np.ndarray) -> None:
        z = ((cands.rows - np.array(ranker["mean"])) / np.array(ranker["scale"])) @ np.array(
            ranker["coef"]
        )
        for i in images:
            m = cands.image == i
            into[i] = float(z[m].max()) if m.any() else 0.0

    base, stacked = np.zeros(len(items)), np.zeros(len(items))
    for k in sorted(set(fold)):
        score = np.zeros(len(items))
        for j in sorted(set(fold) - {k}):
            ranker = fit_ranker(cands, (cfold != k) & (cfold != j), variant)
            best(ranker, np.nonzero(fold == j)[0], score)
        best(fit_ranker(cands, cfold != k, variant), np.nonzero(fold == k)[0], score)
        xs = np.c_[x, score, score - score[other]]
        tr, te = fold != k, fold == k
        base[te] = apply_head(fit_head(x[tr], labels[tr]), x[te])
        stacked[te] = apply_head(fit_head(xs[tr], labels[tr]), xs[te])
    return compare_aurocs(
        labels, {"shipped_design": base, "plus_ranker_score": stacked}, "shipped_design"
    )


def paired_hits(a: np.ndarray, b: np.ndarray) -> list[float]:
    """``[difference, low, high]`` of two per-image hit vectors, 3 decimals: the paired
    difference and its 95 % CI from 2,000 bootstrap resamples of the images (seed
    SPLIT_SEED; :func:`radsight.monitor.metrics.paired_difference`)."""
    e = paired_difference(a, b, 2000, SPLIT_SEED)
    return np.round([e.value, e.lower, e.upper], 3).tolist()


def compare_aurocs(labels: np.ndarray, scores: dict[str, np.ndarray], base: str) -> dict:
    """Per score: AUROC with a 95 % class-stratified bootstrap CI, and the paired difference
    to ``base`` on the same 2,000 resamples (seed SPLIT_SEED;
    :func:`radsight.monitor.metrics.paired_auroc_bootstrap`), as the experiments' JSON."""
    out = {}
    for name, c in paired_auroc_bootstrap(labels, scores, base, 2000, SPLIT_SEED).items():
        out[name] = {
            "auroc": c.auroc.value,
            "ci": np.round([c.auroc.lower, c.auroc.upper], 3).tolist(),
            f"minus_{base}": round(c.minus_base.value, 3),
            "paired_ci": np.round([c.minus_base.lower, c.minus_base.upper], 3).tolist(),
        }
    return out
