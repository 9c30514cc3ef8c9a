"""Result encoders: what an analysis says, as DICOM objects a PACS and a viewer take.

* :func:`build_measurement_report`: a TID 1500 Measurement Report (Comprehensive 3D SR)
* :func:`build_secondary_captures`: the marks burned into Secondary Capture images
* :class:`AnalysisReport`: the encoders' input; ``AnalysisReport.to_json`` is its JSON form
"""

from radsight.results.report import AnalysisReport, ReportedFinding
from radsight.results.sc import build_secondary_captures
from radsight.results.sr import build_measurement_report

__all__ = [
    "AnalysisReport",
    "ReportedFinding",
    "build_measurement_report",
    "build_secondary_captures",
]
