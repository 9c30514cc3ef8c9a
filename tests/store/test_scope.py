"""The tenant scope: one required type, an explicit ALL, and the WHERE clause it becomes."""

from __future__ import annotations

import inspect

import pytest
from sqlalchemy import select

from radsight.store import (
    jobs,
    monitoring,
    people,
    qido,
    quality,
    results,
    studies,
    tenants,
    worklist,
)
from radsight.store import verdicts as verdictstore
from radsight.store.scope import Scope
from radsight.store.tables import StudyRow


def test_scopes_say_which_organisations_they_include() -> None:
    assert Scope.of(3).includes(3) and not Scope.of(3).includes(4)
    assert Scope.orgs([1, 2]).includes(2) and not Scope.orgs([1, 2]).includes(3)
    assert not Scope.orgs([]).includes(1)
    # the platform's own rows (no organisation) are in ALL only
    assert Scope.ALL.includes(None) and not Scope.of(3).includes(None)
    assert Scope.ALL.includes(12345) and Scope.ALL.is_all and not Scope.of(1).is_all
    assert Scope.orgs([2, 1, 2]) == Scope.orgs([1, 2]) and Scope.of(1) == Scope.orgs([1])
    assert Scope.orgs([1, 2]).narrow(2) == Scope.of(2) and Scope.of(1).narrow(2) is None
    assert Scope.ALL.narrow(7) == Scope.of(7)
    assert repr(Scope.ALL) == "Scope.ALL" and repr(Scope.orgs([2, 1])) == "Scope.orgs([1, 2])"


def test_a_scope_cannot_be_changed() -> None:
    scope = Scope.of(1)
    with pytest.raises(AttributeError):
        scope.organisation_ids = None  # type: ignore[misc]


@pytest.mark.parametrize(
    ("scope", "sql"),
    [
        (Scope.of(5), "studies.organisation_id = 5"),
        (Scope.orgs([7, 5]), "studies.organisation_id IN (5, 7)"),
        (Scope.orgs([]), "false"),
        (Scope.ALL, "true"),
    ],
)
def test_where_clauses(scope: Scope, sql: str) -> None:
    query = select(StudyRow.id).where(scope.where(StudyRow.organisation_id))
    text = str(query.compile(compile_kwargs={"literal_binds": True}))
    assert text.split("WHERE ", 1)[1] == sql


#: every store function that reads or lists tenant rows
SCOPED = [
    studies.get_study,
    studies.list_studies,
    studies.list_rejections,
    studies.count_instances,
    results.get_result,
    results.list_results,
    jobs.get_job,
    jobs.list_jobs,
    jobs.count_by_state,
    jobs.retry_job,
    tenants.list_organisations,
    tenants.list_application_entities,
    tenants.list_destinations,
    quality.list_thresholds,
    quality.list_evaluations,
    quality.get_evaluation,
    quality.list_alerts,
    quality.get_alert,
    quality.resolve_alert,
    monitoring.organisation_names,
    monitoring.job_counts,
    monitoring.delivery_failures,
    monitoring.analysed_results,
    monitoring.current_verdicts,
    monitoring.drift_inputs,
    monitoring.versions_in_use,
    monitoring.activity,
    qido.search_studies,
    qido.search_series,
    qido.search_instances,
    qido.ensure_study_visible,
    qido.find_instances,
    verdictstore.list_verdicts,
    worklist.get_instance,
    people.list_users,
    people.list_tokens,
    people.revoke_token,
    people.list_audit,
]


@pytest.mark.parametrize("function", SCOPED, ids=lambda f: f"{f.__module__}.{f.__name__}")
def test_the_scope_is_required_and_keyword_only(function) -> None:  # type: ignore[no-untyped-def]
    param = inspect.signature(function).parameters["scope"]
    assert param.kind is inspect.Parameter.KEYWORD_ONLY
    assert param.default is inspect.Parameter.empty
    assert param.annotation in ("Scope", Scope)


def test_the_worklist_query_requires_a_scope() -> None:
    with pytest.raises(TypeError):
        worklist.WorklistQuery()  # type: ignore[call-arg]
    assert worklist.WorklistQuery(Scope.of(1)).scope == Scope.of(1)
