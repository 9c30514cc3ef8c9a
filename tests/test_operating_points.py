"""The operating-point rules (radsight.operating_points), pure: which point is in force and
which candidate regions are marked."""

from __future__ import annotations

import pytest

from radsight.algorithms.contract import (
    Algorithm,
    Analysis,
    Code,
    Finding,
    FindingSpec,
    Region,
    StudyInput,
)
from radsight.operating_points import points_in_force, region_probability, regions_to_mark
from radsight.results.report import AnalysisReport

CODE = Code("X", "99TEST", "x")


class Leader(Algorithm):
    name = "test-leader"
    version = "1"
    study_types = ("cxr",)
    findings = (
        FindingSpec("lead", CODE, threshold=0.5),
        FindingSpec("follow", CODE, threshold=0.5, follows="lead"),
        FindingSpec("alone", CODE, threshold=0.3),
        FindingSpec("share", CODE, threshold=0.5, located=False),
    )
    study_threshold = 0.4

    def analyse(self, study: StudyInput) -> Analysis:  # pragma: no cover - not called
        raise NotImplementedError


def box(uid: str, probability: float | None = None) -> Region:
    return Region.box(uid, 0, 0, 4, 4, probability=probability)


@pytest.mark.parametrize(
    "routed, stored, expected",
    [
        # the declaration alone
        (None, None, {"lead": 0.5, "follow": 0.5, "alone": 0.3, "share": 0.5, "study": 0.4}),
        # a routing rule's points replace the declared ones, key by key
        ({"alone": 0.1, "study": 0.2}, None, {"alone": 0.1, "study": 0.2, "lead": 0.5}),
        # stored points win over the routing rule's
        ({"alone": 0.1, "study": 0.2}, {"alone": 0.9}, {"alone": 0.9, "study": 0.2}),
        # a follower takes its leader's point at whichever level it was set...
        ({"lead": 0.2}, None, {"lead": 0.2, "follow": 0.2}),
        (None, {"lead": 0.7}, {"lead": 0.7, "follow": 0.7}),
        ({"lead": 0.2}, {"lead": 0.7}, {"lead": 0.7, "follow": 0.7}),
        # ...unless it has its own, at either level
        ({"follow": 0.1}, {"lead": 0.7}, {"lead": 0.7, "follow": 0.1}),
        ({"lead": 0.2}, {"follow": 0.6}, {"lead": 0.2, "follow": 0.6}),
        # keys the algorithm does not declare are ignored
        ({"nodule": 0.1}, {"other": 0.2}, {"lead": 0.5, "study": 0.4}),
    ],
)
def test_points_in_force_precedence(routed, stored, expected) -> None:  # type: ignore[no-untyped-def]
    points = points_in_force(Leader(), routed=routed, stored=stored)
    assert set(points) == {"lead", "follow", "alone", "share", "study"}
    assert {k: points[k] for k in expected} == expected


def test_points_in_force_is_idempotent() -> None:
    points = points_in_force(Leader(), routed={"lead": 0.2}, stored={"study": 0.9})
    assert points_in_force(Leader(), stored=points) == points


def test_a_follows_cycle_stops_where_it_closes() -> None:
    """a follows b follows a: each takes the other's declared point (the walk stops
    before it comes back to where it started)."""

    class Cycle(Leader):
        findings = (
            FindingSpec("a", CODE, threshold=0.2, follows="b"),
            FindingSpec("b", CODE, threshold=0.7, follows="a"),
        )

    assert points_in_force(Cycle()) == {"a": 0.7, "b": 0.2, "study": 0.4}
    assert points_in_force(Cycle(), stored={"b": 0.1}) == {"a": 0.1, "b": 0.1, "study": 0.4}


def test_region_probability_falls_back_to_the_finding() -> None:
    assert region_probability(box("1", 0.3), 0.8) == 0.3
    assert region_probability(box("1"), 0.8) == 0.8


@pytest.mark.parametrize(
    "probability, point, own, kept",
    [
        # Absent: no marks, whatever the regions' own probabilities
        (0.4, 0.5, [0.9, 0.6, None], []),
        # Present: the regions at or above the point, in the algorithm's order
        (0.9, 0.5, [0.3, 0.9, 0.5], [1, 2]),
        # a region without its own probability takes the finding's
        (0.7, 0.5, [None, 0.2], [0]),
        # Present with every region below: the most probable one alone (first of equals)
        (0.6, 0.5, [0.2, 0.4, 0.4, 0.1], [1]),
        # a lowered point keeps more, a raised one fewer
        (0.9, 0.1, [0.3, 0.9, 0.15], [0, 1, 2]),
        (0.9, 0.85, [0.3, 0.9, 0.15], [1]),
        # the point itself counts as reached
        (0.5, 0.5, [0.5, 0.49], [0]),
        # nothing to mark
        (0.9, 0.5, [], []),
    ],
)
def test_regions_to_mark(probability, point, own, kept) -> None:  # type: ignore[no-untyped-def]
    candidates = tuple(box(str(i), p) for i, p in enumerate(own))
    assert regions_to_mark(probability, point, candidates) == tuple(candidates[i] for i in kept)


def _analysis(lead: float, regions: tuple[Region, ...]) -> Analysis:
    return Analysis(
        findings=(
            Finding("lead", lead, regions),
            Finding("follow", lead, regions),
            Finding("alone", 0.2, (box("9", 0.2),)),
            Finding("share", 0.9),
        ),
        study_score=lead,
    )


def test_report_marks_follow_the_points_in_force() -> None:
    regions = (box("1", 0.35), box("2", 0.25))
    analysis = _analysis(0.35, regions)
    declared = AnalysisReport.from_analysis(Leader(), analysis)
    marks = {f.spec.key: f.regions for f in declared.findings}
    assert marks == {"lead": (), "follow": (), "alone": (), "share": ()}
    # a routing rule lowers the leader: both it and its follower are Present and marked
    lowered = AnalysisReport.from_analysis(
        Leader(), analysis, points_in_force(Leader(), routed={"lead": 0.3, "alone": 0.1})
    )
    marks = {f.spec.key: f.regions for f in lowered.findings}
    assert marks == {
        "lead": regions[:1],
        "follow": regions[:1],
        "alone": (box("9", 0.2),),
        "share": (),
    }
    # the JSON carries the same kept regions
    found = {f["key"]: f for f in lowered.to_json()["findings"]}
    assert [r["sop_instance_uid"] for r in found["lead"]["regions"]] == ["1"]
    assert found["lead"]["positive"] and found["lead"]["threshold"] == 0.3
    # a stored point raises it again: no marks
    raised = AnalysisReport.from_analysis(
        Leader(), analysis, points_in_force(Leader(), routed={"lead": 0.3}, stored={"lead": 0.4})
    )
    assert all(not f.regions for f in raised.findings)


def test_a_region_on_a_finding_declared_not_located_is_refused() -> None:
    analysis = Analysis(findings=(Finding("share", 0.9, (box("1"),)),), study_score=0.9)
    with pytest.raises(ValueError, match="not located"):
        AnalysisReport.from_analysis(Leader(), analysis)


def test_the_module_is_pure() -> None:
    """It imports the algorithm contract and the standard library, nothing with I/O."""
    import ast
    import sys

    import radsight.operating_points as module

    tree = ast.parse(open(module.__file__).read())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names} | {
        n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
    }
    radsight = {n for n in names if n.startswith("radsight")}
    assert radsight == {"radsight.algorithms.contract"}
    assert all(n.split(".")[0] in sys.stdlib_module_names for n in names - radsight)
