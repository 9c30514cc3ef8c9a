"""Not shipped: three more mark-candidate generators for mammography.

``python -m experiments.mmg_candidates ../shared/data build/mmg-candidates-experiment``
(from the repository root; writes ``candidates_experiment.json``). The generators
(``radsight.algorithms.mmg.features.CANDIDATE_VARIANTS``), chosen together with the ranker
subsets by nested CV, hit 0.422 against 1.1.0's 0.434 nested, so the 1.1.0 candidates stay
(docs/models/mmg.md, "Also tried: more mark candidates").
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from experiments.command import arguments
from radsight.monitor.metrics import wilson
from radsight_train.mmg.marks import (
    RANKER_VARIANTS,
    Candidates,
    candidates_by_generator,
    fit_ranker,
    paired_hits,
    top_hits,
)
from radsight_train.mmg.model import MiasImage, mias_items, pair_folds

log = logging.getLogger(__name__)


def generator_experiment(
    items: list[MiasImage], cands: dict[str, Candidates], fold: np.ndarray
) -> dict:
    """Top-mark hit rates out of fold: each candidate generator x ranker variant, the nested
    choice among those pairs (chosen by the inner folds' hit count, inside each training
    split), and the paired differences of the nested choice to 1.1.0's pair and to model
    1's blob marks (2,000 bootstraps of images). The best pair out of fold is reported too
    (``best_pair``, optimistic: the best of 12 on the same folds). Not shipped: the nested
    figure did not beat 1.1.0 (docs/models/mmg.md, "Also tried: more mark candidates")."""
    located = np.array([i for i, it in enumerate(items) if it.lesions])
    combos = [(g, v) for g in cands for v in RANKER_VARIANTS]
    per_combo: dict[tuple[str, str], np.ndarray] = {}
    for g, v in combos:
        cfold = fold[cands[g].image]
        hits = np.zeros(len(items), bool)
        for k in sorted(set(fold)):
            ranker = fit_ranker(cands[g], cfold != k, v)
            test = located[fold[located] == k]
            hits[test] = top_hits(cands[g], ranker, test)
        per_combo[(g, v)] = hits[located]
    nested = np.zeros(len(items), bool)
    chosen = []
    for k in sorted(set(fold)):
        inner_folds = sorted(set(fold) - {k})
        score = {}
        for g, v in combos:
            cfold = fold[cands[g].image]
            n = 0
            for j in inner_folds:
                ranker = fit_ranker(cands[g], (cfold != k) & (cfold != j), v)
                n += int(top_hits(cands[g], ranker, located[fold[located] == j]).sum())
            score[(g, v)] = n
        g, v = max(combos, key=lambda c: score[c])  # ties: the first listed
        chosen.append(f"{g} / {v}")
        test = located[fold[located] == k]
        cfold = fold[cands[g].image]
        nested[test] = top_hits(cands[g], fit_ranker(cands[g], cfold != k, v), test)
    nested = nested[located]
    first = next(iter(cands))
    blob = cands[first].blob_top_hit[located]
    old = per_combo[(first, "plus_place_terms")]  # 1.1.0's shipped pair
    ship = max(combos, key=lambda c: int(per_combo[c].sum()))
    coverage = {}
    for g, c in cands.items():
        covered = {int(i) for i in c.image[c.hit]}
        coverage[g] = {
            "candidates_per_image": round(len(c.hit) / len(items), 2),
            "images_with_a_hit_candidate": wilson(len(covered), len(located)).as_tuple(),
        }
    return {
        "images_with_circles": len(located),
        "pairs_compared": len(combos),
        "variants": {
            f"{g} / {v}": wilson(int(h.sum()), len(h)).as_tuple() for (g, v), h in per_combo.items()
        },
        "nested_choice": wilson(int(nested.sum()), len(nested)).as_tuple(),
        "nested_chosen_per_fold": chosen,
        "nested_minus_1_1_0_paired_ci": paired_hits(nested, old),
        "blob_marks_model_1": wilson(int(blob.sum()), len(blob)).as_tuple(),
        "best_pair": f"{ship[0]} / {ship[1]}",
        "best_pair_minus_1_1_0_paired_ci": paired_hits(per_combo[ship], old),
        "nested_minus_blob_paired_ci": paired_hits(nested, blob),
        "coverage": coverage,
    }


def candidates_experiment(data_root: Path, work: Path, folds: int = 5) -> dict:
    """The candidate generators x ranker variants, nested (docs/models/mmg.md, "Also tried:
    more mark candidates"); writes ``work/candidates_experiment.json``. Changes nothing
    shipped."""
    t0 = time.time()
    work.mkdir(parents=True, exist_ok=True)
    items = mias_items(data_root)
    fold_of = pair_folds(items, folds)
    fold = np.array([fold_of[it.pair] for it in items])
    out = generator_experiment(items, candidates_by_generator(items), fold)
    out["seconds"] = round(time.time() - t0)
    (work / "candidates_experiment.json").write_text(json.dumps(out, indent=2) + "\n")
    log.info("candidates experiment: %s", json.dumps(out))
    return out


def main(argv: list[str] | None = None) -> None:
    """``python -m experiments.mmg_candidates [DATA] [WORK]`` from the repository root."""
    paths = arguments(argv, __doc__, "mmg-candidates-experiment")
    if paths is None:
        return
    data, work = paths
    candidates_experiment(data, work)


if __name__ == "__main__":
    main()
