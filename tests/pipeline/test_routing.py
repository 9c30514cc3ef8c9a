"""Routing rules are data: parse, validate, match (parametrised tables)."""

from __future__ import annotations

import pytest

from radsight.dicom.study_types import classify_study_type, is_fluorography
from radsight.errors import RoutingRulesError
from radsight.pipeline.routing import InstanceInfo, StudyInfo, load_rules, parse_rules, route

DX = "1.2.840.10008.5.1.4.1.1.1.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
MG = "1.2.840.10008.5.1.4.1.1.1.2"

RULES = """
version: "t-1"
rules:
  - name: frontal chest
    study_types: [cxr]
    match:
      modality: [CR, DX]
      view_position: [PA, AP]
      min_rows: 256
      min_columns: 256
    algorithms: [cxr-model]
    thresholds: {opacity: 0.3}
  - name: fluorography
    study_types: [flg]
    match: {modality: [DX]}
    algorithms: [cxr-model@2.0.0]
  - name: head ct for one hospital
    study_types: [ct-brain]
    match:
      modality: [CT]
      sop_class: [CT Image Storage]
      organisations: [City Hospital]
      attributes: {ConvolutionKernel: "(?i)^H"}
    algorithms: [ich-model]
  - name: mammography
    study_types: [mmg]
    match: {modality: [MG], max_rows: 5000}
    algorithms: [mmg-model]
"""


def inst(sop_class: str = DX, **attrs: object) -> InstanceInfo:
    return InstanceInfo("1.2.3.4", "1.2.3", sop_class, dict(attrs))


@pytest.mark.parametrize(
    ("attrs", "sop_class", "expected"),
    [
        ({"Modality": "DX", "BodyPartExamined": "CHEST"}, DX, "cxr"),
        ({"Modality": "CR", "BodyPartExamined": "THORAX"}, DX, "cxr"),
        ({"Modality": "DX"}, DX, "cxr"),
        ({"Modality": "DX", "BodyPartExamined": "HAND"}, DX, ""),
        (
            {"Modality": "DX", "BodyPartExamined": "CHEST", "ProtocolName": "Fluorography"},
            DX,
            "flg",
        ),
        ({"Modality": "DX", "StudyDescription": "ФЛГ органов грудной клетки"}, DX, "flg"),
        ({"Modality": "MG"}, MG, "mmg"),
        ({"Modality": "CT", "BodyPartExamined": "HEAD"}, CT, "ct-brain"),
        ({"Modality": "CT", "StudyDescription": "CT BRAIN NON-CONTRAST"}, CT, "ct-brain"),
        ({"Modality": "CT", "BodyPartExamined": "CHEST"}, CT, "ct-chest"),
        ({"Modality": "CT", "BodyPartExamined": "ABDOMEN"}, CT, ""),
        # unlabelled CT: a head-sized field of view (CQ500's 512 x 0.443 mm = 227 mm)
        ({"Modality": "CT", "Columns": 512, "PixelSpacing": [0.443359, 0.443359]}, CT, "ct-brain"),
        ({"Modality": "CT", "Columns": 512, "PixelSpacing": [0.78, 0.78]}, CT, ""),
        ({"Modality": "CT", "Columns": 512, "PixelSpacing": "bad"}, CT, ""),
        ({"Modality": "CT", "Columns": 512}, CT, ""),
        ({"Modality": "MR", "BodyPartExamined": "HEAD"}, "1.2.840.10008.5.1.4.1.1.4", ""),
        ({"Modality": "RF", "ProtocolName": "fluoroscopy"}, DX, ""),
    ],
)
def test_study_type(attrs, sop_class, expected):
    assert classify_study_type(attrs, sop_class) == expected


def test_fluoroscopy_is_not_fluorography():
    assert not is_fluorography({"ProtocolName": "Fluoroscopy swallow"})
    assert is_fluorography({"ImageType": ["ORIGINAL", "PRIMARY", "FLUOROGRAPHY"]})


