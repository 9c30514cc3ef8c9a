"""Gradient convergence and spiculation features for radsight-mmg: a nested experiment.

``python -m experiments.mmg_convergence ../shared/data build/mmg-convergence``
writes ``convergence_experiment.json`` (every figure; the declaration first). Nothing
shipped changes: the maps are :mod:`experiments.mmg_convergence_maps` (numpy only,
written so that the platform could use them as they are).

Everything below (``DECLARED``) was fixed before the first run on the mini-MIAS labels:

- **Image heads** (abnormal vs normal): three designs, each the shipped 6 inputs
  (``radsight_train.mmg.model.DESIGN`` and its contralateral differences) plus new image
  features (the mean of the 16 highest responses in the inner breast, and it minus the
  other breast's),
  an L2 logistic regression at the shipped C = 0.05. In each outer training split the
  design with the best inner leave-one-fold-out AUROC (the other 4 folds, pooled inner
  out-of-fold predictions; ties: the first listed) is refitted on the training split and
  scores the held-out fold. Compared with the shipped design refitted per fold (the
  ``abnormal`` head), paired, 2,000 class-stratified bootstraps
  (``radsight_train.mmg.marks.compare_aurocs``).
- **Mark ranker**: three feature sets (and candidate sets), an L2 logistic regression as
  ``radsight_train.mmg.marks.fit_ranker`` (C = 0.1, balanced, standardised), candidates
  inside a lesion circle against all others. In each outer training split the set with
  the most inner top-mark hits (ties: the first listed) is refitted and ranks the held-out
  fold's candidates. Compared with 1.1.0's ranker (``plus_place_terms`` on the shipped
  candidates) refitted per fold, paired over the 83 located images (2,000 bootstraps).
- **Decision rule**: recommend shipping the image heads only if the nested out-of-fold
  AUROC > 0.648 and the paired bootstrap CI of the difference to the shipped design
  (refitted per fold) has lower bound >= 0; recommend shipping the marks only if the
  nested top-mark hits > 36/83 and the paired CI lower bound >= 0.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace

import numpy as np

from experiments import mmg_convergence_maps as cv
from experiments.command import arguments
from radsight.monitor.metrics import auroc, wilson
from radsight_train.data import read_gray
from radsight_train.mmg.marks import (
    RANKER_C,
    RANKER_VARIANTS,
    Candidates,
    compare_aurocs,
    fit_ranker,
    inside,
    paired_hits,
    top_hits,
)
from radsight_train.mmg.model import (
    apply_head,
    contralateral,
    design,
    fit_head,
    fit_heads,
    image_features,
    mias_items,
    pair_folds,
)

log = logging.getLogger(__name__)

FOLDS = 5
#: new candidates: up to CI_CANDIDATES maxima of the convergence index (the largest over
#: the rings) and SPIC_CANDIDATES of the line concentration (largest over the annuli),
#: suppression SUPPRESS GRID px; one within DEDUPE canvas px of a shipped candidate is
#: dropped
CI_CANDIDATES = 4
SPIC_CANDIDATES = 2
SUPPRESS = 8.0
DEDUPE = 16.0
PLACE = RANKER_VARIANTS["plus_place_terms"]  # 1.1.0's ranker features (12)

IMAGE_DESIGNS = {
    "dog_plus_ci": ["top_ci_max"],
    "dog_plus_spic": ["top_spic_max"],
    "dog_plus_ci_spic": ["top_ci_max", "top_spic_max"],
}
RANKER_SETS = {
    "shipped_cands+conv_feats": ("shipped", [*PLACE, *cv.POINT_FEATURES]),
    "conv_cands+conv_feats": ("extended", [*PLACE, *cv.POINT_FEATURES, "from_convergence"]),
    "conv_cands+conv_feats+bilateral": (
        "extended",
        [*PLACE, *cv.POINT_FEATURES, "from_convergence", "ci_minus_other", "spic_minus_other"],
    ),
}

DECLARED = {
    "written_before_the_first_run": "2026-12-07 05:18 UTC",
    "maps": "experiments.mmg_convergence_maps: convergence index rings (GRID px) "
    f"{list(cv.CI_RINGS)}, spiculation annuli {list(cv.SPIC_RINGS)}, line share "
    f"{cv.LINE_SHARE}, {cv.SECTORS} sectors for spread, top-{cv.TOP} image features",
    "image_designs": {
        k: "shipped DESIGN (6) + " + ", ".join(f"{f}, {f} minus other breast" for f in v)
        for k, v in IMAGE_DESIGNS.items()
    },
    "image_choice": "per outer fold: best inner leave-one-fold-out AUROC over the 4 other "
    "folds (pooled inner OOF predictions), ties first listed; C = 0.05 fixed",
    "ranker_sets": {k: {"candidates": g, "features": f} for k, (g, f) in RANKER_SETS.items()},
    "new_candidates": f"up to {CI_CANDIDATES} convergence-index maxima and "
    f"{SPIC_CANDIDATES} spiculation maxima (suppression {SUPPRESS} GRID px), dropped "
    f"within {DEDUPE} canvas px of a shipped candidate",
    "ranker_choice": "per outer fold: most inner top-mark hits over the 4 other folds, ties "
    "first listed; C = 0.1, balanced",
    "decision_rule": "recommend shipping the image heads only if nested out-of-fold AUROC > "
    "0.648 and the paired bootstrap CI of the difference to the shipped design (refitted "
    "per fold) has lower bound >= 0; recommend shipping the marks only if nested top-mark "
    "hits > 36/83 and the paired CI lower bound >= 0",
    "also_reported": "each design's and set's own out-of-fold figure (not nested: "
    "optimistic), single-feature AUROCs of the 8 new image features and their 8 "
    "contralateral differences (16 looked at), candidate coverage, per-image map time",
}


def _fit_cols(rows: np.ndarray, hit: np.ndarray, use: np.ndarray) -> dict:
    """``radsight_train.mmg.marks.fit_ranker`` over the given rows (all their columns)."""
    from sklearn.linear_model import LogisticRegression

    x = rows[use]
    mu, sd = x.mean(0), x.std(0) + 1e-6
    model = LogisticRegression(C=RANKER_C, max_iter=5000, class_weight="balanced")
    model.fit((x - mu) / sd, hit[use])
    return {"mean": mu, "scale": sd, "coef": model.coef_[0], "intercept": 0.0}


def collect(items: list) -> dict:
    """Every image through the platform (both breasts of a woman as one study): the
    shipped candidates' rows, the new candidates, the convergence maps' values at each,
    the image features; and the per-image map time."""
    from radsight.algorithms.mmg import contralateral as pick_other
    from radsight.algorithms.mmg import image_features as platform_features
    from radsight.algorithms.mmg.features import CANDIDATE_FEATURES, Candidate, candidates
    from radsight_train.mmg.evaluate import mias_image_input

    ci_cols = list(range(len(cv.CI_RINGS)))
    sp_cols = [len(cv.CI_RINGS) + i for i in range(len(cv.SPIC_RINGS))]
    out: dict = {k: [] for k in ("rows", "point", "diff", "hit", "image", "new")}
    out["image_features"] = np.zeros((len(items), len(cv.IMAGE_FEATURES)))
    out["blob_top_hit"] = np.zeros(len(items), bool)
    seconds = []
    by_pair: dict[int, list[int]] = {}
    for i, it in enumerate(items):
        by_pair.setdefault(it.pair, []).append(i)
    for idx in by_pair.values():
        feats, maps = {}, {}
        for i in idx:
            pixels = read_gray(items[i].path)
            feats[i] = platform_features(mias_image_input(items[i], pixels))
            t = time.perf_counter()
            maps[i] = cv.from_pixels(pixels)
            seconds.append(time.perf_counter() - t)
            out["image_features"][i] = cv.image_summary(maps[i])
        of = {id(feats[j]): j for j in idx}
        for i in idx:
            f = feats[i]
            other = pick_other(f, [feats[j] for j in idx])
            o = of[id(other)] if other is not f else None
            if f.marks["all"]:
                out["blob_top_hit"][i] = inside(items[i], f.marks["all"][0].x, f.marks["all"][0].y)
            if f.breast is None or not f.breast.candidates:
                continue
            breast = f.breast
            m = maps[i]
            ci_map, sp_map = m.ci.max(axis=0), m.spic.max(axis=0)
            new: list[Candidate] = []
            for x, y, _ in cv.maxima(ci_map, m.inner, CI_CANDIDATES, SUPPRESS) + cv.maxima(
                sp_map, m.inner, SPIC_CANDIDATES, SUPPRESS
            ):
                if all(
                    (c.x - x) ** 2 + (c.y - y) ** 2 > DEDUPE**2 for c in breast.candidates + new
                ):
                    new.append(Candidate(x, y, 16.0, 8.0, "convergence"))
            extended = breast.candidates + new
            rows = candidates(
                replace(breast, candidates=extended), other.breast if o is not None else None
            )
            assert rows.shape[1] == len(CANDIDATE_FEATURES)
            r0, r1, c0, c1 = breast.bbox
            for n, cand in enumerate(extended):
                pt = m.at(cand.x, cand.y)
                if o is None:
                    diff = [0.0, 0.0]
                else:
                    xr = (cand.x - c0) / max(c1 - c0, 1)
                    yr = (cand.y - r0) / max(r1 - r0, 1)
                    theirs = maps[o].around(xr, yr)
                    diff = [
                        float(pt[ci_cols].max() - theirs[ci_cols].max()),
                        float(pt[sp_cols].max() - theirs[sp_cols].max()),
                    ]
                out["rows"].append(rows[n])
                out["point"].append(pt)
                out["diff"].append(diff)
                out["hit"].append(inside(items[i], *breast.to_source(cand.x, cand.y)))
                out["image"].append(i)
                out["new"].append(n >= len(breast.candidates))
    for k in ("rows", "point", "diff", "hit", "image", "new"):
        out[k] = np.array(out[k])
    out["seconds"] = np.array(seconds)
    return out


def candidate_sets(data: dict) -> dict[str, Candidates]:
    """The declared ranker sets as Candidates (rows: exactly the set's features)."""
    from radsight.algorithms.mmg.features import CANDIDATE_FEATURES

    table = np.c_[data["rows"], data["point"], data["new"].astype(float), data["diff"]]
    names = [
        *CANDIDATE_FEATURES,
        *cv.POINT_FEATURES,
        "from_convergence",
        "ci_minus_other",
        "spic_minus_other",
    ]
    out = {}
    for name, (gen, feats) in RANKER_SETS.items():
        keep = np.ones(len(table), bool) if gen == "extended" else ~data["new"]
        cols = [names.index(f) for f in feats]
        out[name] = Candidates(
            table[keep][:, cols], data["hit"][keep], data["image"][keep], data["blob_top_hit"]
        )
    shipped = ~data["new"]
    out["shipped_1.1.0"] = Candidates(
        data["rows"][shipped], data["hit"][shipped], data["image"][shipped], data["blob_top_hit"]
    )
    return out


GROUPS = {
    "mass (CIRC, SPIC, MISC)": ("CIRC", "SPIC", "MISC"),
    "SPIC": ("SPIC",),
    "CALC": ("CALC",),
    "ARCH": ("ARCH",),
    "ASYM": ("ASYM",),
}


def _mark_breakdown(
    items: list, located: np.ndarray, nested: np.ndarray, shipped: np.ndarray
) -> dict:
    """Top-mark hits of the nested choice and of 1.1.0 per lesion class, and the
    discordant images (hit by one only)."""
    out: dict = {
        "nested_hit_shipped_missed": int((nested & ~shipped).sum()),
        "shipped_hit_nested_missed": int((shipped & ~nested).sum()),
    }
    for g, classes in GROUPS.items():
        m = np.array([any(les.abn_class in classes for les in items[i].lesions) for i in located])
        out[g] = {
            "images": int(m.sum()),
            "nested_hits": int(nested[m].sum()),
            "shipped_hits": int(shipped[m].sum()),
        }
    return out


def _kind_breakdown(
    items: list, labels: np.ndarray, shipped: np.ndarray, nested: np.ndarray
) -> dict:
    """AUROC of the shipped and nested image scores, each class group against normals."""
    out = {}
    for g, classes in GROUPS.items():
        m = np.array([it.abnormal == 0 or bool(set(it.classes) & set(classes)) for it in items])
        res = compare_aurocs(labels[m], {"shipped": shipped[m], "nested": nested[m]}, "shipped")
        out[g] = {
            "abnormal_images": int(labels[m].sum()),
            **res["nested"],
            "shipped_auroc": round(res["shipped"]["auroc"], 3),
        }
    return out


def marks_experiment(items: list, sets: dict[str, Candidates], fold: np.ndarray) -> dict:
    located = np.array([i for i, it in enumerate(items) if it.lesions])
    folds = sorted(set(fold))

    def oof(c: Candidates, name: str, exclude: int | None = None) -> np.ndarray:
        """Top-mark hits per located image, out of fold (inside ``fold != exclude``)."""
        cfold = fold[c.image]
        hits = np.zeros(len(items), bool)
        for k in folds:
            if k == exclude:
                continue
            use = (cfold != k) & (cfold != exclude) if exclude is not None else cfold != k
            ranker = (
                fit_ranker(c, use, "plus_place_terms")
                if name == "shipped_1.1.0"
                else _fit_cols(c.rows, c.hit, use)
            )
            test = located[fold[located] == k]
            hits[test] = top_hits(c, ranker, test)
        return hits

    shipped = oof(sets["shipped_1.1.0"], "shipped_1.1.0")[located]
    per_set = {n: oof(sets[n], n)[located] for n in RANKER_SETS}
    nested = np.zeros(len(items), bool)
    chosen, inner_hits = [], []
    for k in folds:
        score = {}
        for n in RANKER_SETS:
            h = oof(sets[n], n, exclude=k)
            inner = located[fold[located] != k]
            score[n] = int(h[inner].sum())
        best = max(RANKER_SETS, key=lambda v: score[v])
        chosen.append(best)
        inner_hits.append(score)
        c = sets[best]
        test = located[fold[located] == k]
        nested[test] = top_hits(c, _fit_cols(c.rows, c.hit, fold[c.image] != k), test)
    nested = nested[located]

    coverage = {}
    for n in ("shipped_1.1.0", "conv_cands+conv_feats"):
        c = sets[n]
        covered = {int(i) for i in c.image[c.hit]}
        coverage[n] = {
            "candidates_per_image": round(len(c.hit) / len(items), 2),
            "located_images_with_a_hit_candidate": [len(covered), len(located)],
        }
    return {
        "images_with_circles": len(located),
        "shipped_1.1.0_refit_per_fold": [
            int(shipped.sum()),
            *wilson(int(shipped.sum()), len(located)).as_tuple(),
        ],
        "per_set_out_of_fold_not_nested": {
            n: [int(h.sum()), *wilson(int(h.sum()), len(h)).as_tuple()] for n, h in per_set.items()
        },
        "per_set_minus_shipped_paired_ci": {n: paired_hits(h, shipped) for n, h in per_set.items()},
        "nested": [int(nested.sum()), *wilson(int(nested.sum()), len(nested)).as_tuple()],
        "nested_chosen_per_fold": chosen,
        "inner_hits_per_fold": inner_hits,
        "nested_minus_shipped_paired_ci": paired_hits(nested, shipped),
        "coverage": coverage,
        "post_hoc_description (no choice made on it)": _mark_breakdown(
            items, located, nested, shipped
        ),
    }


def image_experiment(items: list, conv: np.ndarray, fold: np.ndarray) -> dict:
    labels = np.array([it.abnormal for it in items])
    features = image_features(items)
    x_dog = design(features, contralateral(items, features))
    other = contralateral(items, conv)
    names = cv.IMAGE_FEATURES
    xs = {}
    for d, feats in IMAGE_DESIGNS.items():
        cols = [names.index(f) for f in feats]
        xs[d] = np.c_[x_dog, conv[:, cols], conv[:, cols] - other[:, cols]]
    folds = sorted(set(fold))
    shipped = np.zeros(len(items))
    per_design = {d: np.zeros(len(items)) for d in IMAGE_DESIGNS}
    nested = np.zeros(len(items))
    chosen, inner_auc = [], []
    for k in folds:
        tr, te = np.nonzero(fold != k)[0], np.nonzero(fold == k)[0]
        shipped[te] = apply_head(fit_heads(x_dog, items, tr)["abnormal"], x_dog[te])
        aucs = {}
        for d, x in xs.items():
            per_design[d][te] = apply_head(fit_head(x[tr], labels[tr]), x[te])
            inner = np.zeros(len(items))
            for j in sorted(set(folds) - {k}):
                a, b = (fold != k) & (fold != j), fold == j
                inner[b] = apply_head(fit_head(x[a], labels[a]), x[b])
            aucs[d] = auroc(labels[tr], inner[tr])
        best = max(IMAGE_DESIGNS, key=lambda d: round(aucs[d], 6))
        chosen.append(best)
        inner_auc.append({d: round(a, 3) for d, a in aucs.items()})
        nested[te] = apply_head(fit_head(xs[best][tr], labels[tr]), xs[best][te])
    scores = {"shipped_design_refit_per_fold": shipped, "nested_choice": nested}
    scores |= {f"{d} (not nested)": s for d, s in per_design.items()}
    single = {"shipped_design_refit_per_fold": shipped}
    for n, name in enumerate(names):
        single[name] = conv[:, n]
        single[f"{name}_minus_other"] = conv[:, n] - other[:, n]
    single_out = compare_aurocs(labels, single, "shipped_design_refit_per_fold")
    single_out.pop("shipped_design_refit_per_fold")
    return {
        "auroc_out_of_fold": compare_aurocs(labels, scores, "shipped_design_refit_per_fold"),
        "nested_chosen_per_fold": chosen,
        "inner_auroc_per_fold": inner_auc,
        "single_feature_auroc (16 looked at; fixed features, not fitted)": single_out,
        "post_hoc_per_kind_auroc (no choice made on it)": _kind_breakdown(
            items, labels, shipped, nested
        ),
    }


def main(argv: list[str] | None = None) -> dict | None:
    paths = arguments(argv, __doc__, "mmg-convergence")
    if paths is None:
        return None
    data_root, work = paths
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    t0 = time.time()
    work.mkdir(parents=True, exist_ok=True)
    (work / "declared.json").write_text(json.dumps(DECLARED, indent=2) + "\n")
    items = mias_items(data_root)
    fold_of = pair_folds(items, FOLDS)
    fold = np.array([fold_of[it.pair] for it in items])
    data = collect(items)
    log.info("maps and candidates of %d images in %.0f s", len(items), time.time() - t0)
    sets = candidate_sets(data)
    marks = marks_experiment(items, sets, fold)
    log.info("marks: %s", json.dumps(marks, default=float))
    images = image_experiment(items, data["image_features"], fold)
    log.info("images: %s", json.dumps(images["auroc_out_of_fold"], default=float))
    sec = data["seconds"]
    a = images["auroc_out_of_fold"]["nested_choice"]
    m = marks
    decision = {
        "image_heads": bool(a["auroc"] > 0.648 and a["paired_ci"][0] >= 0),
        "marks": bool(m["nested"][0] > 36 and m["nested_minus_shipped_paired_ci"][1] >= 0),
    }
    result = {
        "declared": DECLARED,
        "decision_recommend_shipping": decision,
        "image_heads": images,
        "marks": marks,
        "map_seconds_per_1024px_image (prepare + normalise + maps, 1 thread)": {
            "median": round(float(np.median(sec)), 3),
            "p95": round(float(np.percentile(sec, 95)), 3),
            "max": round(float(sec.max()), 3),
        },
        "command": "python -m experiments.mmg_convergence ../shared/data build/mmg-convergence",
        "seconds": round(time.time() - t0),
    }
    (work / "convergence_experiment.json").write_text(
        json.dumps(result, indent=2, default=float) + "\n"
    )
    log.info("decision %s; %.0f s", decision, time.time() - t0)
    return result


if __name__ == "__main__":
    main()
