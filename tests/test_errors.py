"""The error tree: every class, its stable code, its HTTP status and whether a job retries it."""

from __future__ import annotations

import inspect

import pytest

from radsight import errors
from radsight.api.problems import problem_for
from radsight.ingest.statuses import CANNOT_UNDERSTAND, PROCESSING_FAILURE, status_for

#: class -> (code, HTTP status, retried in a job); a new class of the tree must be added here
TREE = {
    errors.RadsightError: ("radsight_error", 500, False),
    errors.ConfigError: ("config_error", 422, False),
    errors.RoutingRulesError: ("routing_rules_invalid", 422, False),
    errors.InvalidInput: ("invalid_input", 422, False),
    errors.InstanceRejected: ("instance_rejected", 400, False),
    errors.NotDicom: ("not_dicom", 400, False),
    errors.MalformedDicom: ("malformed_dicom", 400, False),
    errors.MissingAttribute: ("missing_attribute", 400, False),
    errors.UnsupportedSopClass: ("unsupported_sop_class", 415, False),
    errors.SopClassMismatch: ("sop_class_mismatch", 400, False),
    errors.MissingPixelData: ("missing_pixel_data", 400, False),
    errors.UnknownCaller: ("unknown_calling_ae_title", 400, False),
    errors.CallerNotAllowed: ("caller_not_allowed", 400, False),
    errors.AssociationRefused: ("association_refused", 400, False),
    errors.CalledAeNotRecognised: ("called_ae_title_not_recognised", 400, False),
    errors.TooManyAssociations: ("too_many_associations", 503, False),
    errors.PduTooLarge: ("pdu_too_large", 413, False),
    errors.ProtocolError: ("protocol_error", 400, False),
    errors.TlsRefused: ("tls_refused", 400, False),
    errors.NotAuthenticated: ("not_authenticated", 401, False),
    errors.Forbidden: ("forbidden", 403, False),
    errors.NotFound: ("not_found", 404, False),
    errors.Conflict: ("conflict", 409, False),
    errors.NotAcceptable: ("not_acceptable", 406, False),
    errors.UnsupportedMediaType: ("unsupported_media_type", 415, False),
    errors.StorageError: ("storage_error", 503, True),
    errors.StoredObjectUnreadable: ("stored_object_unreadable", 500, False),
    errors.NotAnalysable: ("not_analysable", 400, False),
    errors.AlgorithmError: ("algorithm_error", 500, True),
    errors.AlgorithmTimeout: ("time_limit_exceeded", 500, True),
    errors.EncodingError: ("encoding_error", 500, False),
    errors.DeliveryError: ("delivery_error", 500, True),
    errors.DestinationDisabled: ("destination_disabled", 400, False),
    errors.NotAdmitted: ("not_admitted", 409, False),
    errors.AdmissionRefused: ("admission_refused", 409, False),
    errors.PixelDataMismatch: ("pixel_data_mismatch", 400, False),
    errors.TooLarge: ("too_large", 413, False),
    errors.DuplicateInstance: ("duplicate_sop_instance", 409, False),
    errors.TooManyAttempts: ("too_many_attempts", 429, False),
    errors.SignInRefused: ("signin_refused", 403, False),
    errors.IdentityProviderUnavailable: ("identity_provider_unavailable", 502, False),
    errors.ResourceLimitExceeded: ("memory_limit_exceeded", 500, False),
    errors.ArchiveTooLarge: ("archive_too_large", 413, False),
    errors.WorkerLost: ("worker_lost", 500, True),
    errors.AuditChainBroken: ("audit_chain_broken", 500, False),
}


def test_the_table_covers_the_whole_tree():
    in_module = {
        cls
        for _name, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.RadsightError) and cls.__module__ == errors.__name__
    }
    assert in_module == set(TREE)
    codes = [code for code, _status, _retry in TREE.values()]
    assert len(codes) == len(set(codes)), "codes are unique"
    for cls in TREE:  # the docstring draws every class
        assert cls.__name__ in (errors.__doc__ or "")


@pytest.mark.parametrize("cls", list(TREE), ids=lambda c: c.__name__)
def test_each_class_has_its_code_status_and_retry(cls):
    code, status, retryable = TREE[cls]
    exc = cls("what went wrong")
    assert (exc.code, exc.http_status, exc.retryable) == (code, status, retryable)
    problem = problem_for(exc)
    assert (problem.status, problem.code, problem.detail) == (status, code, "what went wrong")
    assert problem.to_json("/x")["type"] == f"urn:radsight:error:{code}"


def test_invalid_input_is_a_value_error_and_a_bare_value_error_is_ours():
    assert isinstance(errors.InvalidInput("x"), ValueError)
    assert not issubclass(errors.StoredObjectUnreadable, errors.InstanceRejected)
    bug = problem_for(ValueError("a secret from deep inside"))
    assert (bug.status, bug.code) == (500, "internal_error")
    assert "secret" not in bug.detail


def test_the_dimse_table_takes_the_new_codes():
    # what a caller sent badly over DIMSE is still "cannot understand"; ours is a failure
    assert status_for(errors.MalformedDicom("x").code) == CANNOT_UNDERSTAND
    assert status_for(errors.StoredObjectUnreadable("x").code) == PROCESSING_FAILURE
    assert status_for(errors.InvalidInput("x").code) == PROCESSING_FAILURE
