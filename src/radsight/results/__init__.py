"""Result encoders: what an analysis says, as DICOM objects a PACS and a viewer take.

* :data:`ENCODERS`: every output type, registered as a list of :class:`ResultEncoder`
  (role, SOP class, ``build_*`` call); :func:`encode_results` runs them in order
* :class:`ResultObject`: one stored output, described by its role and SOP class
* :func:`build_measurement_report`: a TID 1500 Measurement Report (Comprehensive 3D SR)
* :func:`build_secondary_captures`: the marks burned into Secondary Capture images
* :class:`AnalysisReport`: the encoders' input; ``AnalysisReport.to_json`` is its JSON form
"""

from radsight.results.encoders import (
    ENCODERS,
    ROLES,
    EncodedObject,
    ResultEncoder,
    ResultObject,
    Role,
    encode_results,
    result_uids,
)
from radsight.results.report import AnalysisReport, ReportedFinding
from radsight.results.sc import build_secondary_captures
from radsight.results.sr import build_measurement_report

__all__ = [
    "ENCODERS",
    "ROLES",
    "AnalysisReport",
    "EncodedObject",
    "ReportedFinding",
    "ResultEncoder",
    "ResultObject",
    "Role",
    "build_measurement_report",
    "build_secondary_captures",
    "encode_results",
    "result_uids",
]
