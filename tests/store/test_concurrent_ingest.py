"""Two associations bring the first instances of one new study at the same moment.

On PostgreSQL the second insert of the study row waits on the unique index until the first
commits; it must then use the winner's study and series rows, not fail the C-STORE.
(SQLite serialises writers with BEGIN IMMEDIATE, so there the race cannot happen.)
"""

from __future__ import annotations

import threading

import pydicom
import pytest
from pydicom.uid import generate_uid

from radsight.dicom.instances import parse_part10
from radsight.dicom.synthetic import make_radiograph
from radsight.store import studies as studystore
from radsight.store import tenants
from radsight.store.scope import Scope


def _parsed(study_uid: str, series_uid: str) -> object:
    import io

    ds: pydicom.Dataset = make_radiograph(rows=64, columns=64)
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return parse_part10(buf.getvalue())


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_simultaneous_first_instances_share_one_study_and_series(runtime):
    with runtime.db.session() as s:
        org = tenants.create_organisation(s, "A", "R1").id
    study_uid, series_uid = generate_uid(), generate_uid()
    first, second = _parsed(study_uid, series_uid), _parsed(study_uid, series_uid)

    def add(s, parsed):  # type: ignore[no-untyped-def]
        return studystore.add_instance(
            s,
            organisation_id=org,
            parsed=parsed,
            storage_key=f"k/{parsed.sop_instance_uid}",
            size=1,
            sha256="0" * 64,
            study_type="cxr",
            quiet_period_s=2.0,
            calling_ae_title="MODALITY",
        )

    outcome: dict[str, object] = {}
    inserted = threading.Event()

    def loser() -> None:
        inserted.wait(10)
        try:
            with runtime.db.session() as s:
                outcome["loser"] = add(s, second)  # blocks until the winner commits
        except Exception as exc:  # the assertion below shows it
            outcome["loser"] = exc

    t = threading.Thread(target=loser)
    t.start()
    with runtime.db.session() as s:
        winner = add(s, first)
        inserted.set()
        t.join(1.0)  # give the loser time to reach the unique index and wait there
        assert t.is_alive(), "the second insert should wait for the first to commit"
    t.join(30)

    assert not isinstance(outcome["loser"], Exception), outcome["loser"]
    assert outcome["loser"] == (winner[0], True)
    with runtime.db.session() as s:
        study = studystore.get_study(s, winner[0], scope=Scope.ALL)
        assert study.num_instances == 2
        assert study.num_series == 1
