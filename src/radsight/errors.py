"""Radsight's one exception tree.

Every error that crosses a boundary is one of these; each class has a stable ``code``
that the edges map to their protocol in exactly one place each:

* DIMSE: ``radsight.ingest.dimse.STATUS_FOR_CODE`` (C-STORE statuses)
* HTTP: the exception handler in ``radsight.api.app`` (problem+json)
* jobs: the job row's ``error_code`` and ``error`` (``radsight.pipeline.runner``)
* CLI: ``radsight.cli.errors.fail_cleanly`` prints ``error[code]: message`` and exits 1

::

    RadsightError
    ├── ConfigError                  settings or rules that cannot be used
    │   └── RoutingRulesError        the routing rules file is invalid
    ├── InstanceRejected             an incoming instance is refused (recorded)
    │   ├── NotDicom                 the bytes are not a DICOM Part 10 object / data set
    │   ├── MalformedDicom           truncated, absurd lengths, undecodable
    │   ├── MissingAttribute         a required attribute (UIDs) is absent or empty
    │   ├── UnsupportedSopClass      not a storage SOP class we accept
    │   ├── SopClassMismatch         data set SOP class differs from the negotiated one
    │   └── MissingPixelData         an image SOP class without pixel data
    ├── UnknownCaller                calling AE title not registered to any organisation
    ├── NotAuthenticated             no credentials, or a wrong, expired or revoked one
    ├── Forbidden                    signed in, but the role may not do this (or bad CSRF)
    ├── NotFound                     an entity that does not exist (or is another tenant's)
    ├── Conflict                     an entity that already exists
    ├── NotAcceptable                no representation the client accepts (HTTP 406)
    ├── UnsupportedMediaType         a request body of a media type we do not take (415)
    ├── StorageError                 the file or database write failed (out of resources)
    ├── NotAnalysable                input checks refused a study ("not analysed: <reason>")
    ├── AlgorithmError               an algorithm failed while analysing (retried)
    │   └── AlgorithmTimeout         it ran past its time limit (retried)
    ├── EncodingError                a result could not be encoded (permanent)
    ├── DeliveryError                a C-STORE to a destination failed (retried)
    └── DestinationDisabled          the destination was disabled (not retried)
"""

from __future__ import annotations


class RadsightError(Exception):
    """Base class. ``code`` is stable and machine-readable; the message is for people."""

    code = "radsight_error"
    #: whether a job that raised it should be retried
    retryable = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(RadsightError):
    code = "config_error"


class RoutingRulesError(ConfigError):
    code = "routing_rules_invalid"


class InstanceRejected(RadsightError):
    code = "instance_rejected"


class NotDicom(InstanceRejected):
    code = "not_dicom"


class MalformedDicom(InstanceRejected):
    code = "malformed_dicom"


class MissingAttribute(InstanceRejected):
    code = "missing_attribute"


class UnsupportedSopClass(InstanceRejected):
    code = "unsupported_sop_class"


class SopClassMismatch(InstanceRejected):
    code = "sop_class_mismatch"


class MissingPixelData(InstanceRejected):
    code = "missing_pixel_data"


class UnknownCaller(RadsightError):
    code = "unknown_calling_ae_title"


class NotAuthenticated(RadsightError):
    code = "not_authenticated"


class Forbidden(RadsightError):
    code = "forbidden"


class NotFound(RadsightError):
    code = "not_found"


class Conflict(RadsightError):
    code = "conflict"


class NotAcceptable(RadsightError):
    code = "not_acceptable"


class UnsupportedMediaType(RadsightError):
    code = "unsupported_media_type"


class StorageError(RadsightError):
    code = "storage_error"
    retryable = True


class NotAnalysable(RadsightError):
    code = "not_analysable"


class AlgorithmError(RadsightError):
    code = "algorithm_error"
    retryable = True


class AlgorithmTimeout(AlgorithmError):
    code = "time_limit_exceeded"


class EncodingError(RadsightError):
    code = "encoding_error"


class DeliveryError(RadsightError):
    code = "delivery_error"
    retryable = True


class DestinationDisabled(RadsightError):
    code = "destination_disabled"