@pytest.mark.parametrize(
    ("study_type", "org", "attrs", "sop_class", "algorithms", "reason_part"),
    [
        (
            "cxr",
            "A",
            {"Modality": "DX", "ViewPosition": "PA", "Rows": 2000, "Columns": 2000},
            DX,
            ["cxr-model"],
            "",
        ),
        (
            "cxr",
            "A",
            {"Modality": "DX", "ViewPosition": "LL", "Rows": 2000, "Columns": 2000},
            DX,
            [],
            "view position LL",
        ),
        (
            "cxr",
            "A",
            {"Modality": "DX", "ViewPosition": "PA", "Rows": 100, "Columns": 2000},
            DX,
            [],
            "rows 100",
        ),
        ("flg", "A", {"Modality": "DX"}, DX, ["cxr-model@2.0.0"], ""),
        (
            "ct-brain",
            "City Hospital",
            {"Modality": "CT", "ConvolutionKernel": "H30s"},
            CT,
            ["ich-model"],
            "",
        ),
        (
            "ct-brain",
            "Other",
            {"Modality": "CT", "ConvolutionKernel": "H30s"},
            CT,
            [],
            "organisation Other",
        ),
        (
            "ct-brain",
            "City Hospital",
            {"Modality": "CT", "ConvolutionKernel": "B70f"},
            CT,
            [],
            "ConvolutionKernel",
        ),
        ("mmg", "A", {"Modality": "MG", "Rows": 4096}, MG, ["mmg-model"], ""),
        ("mmg", "A", {"Modality": "MG", "Rows": 6000}, MG, [], "rows 6000"),
        ("", "A", {"Modality": "MR"}, DX, [], "study type (unknown)"),
    ],
)
def test_route(study_type, org, attrs, sop_class, algorithms, reason_part):
    rules = parse_rules(RULES)
    decision = route(rules, StudyInfo(org, study_type, (inst(sop_class, **attrs),)))
    assert [r.algorithm for r in decision.routes] == algorithms
    if not algorithms:
        assert decision.reason.startswith("no routing rule matches")
        assert reason_part in decision.reason
    else:
        assert decision.reason == ""


def test_route_sends_only_matching_instances_and_carries_thresholds():
    rules = parse_rules(RULES)
    frontal = InstanceInfo(
        "1.1", "1", DX, {"Modality": "DX", "ViewPosition": "PA", "Rows": 2000, "Columns": 2000}
    )
    lateral = InstanceInfo(
        "1.2", "1", DX, {"Modality": "DX", "ViewPosition": "LL", "Rows": 2000, "Columns": 2000}
    )
    (r,) = route(rules, StudyInfo("A", "cxr", (frontal, lateral))).routes
    assert r.sop_instance_uids == ("1.1",)
    assert r.thresholds == {"opacity": 0.3}


def test_one_route_per_algorithm_first_rule_wins():
    text = """
version: "1"
rules:
  - {name: first, match: {}, algorithms: [a], thresholds: {x: 0.1}}
  - {name: second, match: {}, algorithms: [a, b]}
"""
    decision = route(parse_rules(text), StudyInfo("A", "cxr", (inst(Modality="DX"),)))
    assert [(r.rule, r.algorithm) for r in decision.routes] == [("first", "a"), ("second", "b")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version: 1\nrules: [", "not valid YAML"),
        ("- a\n- b\n", "expected a mapping"),
        ("rules: []\n", "version"),
        ('version: "1"\nrules: [{name: x, algorithms: []}]', "algorithms"),
        (
            'version: "1"\nrules: [{name: x, algorithms: [a], study_types: [xray]}]',
            "unknown study types",
        ),
        ('version: "1"\nrules: [{name: x, algorithms: [a], match: {colour: [red]}}]', "colour"),
        (
            'version: "1"\nrules: [{name: x, algorithms: [a], match: {sop_class: [Nonsense]}}]',
            "neither a UID nor a SOP class name",
        ),
        (
            'version: "1"\nrules: [{name: x, algorithms: [a], match: {attributes: {A: "("}}}]',
            "bad regular expression",
        ),
        (
            'version: "1"\nrules: [{name: x, algorithms: [a], thresholds: {f: 1.5}}]',
            "must lie in [0, 1]",
        ),
    ],
)
def test_invalid_rules_say_what_is_wrong(text, message):
    with pytest.raises(RoutingRulesError, match=None) as err:
        parse_rules(text)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "known",
    [
        {"cxr-model", "ich-model", "mmg-model"},  # cxr-model@2.0.0 is not registered
        {"cxr-model", "cxr-model@2.0.0", "mmg-model"},  # ich-model is missing
    ],
)
def test_rules_naming_unregistered_algorithm_are_refused(known):
    with pytest.raises(RoutingRulesError, match="not registered"):
        parse_rules(RULES, known_algorithms=known)
    assert parse_rules(RULES, known_algorithms=known | {"cxr-model@2.0.0", "ich-model"})


def test_builtin_rules_are_valid_and_versioned():
    rules = load_rules()
    assert rules.version and len(rules.digest) == 16
    assert {t for r in rules.rules for t in r.study_types} >= {"cxr", "flg"}
