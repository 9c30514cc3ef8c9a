"""Radsight's one exception tree.

Every error that crosses a boundary is one of these. Each class has a stable ``code``,
the HTTP status it is answered with (``http_status``) and whether a job that raised it is
tried again (``retryable``); a subclass inherits both unless it says otherwise, so the most
specific class wins. The edges map them to their protocol in exactly one place each:

* DIMSE: ``radsight.ingest.statuses.STATUS_FOR_CODE`` (C-STORE statuses)
* HTTP: ``radsight.api.problems.error_response``, problem+json or an error page
* jobs: the job row's ``error_code`` and ``error`` (``radsight.pipeline.runner.fail``)
* CLI: ``radsight.cli.errors.fail_cleanly`` prints ``error[code]: message`` and exits 1

Whose fault it is decides the class: :class:`InvalidInput` and :class:`InstanceRejected`
are what a caller sent (4xx, a job that raised them fails for good), while
:class:`StoredObjectUnreadable` is a file Radsight stored itself that no longer decodes
(500: the caller can do nothing about it). Any other exception is a bug: HTTP answers 500
``internal_error`` (logged once, with its traceback), a job retries it as ``internal_error``.

::

    RadsightError                    (HTTP 500)
    ├── ConfigError                  settings or rules that cannot be used (422)
    │   └── RoutingRulesError        the routing rules file is invalid (422)
    ├── InvalidInput                 a value the caller sent cannot be used (422; a ValueError)
    ├── InstanceRejected             an incoming instance is refused (recorded) (400)
    │   ├── NotDicom                 the bytes are not a DICOM Part 10 object / data set
    │   ├── MalformedDicom           truncated, absurd lengths, undecodable
    │   ├── MissingAttribute         a required attribute (UIDs) is absent or empty
    │   ├── UnsupportedSopClass      not a storage SOP class we accept (415)
    │   ├── SopClassMismatch         data set SOP class differs from the negotiated one
    │   ├── MissingPixelData         an image SOP class without pixel data
    │   ├── PixelDataMismatch        the compressed pixel data declares other dimensions than
    │   │                            Rows/Columns/frames (a decompression bomb)
    │   ├── TooLarge                 over a size limit (an instance, a body, an import) (413)
    │   │   └── ArchiveTooLarge      an import archive unpacks to more than
    │   │                            max_import_total_bytes: the import stops there
    │   └── DuplicateInstance        a different instance under an accepted SOP Instance UID (409)
    ├── UnknownCaller                calling AE title not registered to any organisation (400)
    │   └── CallerNotAllowed         a registered AE title from another address or certificate
    ├── AssociationRefused           a DICOM connection refused before any instance (400)
    │   ├── CalledAeNotRecognised    the called AE title is not Radsight's (strict called AE)
    │   ├── TooManyAssociations      over dicom_max_associations(_per_peer) (503)
    │   ├── PduTooLarge              a PDU declares more than dicom_max_pdu_bytes (413)
    │   ├── ProtocolError            bytes that are not the DICOM upper layer protocol
    │   └── TlsRefused               the TLS handshake failed (no or a wrong certificate)
    ├── NotAuthenticated             no credentials, or a wrong, expired or revoked one (401)
    │   ├── TooManyAttempts          sign-in throttled (client address, busy hashing) (429)
    │   └── SignInRefused            a single sign-on answer not accepted: no mapped role,
    │                                unknown organisation, invalid ID token, state (403)
    ├── IdentityProviderUnavailable  the OpenID Connect provider cannot be reached (502)
    ├── Forbidden                    signed in, but the role may not do this (or bad CSRF) (403)
    ├── NotFound                     an entity that does not exist (or is another tenant's) (404)
    ├── Conflict                     an entity that already exists (409)
    │   └── AdmissionRefused         a lifecycle change the admission rules do not allow (409)
    ├── NotAcceptable                no representation the client's Accept names (406)
    ├── UnsupportedMediaType         a request body of a media type we do not take (415)
    ├── StorageError                 the file or database write failed (503, retried)
    ├── StoredObjectUnreadable       a file Radsight stored no longer decodes (500)
    ├── NotAnalysable                input checks refused a study ("not analysed: <reason>") (400)
    ├── AlgorithmError               an algorithm failed while analysing (500, retried)
    │   └── AlgorithmTimeout         it ran past its time limit (500, retried)
    ├── ResourceLimitExceeded        a job ran past the worker's memory ceiling (500, permanent)
    ├── WorkerLost                   the worker died in a job (killed, lease expired) (500, retried)
    ├── AuditChainBroken             the audit trail's hash chain does not verify (500)
    ├── EncodingError                a result could not be encoded (500, permanent)
    ├── DeliveryError                a C-STORE to a destination failed (500, retried)
    ├── DestinationDisabled          the destination was disabled (400, not retried)
    └── NotAdmitted                  the version is not approved for the organisation (409)
"""

