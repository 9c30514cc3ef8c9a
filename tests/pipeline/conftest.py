"""Fixtures shared by the pipeline tests."""

from __future__ import annotations

import pytest

from radsight.store import tenants
from radsight.store.clock import utcnow
from radsight.store.tables import StudyRow


@pytest.fixture
def study_id(runtime) -> int:  # type: ignore[no-untyped-def]
    """One study of a new organisation, ready for jobs."""
    with runtime.db.session() as s:
        org = tenants.create_organisation(s, "Org", "Region")
        now = utcnow()
        st = StudyRow(
            organisation_id=org.id,
            study_instance_uid="1.2.3",
            first_received_at=now,
            last_received_at=now,
            ready_at=now,
        )
        s.add(st)
        s.flush()
        return st.id
