"""C-STORE statuses for each error code: the one DIMSE status table (PS3.4 B.2.3, PS3.7 C)."""

from __future__ import annotations

SUCCESS = 0x0000
#: Refused: Out of Resources
OUT_OF_RESOURCES = 0xA700
#: Error: Data Set does not match SOP Class
DATASET_MISMATCH = 0xA900
#: Error: Cannot understand
CANNOT_UNDERSTAND = 0xC000
#: Refused: SOP Class not supported (PS3.7 C.5.6)
SOP_CLASS_NOT_SUPPORTED = 0x0122
#: Failure: Processing failure (PS3.7 C.4.2)
PROCESSING_FAILURE = 0x0110
#: Failure: Duplicate SOP Instance (PS3.7 C.4.5)
DUPLICATE_SOP_INSTANCE = 0x0111

STATUS_FOR_CODE: dict[str, int] = {
    "not_dicom": CANNOT_UNDERSTAND,
    "malformed_dicom": CANNOT_UNDERSTAND,
    "missing_attribute": DATASET_MISMATCH,
    "sop_class_mismatch": DATASET_MISMATCH,
    "missing_pixel_data": DATASET_MISMATCH,
    "unsupported_sop_class": SOP_CLASS_NOT_SUPPORTED,
    "storage_error": OUT_OF_RESOURCES,
    "pixel_data_mismatch": CANNOT_UNDERSTAND,
    "too_large": OUT_OF_RESOURCES,
    "archive_too_large": OUT_OF_RESOURCES,
    "duplicate_sop_instance": DUPLICATE_SOP_INSTANCE,
}


def status_for(code: str) -> int:
    return STATUS_FOR_CODE.get(code, PROCESSING_FAILURE)