from __future__ import annotations


class RadsightError(Exception):
    """Base class. ``code`` is stable and machine-readable; the message is for people."""

    code = "radsight_error"
    #: the HTTP status it is answered with: a server-side failure unless a subclass says
    http_status = 500
    #: whether a job that raised it should be retried
    retryable = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(RadsightError):
    code = "config_error"
    http_status = 422


class RoutingRulesError(ConfigError):
    code = "routing_rules_invalid"


class InvalidInput(RadsightError, ValueError):
    """A value the caller sent cannot be used: a query parameter, a form field, a body
    field, a command-line option. The message says which and what would do.

    It is also a ``ValueError``: the parsers in the pure packages raise it where a
    highdicom-style builder would raise ``ValueError``, so their callers (and pydantic
    validators, which turn only ``ValueError`` into a validation error) stay as they are.
    """

    code = "invalid_input"
    http_status = 422


class InstanceRejected(RadsightError):
    code = "instance_rejected"
    http_status = 400


class NotDicom(InstanceRejected):
    code = "not_dicom"


class MalformedDicom(InstanceRejected):
    code = "malformed_dicom"


class MissingAttribute(InstanceRejected):
    code = "missing_attribute"


class UnsupportedSopClass(InstanceRejected):
    code = "unsupported_sop_class"
    http_status = 415


class SopClassMismatch(InstanceRejected):
    code = "sop_class_mismatch"


class MissingPixelData(InstanceRejected):
    code = "missing_pixel_data"


class PixelDataMismatch(InstanceRejected):
    """Compressed pixel data whose codestream declares other dimensions (or more frames)
    than the data set's Rows, Columns and Number of Frames: decoding it could take
    gigabytes, so it is refused before a pixel is decoded."""

    code = "pixel_data_mismatch"


class TooLarge(InstanceRejected):
    """Over a size limit: an instance, a request body, an import member or archive, an
    image to decode or render. The message names the limit and its setting."""

    code = "too_large"
    http_status = 413


class ArchiveTooLarge(TooLarge):
    """The archive's members add up to more than ``max_import_total_bytes``: the import
    stops here (the members before it stay imported)."""

    code = "archive_too_large"


class DuplicateInstance(InstanceRejected):
    """An instance whose SOP Instance UID was accepted before with different content:
    refused (never silently dropped) and recorded."""

    code = "duplicate_sop_instance"
    http_status = 409


class UnknownCaller(RadsightError):
    code = "unknown_calling_ae_title"
    http_status = 400


class CallerNotAllowed(UnknownCaller):
    """A registered calling AE title from an address outside its ``allowed_hosts``, or over
    DICOM TLS with a certificate whose subject is not its ``tls_client_subject``: refused
    as "calling AE title not recognised", like an unregistered one."""

    code = "caller_not_allowed"


class AssociationRefused(RadsightError):
    """A DICOM connection refused by the listener before any instance was received; the
    peer sees an A-ASSOCIATE-RJ or an A-ABORT, the rejections list a record."""

    code = "association_refused"
    http_status = 400


class CalledAeNotRecognised(AssociationRefused):
    code = "called_ae_title_not_recognised"


class TooManyAssociations(AssociationRefused):
    code = "too_many_associations"
    http_status = 503


