"""Operating points: which threshold is in force, and which regions are marked (pure).

The one home of this policy (DESIGN.md, "Algorithms"). The pipeline's analyse job, the
result builders, calibration tests, monitoring, the API's threshold endpoints and the
command line all call it; ``store.quality.stored_thresholds`` is the one SQL read of the
stored values.

Which point is in force
-----------------------
A point is kept per finding key, and under the key ``"study"`` for the study score. For
one study analysed by one algorithm version, three levels can set it, the highest that
sets a key wins:

1. stored thresholds (``radsight threshold set|pick``, ``POST /api/thresholds``): per
   algorithm version, the organisation's own row over the version's default row (no
   organisation), the newest row of a key over older ones
   (:func:`radsight.store.quality.stored_thresholds`);
2. the routing rule that sent the study to the algorithm (its ``thresholds``, carried in
   the analysis job's payload);
3. the algorithm's declaration: ``FindingSpec.threshold`` per finding,
   ``Algorithm.study_threshold`` for ``"study"``.

A finding declared with ``follows="<leader>"`` and no point of its own at levels 1 or 2
takes its leader's point in force, at whichever level the leader's was set (a site that
moves the leader moves the follower with it); a point set for the follower itself, at
either level, wins over the leader's. Keys the algorithm does not declare are ignored.

Which regions are marked
------------------------
An algorithm returns every candidate region of a finding, each with its own probability
where it has one (``Region.probability``), within its own documented bound (at most a
few per image or per slice). The platform keeps the regions to mark
(:func:`regions_to_mark`), once, when the analysis report is built, so the SR, the
Secondary Capture, the JSON result and the viewer show the same regions:

- a finding below its point (Absent) has no marks;
- a finding at or above its point (Present) keeps each region whose own probability (the
  finding's probability when the region has none) is at or above the point, and always
  at least its most probable region: a Present finding that has any candidate is never
  without a mark.

Findings declared with ``FindingSpec.located=False`` (a whole-study measurement such as
chest CT's share of lung involved) have no regions at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from radsight.algorithms.contract import Algorithm, Region

__all__ = ["STUDY", "points_in_force", "region_probability", "regions_to_mark"]

#: the key of the study score's point (beside the finding keys)
STUDY = "study"


def points_in_force(
    algorithm: Algorithm,
    *,
    routed: Mapping[str, float] | None = None,
    stored: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """The operating point in force for each declared finding and for the study score.

    Parameters
    ----------
    algorithm
        The algorithm version; its declaration is the lowest level.
    routed
        The routing rule's ``thresholds`` (finding key or ``"study"`` -> value).
    stored
        The stored thresholds of this version and organisation
        (:func:`radsight.store.quality.stored_thresholds`); they win over ``routed``.

    Returns
    -------
    dict
        Every declared finding key, then ``"study"``, with its point in [0, 1]. Passing a
        result back in as ``stored`` returns it unchanged.
    """
    overrides = {**(routed or {}), **(stored or {})}
    specs = {spec.key: spec for spec in algorithm.findings}

    def resolve(key: str, seen: tuple[str, ...] = ()) -> float:
        if key in overrides:
            return float(overrides[key])
        spec = specs[key]
        if spec.follows and spec.follows in specs and spec.follows not in seen:
            return resolve(spec.follows, (*seen, key))
        return spec.threshold

    out = {key: resolve(key) for key in specs}
    out[STUDY] = float(overrides.get(STUDY, algorithm.study_threshold))
    return out


def region_probability(region: Region, finding_probability: float) -> float:
    """A region's own probability, or its finding's when it has none."""
    return finding_probability if region.probability is None else region.probability


def regions_to_mark(
    probability: float, point: float, candidates: Sequence[Region]
) -> tuple[Region, ...]:
    """The candidate regions of one finding that are marked at operating point ``point``.

    Parameters
    ----------
    probability
        The finding's probability; it is Present when ``probability >= point``.
    point
        The finding's operating point in force (:func:`points_in_force`).
    candidates
        Every candidate region the algorithm returned for the finding.

    Returns
    -------
    tuple of Region
        Empty for an Absent finding. For a Present one, the candidates whose own
        probability (:func:`region_probability`) is at or above ``point``, in the
        algorithm's order; when none is, the most probable candidate alone (the first of
        equals), so a Present finding with candidates always has a mark.
    """
    if probability < point or not candidates:
        return ()
    kept = tuple(r for r in candidates if region_probability(r, probability) >= point)
    if kept:
        return kept
    return (max(candidates, key=lambda r: region_probability(r, probability)),)
