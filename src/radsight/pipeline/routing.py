"""Routing rules: data, not code (DESIGN.md step 4). Pure: no database, no network.

A rules file (YAML) lists rules; a study matches a rule when at least one of its instances
meets every condition of the rule's ``match``. Each matching rule sends the matching
instances to its algorithms. The first rule that names an algorithm wins for that
algorithm, so a study gets one job per algorithm version however many rules match.

Example (the built-in default is ``default_rules.yaml`` beside this file)::

    version: "2026-11-28.1"
    rules:
      - name: chest radiographs
        study_types: [cxr]
        match:
          modality: [CR, DX]
          view_position: [PA, AP, ""]
          min_rows: 256
        algorithms: [radsight-cxr]
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydicom.uid import UID

from radsight.dicom.study_types import STUDY_TYPES, attribute_text
from radsight.errors import RoutingRulesError

DEFAULT_RULES = Path(__file__).with_name("default_rules.yaml")
_UID_RE = re.compile(r"[0-9]+(\.[0-9]+)*")


class Match(BaseModel):
    """Conditions on one instance; every given condition must hold. Empty lists match all."""

    model_config = ConfigDict(extra="forbid")
    modality: list[str] = Field(default_factory=list)
    body_part: list[str] = Field(default_factory=list)
    view_position: list[str] = Field(default_factory=list)
    sop_class: list[str] = Field(default_factory=list)
    organisations: list[str] = Field(default_factory=list)
    calling_ae_titles: list[str] = Field(default_factory=list)
    min_rows: int | None = Field(None, ge=1)
    min_columns: int | None = Field(None, ge=1)
    max_rows: int | None = Field(None, ge=1)
    max_columns: int | None = Field(None, ge=1)
    min_frames: int | None = Field(None, ge=1)
    #: PS3.3 keyword -> regular expression matched against the attribute's text
    attributes: dict[str, str] = Field(default_factory=dict)

    @field_validator("modality", "body_part", "view_position", "calling_ae_titles")
    @classmethod
    def _upper(cls, v: list[str]) -> list[str]:
        return [x.upper().strip() for x in v]

    @field_validator("sop_class")
    @classmethod
    def _uids(cls, v: list[str]) -> list[str]:
        out = []
        for item in v:
            if _UID_RE.fullmatch(item):
                out.append(item)
                continue
            named = [uid for uid, name in _sop_class_names().items() if name == item]
            if not named:
                raise ValueError(f"{item!r} is neither a UID nor a SOP class name")
            out.append(named[0])
        return out

    @field_validator("attributes")
    @classmethod
    def _regexes(cls, v: dict[str, str]) -> dict[str, str]:
        for key, pattern in v.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"attributes.{key}: bad regular expression: {exc}") from exc
        return v


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    study_types: list[str] = Field(default_factory=list)
    match: Match = Field(default_factory=Match)
    algorithms: list[str] = Field(min_length=1)
    #: per-finding threshold overrides for this route ("study" for the study score)
    thresholds: dict[str, float] = Field(default_factory=dict)

    @field_validator("study_types")
    @classmethod
    def _types(cls, v: list[str]) -> list[str]:
        bad = [t for t in v if t not in STUDY_TYPES]
        if bad:
            raise ValueError(f"unknown study types {bad}; known: {list(STUDY_TYPES)}")
        return v

    @field_validator("thresholds")
    @classmethod
    def _thresholds(cls, v: dict[str, float]) -> dict[str, float]:
        for key, t in v.items():
            if not 0.0 <= t <= 1.0:
                raise ValueError(f"threshold {key!r} must lie in [0, 1], got {t}")
        return v


class RuleSet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str = Field(min_length=1)
    rules: list[Rule]
    #: filled in by parse_rules: a digest of the text, logged at start-up and in /health
    digest: str = ""


def _sop_class_names() -> dict[str, str]:
    from radsight.dicom.instances import storage_sop_classes

    return {uid: UID(uid).name for uid in storage_sop_classes()}


def load_rules(path: Path | None = None, known_algorithms: set[str] | None = None) -> RuleSet:
    """Read and validate a rules file; raise :class:`RoutingRulesError` saying what is wrong."""
    path = Path(path or DEFAULT_RULES)
    try:
        text = path.read_text()
    except OSError as exc:
        raise RoutingRulesError(f"cannot read routing rules {path}: {exc.strerror}") from exc
    return parse_rules(text, source=str(path), known_algorithms=known_algorithms)


def parse_rules(
    text: str, source: str = "<rules>", known_algorithms: set[str] | None = None
) -> RuleSet:
    """Parse rules text. ``known_algorithms``: the registered names and ``name@version``
    references (``Registry.refs``); a rule naming anything else is refused."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RoutingRulesError(f"{source} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise RoutingRulesError(f"{source}: expected a mapping with 'version' and 'rules'")
    try:
        rules = RuleSet(**raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise RoutingRulesError(f"{source}: {problems}") from exc
    if known_algorithms is not None:
        for rule in rules.rules:
            for ref in rule.algorithms:
                if ref not in known_algorithms:
                    raise RoutingRulesError(
                        f"{source}: rule {rule.name!r} names algorithm {ref!r}, which is not "
                        f"registered (registered: {sorted(known_algorithms)})"
                    )
    rules.digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return rules


@dataclass(frozen=True)
class InstanceInfo:
    sop_instance_uid: str
    series_instance_uid: str
    sop_class_uid: str
    attributes: dict[str, Any]
    calling_ae_title: str = ""


@dataclass(frozen=True)
class StudyInfo:
    organisation: str
    study_type: str
    instances: tuple[InstanceInfo, ...]


@dataclass(frozen=True)
class Route:
    rule: str
    algorithm: str  # "name" or "name@version"
    sop_instance_uids: tuple[str, ...]
    thresholds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RoutingDecision:
    routes: tuple[Route, ...]
    #: why nothing matched (empty when some route matched)
    reason: str = ""


def instance_matches(m: Match, inst: InstanceInfo, organisation: str) -> str | None:
    """None when the instance meets every condition, else the first reason it does not."""
    a = inst.attributes
    checks: list[tuple[list[str], str, str]] = [
        (m.modality, attribute_text(a, "Modality").upper(), "modality"),
        (m.body_part, attribute_text(a, "BodyPartExamined").upper(), "body part"),
        (m.view_position, attribute_text(a, "ViewPosition").upper(), "view position"),
        (m.calling_ae_titles, inst.calling_ae_title.upper(), "calling AE title"),
    ]
    for allowed, value, what in checks:
        if allowed and value not in allowed:
            return f"{what} {value or '(empty)'} is not one of {allowed}"
    if m.sop_class and inst.sop_class_uid not in m.sop_class:
        return f"SOP class {UID(inst.sop_class_uid).name} is not routed"
    if m.organisations and organisation not in m.organisations:
        return f"organisation {organisation} is not routed"
    rows, cols = _int(a.get("Rows")), _int(a.get("Columns"))
    frames = _int(a.get("NumberOfFrames")) or 1
    bounds: list[tuple[int | None, int, str, bool]] = [
        (m.min_rows, rows, "rows", True),
        (m.min_columns, cols, "columns", True),
        (m.max_rows, rows, "rows", False),
        (m.max_columns, cols, "columns", False),
        (m.min_frames, frames, "frames", True),
    ]
    for limit, actual, what, low in bounds:
        if limit is None:
            continue
        if (low and actual < limit) or (not low and actual > limit):
            return f"{what} {actual} outside the routed range ({'>=' if low else '<='} {limit})"
    for key, pattern in m.attributes.items():
        if not re.search(pattern, attribute_text(a, key)):
            return f"{key} does not match {pattern!r}"
    return None


def route(rules: RuleSet, study: StudyInfo) -> RoutingDecision:
    """Match a study against the rules: one route per algorithm, first rule wins."""
    routes: list[Route] = []
    taken: set[str] = set()
    reasons: list[str] = []  # from rules of the study's type: the informative ones
    other_types: list[str] = []
    for rule in rules.rules:
        if rule.study_types and study.study_type not in rule.study_types:
            other_types.append(
                f"rule {rule.name!r}: study type {study.study_type or '(unknown)'} "
                f"is not one of {rule.study_types}"
            )
            continue
        matched = []
        first_miss = ""
        for inst in study.instances:
            miss = instance_matches(rule.match, inst, study.organisation)
            if miss is None:
                matched.append(inst.sop_instance_uid)
            elif not first_miss:
                first_miss = miss
        if not matched:
            reasons.append(f"rule {rule.name!r}: {first_miss or 'no instances'}")
            continue
        for ref in rule.algorithms:
            if ref.split("@")[0] in taken:
                continue
            taken.add(ref.split("@")[0])
            routes.append(Route(rule.name, ref, tuple(matched), dict(rule.thresholds)))
    if routes:
        return RoutingDecision(tuple(routes))
    return RoutingDecision((), "no routing rule matches: " + "; ".join((reasons + other_types)[:3]))


def _int(value: object) -> int:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return 0