class PduTooLarge(AssociationRefused):
    code = "pdu_too_large"
    http_status = 413


class ProtocolError(AssociationRefused):
    code = "protocol_error"


class TlsRefused(AssociationRefused):
    code = "tls_refused"


class NotAuthenticated(RadsightError):
    code = "not_authenticated"
    http_status = 401


class TooManyAttempts(NotAuthenticated):
    """Sign-in refused without checking the password: too many failures from the client
    address, or too many sign-ins being hashed at once. ``retry_after_s`` says when to
    try again (HTTP ``Retry-After``). A locked account is not this: it is answered like a
    wrong password (:class:`NotAuthenticated`), so that no answer tells which accounts
    exist (docs/security.md, "Sign-in")."""

    code = "too_many_attempts"
    http_status = 429

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class SignInRefused(NotAuthenticated):
    """A single sign-on (OpenID Connect) answer that is not accepted: the ID token is
    invalid (signature, issuer, audience, expiry, nonce), the state does not match, the
    user's claims map to no role or name no known organisation. ``reason`` is a short
    stable word for the audit trail (``no_role``, ``unknown_organisation``, ...)."""

    code = "signin_refused"
    http_status = 403

    def __init__(self, message: str, reason: str = "refused") -> None:
        super().__init__(message)
        self.reason = reason


class IdentityProviderUnavailable(RadsightError):
    """The OpenID Connect provider did not answer (discovery, keys or token endpoint)."""

    code = "identity_provider_unavailable"
    http_status = 502


class Forbidden(RadsightError):
    code = "forbidden"
    http_status = 403


class NotFound(RadsightError):
    code = "not_found"
    http_status = 404


class Conflict(RadsightError):
    code = "conflict"
    http_status = 409


class NotAcceptable(RadsightError):
    code = "not_acceptable"
    http_status = 406


class UnsupportedMediaType(RadsightError):
    code = "unsupported_media_type"
    http_status = 415


class StorageError(RadsightError):
    code = "storage_error"
    http_status = 503
    retryable = True


class StoredObjectUnreadable(RadsightError):
    """A file Radsight stored itself (an instance, a result) cannot be read or decoded.

    A server-side fault (the object store lost or damaged it, or a codec fails on what
    ingest accepted): 500 to the caller, who can do nothing about it, and a job that
    meets it fails for good instead of retrying the same bytes.
    """

    code = "stored_object_unreadable"


class NotAnalysable(RadsightError):
    code = "not_analysable"
    http_status = 400


class AlgorithmError(RadsightError):
    code = "algorithm_error"
    retryable = True


class AlgorithmTimeout(AlgorithmError):
    code = "time_limit_exceeded"


class ResourceLimitExceeded(RadsightError):
    """A job went past the worker's memory ceiling (``worker_memory_limit_mb``): the same
    input would do it again, so it fails for good instead of retrying."""

    code = "memory_limit_exceeded"


class WorkerLost(RadsightError):
    """The worker process running a job died before finishing it (killed by a signal, past
    its memory ceiling, or its lease expired): the attempt fails and the job is retried
    up to its ``max_attempts``."""

    code = "worker_lost"
    retryable = True


class AuditChainBroken(RadsightError):
    """The audit trail's hash chain does not verify: an event was edited, deleted,
    inserted, moved or written around the writer, or an anchored head is gone. The
    message names the first event that does not verify (``radsight audit verify``)."""

    code = "audit_chain_broken"


class EncodingError(RadsightError):
    code = "encoding_error"


class DeliveryError(RadsightError):
    code = "delivery_error"
    retryable = True


class DestinationDisabled(RadsightError):
    code = "destination_disabled"
    http_status = 400


class NotAdmitted(RadsightError):
    """The algorithm version is not approved for the organisation (shadow, suspended,
    withdrawn): its results are not delivered. Permanent: a later approval re-analyses."""

    code = "not_admitted"
    http_status = 409


class AdmissionRefused(Conflict):
    """A lifecycle change that is not allowed: no passing evidence, a move the lifecycle
    does not have, a missing reason."""

    code = "admission_refused"
