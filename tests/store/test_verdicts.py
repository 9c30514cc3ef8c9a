"""Verdicts (append-only, superseded) and the worklist (order, keyset paging, filters),
on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from radsight import auth
from radsight.store import tenants
from radsight.store import verdicts as verdictstore
from radsight.store import worklist as wl
from radsight.store.scope import Scope
from radsight.store.tables import ResultRow, StudyRow

T0 = datetime(2026, 3, 1, 8, 0)


def add_study(s, org_id: int, n: int, **fields) -> StudyRow:  # type: ignore[no-untyped-def]
    at = fields.pop("at", T0 + timedelta(minutes=n))
    row = StudyRow(
        organisation_id=org_id,
        study_instance_uid=f"1.2.3.{org_id}.{n}",
        study_type=fields.pop("study_type", "cxr"),
        state=fields.pop("state", "analysed"),
        first_received_at=at,
        last_received_at=at,
        ready_at=at,
        **fields,
    )
    s.add(row)
    s.flush()
    return row


def add_result(s, study: StudyRow, score: float, urgent: bool = False, name: str = "algo"):  # type: ignore[no-untyped-def]
    row = ResultRow(
        organisation_id=study.organisation_id,
        study_id=study.id,
        algorithm_name=name,
        algorithm_version="1.0.0",
        status="analysed",
        study_score=score,
        urgent=urgent,
        report={"study_threshold": 0.5, "findings": [{"key": "nodule", "probability": score}]},
        created_at=T0,
    )
    s.add(row)
    s.flush()
    return row


@pytest.fixture
def org(runtime):  # type: ignore[no-untyped-def]
    with runtime.db.session() as s:
        a = tenants.create_organisation(s, "General Hospital", "North")
        b = tenants.create_organisation(s, "Other Clinic", "South")
        user = auth.create_user(s, a.id, "dr.house", "correct horse battery", "radiologist")
        return {"a": a.id, "b": b.id, "user": user.id}


def test_a_changed_verdict_supersedes_and_nothing_is_overwritten(runtime, org):
    with runtime.db.session() as s:
        study = add_study(s, org["a"], 1)
        result = add_result(s, study, 0.8)
        first = verdictstore.create_verdict(
            s,
            study=study,
            user_id=org["user"],
            kind="finding",
            value="agree",
            finding_key="nodule",
            result_id=result.id,
            algorithm_name="algo",
            algorithm_version="1.0.0",
            at=T0,
        )
        second = verdictstore.create_verdict(
            s,
            study=study,
            user_id=org["user"],
            kind="finding",
            value="disagree",
            finding_key="nodule",
            result_id=result.id,
            algorithm_name="algo",
            algorithm_version="1.0.0",
            at=T0 + timedelta(hours=1),
        )
        other = verdictstore.create_verdict(
            s,
            study=study,
            user_id=org["user"],
            kind="study",
            value="abnormal",
            result_id=result.id,
            algorithm_name="algo",
            algorithm_version="1.0.0",
        )
        assert second.supersedes_id == first.id and other.supersedes_id is None
        assert study.review_state == "reviewed" and study.reviewed_at is not None
    with runtime.db.session() as s:
        every = verdictstore.list_verdicts(s, scope=Scope.of(org["a"]))
        assert [(v.kind, v.value) for v in every] == [
            ("finding", "agree"),
            ("finding", "disagree"),
            ("study", "abnormal"),
        ]
        current = verdictstore.list_verdicts(s, scope=Scope.of(org["a"]), current_only=True)
        assert [(v.kind, v.value) for v in current] == [
            ("finding", "disagree"),
            ("study", "abnormal"),
        ]
        assert verdictstore.list_verdicts(s, scope=Scope.of(org["b"])) == []
        assert verdictstore.list_verdicts(s, scope=Scope.ALL, algorithm_name="other") == []
        later = verdictstore.list_verdicts(
            s, scope=Scope.of(org["a"]), since=T0 + timedelta(minutes=30)
        )
        assert [v.value for v in later] == ["disagree", "abnormal"]
        history = verdictstore.verdict_history(s, study_id=every[0].study_id)
        by_id = {e.row.id: e for e in history}
        assert by_id[every[0].id].superseded_by == every[1].id
        assert by_id[every[1].id].superseded_by is None
        assert history[0].username == "dr.house"


def test_repeat_request_sets_the_review_state(runtime, org):
    with runtime.db.session() as s:
        study = add_study(s, org["a"], 1)
        verdictstore.create_verdict(
            s, study=study, user_id=org["user"], kind="repeat", text="patient rotated"
        )
        verdictstore.create_verdict(
            s, study=study, user_id=org["user"], kind="conclusion", text="repeat PA view"
        )
        s.refresh(study)
        assert study.review_state == "repeat_requested"
        assert wl.study_status(study) == "repeat_requested"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kind": "opinion"}, "verdict kind must be one of"),
        ({"kind": "finding", "value": "maybe", "finding_key": "nodule"}, "takes agree"),
        ({"kind": "finding", "value": "agree"}, "names its finding"),
        ({"kind": "study", "value": "fine"}, "takes normal, abnormal"),
    ],
)
def test_bad_verdicts_are_refused_with_a_reason(runtime, org, kwargs, message):
    with runtime.db.session() as s:
        study = add_study(s, org["a"], 1)
        with pytest.raises(ValueError, match=message):
            verdictstore.create_verdict(s, study=study, user_id=org["user"], **kwargs)


def test_worklist_order_keyset_pages_and_filters(runtime, org):
    with runtime.db.session() as s:
        ids = {}
        # (n, score, urgent, state, extra)
        plan = [
            (1, None, False, "receiving", {}),
            (2, 0.30, False, "analysed", {}),
            (
                3,
                0.90,
                False,
                "analysed",
                {"patient_name": "DOE^JANE", "patient_name_search": "DOE JANE"},
            ),
            (4, 0.60, True, "analysed", {"patient_id": "P-44", "study_type": "ct-brain"}),
            (5, 0.95, True, "analysed", {"accession_number": "ACC5"}),
            (6, None, False, "not_analysed", {"state_reason": "wrong body part"}),
            (7, 0.30, False, "analysed", {}),
            (8, 0.50, False, "analysed", {"patient_name_search": "DOE JOHN"}),
        ]
        for n, score, urgent, state, extra in plan:
            st = add_study(s, org["a"], n, state=state, ai_score=score, urgent=urgent, **extra)
            ids[n] = st.id
        add_study(s, org["b"], 99, ai_score=0.99, urgent=True)
    expected = [ids[n] for n in (5, 4, 3, 8, 7, 2, 6, 1)]
    with runtime.db.session() as s:
        q = wl.WorklistQuery(Scope.of(org["a"]), limit=100)
        assert [st.id for st in wl.list_worklist(s, q).studies] == expected
        # page by two: the pages join up to the same order, across the three segments
        seen, cursor = [], ""
        while True:
            page = wl.list_worklist(s, wl.WorklistQuery(Scope.of(org["a"]), cursor=cursor, limit=2))
            seen += [st.id for st in page.studies]
            if not page.next_cursor:
                break
            cursor = page.next_cursor
        assert seen == expected
        assert wl.count_worklist(s, wl.WorklistQuery(Scope.of(org["a"]))) == 8

        def ids_for(**kw):  # type: ignore[no-untyped-def]
            return [
                st.id
                for st in wl.list_worklist(s, wl.WorklistQuery(Scope.of(org["a"]), **kw)).studies
            ]

        assert ids_for(study_type="ct-brain") == [ids[4]]
        assert ids_for(status="waiting") == [ids[1]]
        assert ids_for(status="not_analysed") == [ids[6]]
        assert ids_for(search="doe") == [ids[3], ids[8]]  # a name matches from its start
        first = wl.list_worklist(s, wl.WorklistQuery(Scope.of(org["a"]), search="doe", limit=1))
        assert [st.id for st in first.studies] == [ids[3]] and first.next_cursor
        second = wl.list_worklist(
            s, wl.WorklistQuery(Scope.of(org["a"]), search="doe", limit=1, cursor=first.next_cursor)
        )
        assert [st.id for st in second.studies] == [ids[8]] and second.next_cursor == ""
        assert ids_for(search="doe^ja") == [ids[3]]
        assert ids_for(search="jane") == []
        assert ids_for(search="P-44") == [ids[4]]
        assert ids_for(search="ACC5") == [ids[5]]
        assert ids_for(search="%") == []
        assert ids_for(received_from=T0 + timedelta(minutes=6)) == [ids[8], ids[7], ids[6]]
        assert ids_for(received_to=T0 + timedelta(minutes=2)) == [ids[1]]
        with pytest.raises(ValueError, match="not a worklist cursor"):
            ids_for(cursor="garbage")
        with pytest.raises(ValueError, match="status must be one of"):
            ids_for(status="lost")


def test_study_priority_follows_its_results(runtime, org):
    with runtime.db.session() as s:
        study = add_study(s, org["a"], 1)
        add_result(s, study, 0.4, name="a")
        add_result(s, study, 0.7, urgent=True, name="b")
        wl.refresh_study_priority(s, study.id)
        s.refresh(study)
        assert study.ai_score == pytest.approx(0.7) and study.urgent is True
        top = wl.top_results(s, [study.id])
        assert top[study.id].algorithm_name == "b"
