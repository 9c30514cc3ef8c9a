"""Radsight's own log lines never quote an element value a parser put in its message."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from radsight.errors import DuplicateInstance, MalformedDicom
from radsight.ingest import accept

PATIENT = "Doe^John"
PYDICOM_SAYS = f"Invalid value for VR PN: '{PATIENT}'"


def test_a_stored_instance_that_does_not_read_back_is_logged_without_its_values(
    monkeypatch, caplog
):  # type: ignore[no-untyped-def]
    def unreadable(*_args, **_kwargs):  # type: ignore[no-untyped-def]
        raise ValueError(PYDICOM_SAYS)

    monkeypatch.setattr(accept.pydicom, "dcmread", unreadable)
    rt = SimpleNamespace(files=SimpleNamespace(get=lambda key: b"stored"))
    earlier = SimpleNamespace(sha256="0" * 64, storage_key="k", sop_instance_uid="1.2.3")
    parsed = SimpleNamespace(part10=b"received", sop_instance_uid="1.2.3")
    with caplog.at_level(logging.ERROR, logger="radsight"), pytest.raises(DuplicateInstance):
        accept.ensure_same_content(rt, earlier, parsed)  # type: ignore[arg-type]
    assert "stored instance 1.2.3 does not read back: ValueError: Invalid value for VR PN" in (
        caplog.text
    )
    assert PATIENT not in caplog.text


def test_a_rejection_is_logged_without_the_values_its_message_quotes(caplog):  # type: ignore[no-untyped-def]
    rt = SimpleNamespace(db=None)  # the record fails (logged), the warning is what we read
    with caplog.at_level(logging.WARNING, logger="radsight"):
        accept.record_rejection(
            rt,  # type: ignore[arg-type]
            MalformedDicom(f"the data set cannot be stored as a DICOM file: {PYDICOM_SAYS}"),
            source="stow",
            organisation_id=None,
        )
    assert "rejected stow input from '': malformed_dicom" in caplog.text
    assert PATIENT not in caplog.text
