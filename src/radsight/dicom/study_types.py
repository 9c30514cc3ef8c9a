"""Study types (DESIGN.md "Study types"): which one an instance belongs to. Pure.

Ingest gives each instance a study type as it arrives (its quiet period and queue follow
from it); routing rules and algorithms name the types they take. Fluorography is told
apart from a chest radiograph by text markers only (docs/routing.md).
"""

from __future__ import annotations

import re
from typing import Any

#: every study type (DESIGN.md "Study types") and its name as people read it (worklist,
#: viewer, dashboard); a new study type is a row here, its classification below, a quiet
#: period in ``config.DEFAULT_QUIET_PERIODS`` if the default does not suit, and a routing rule
STUDY_TYPE_LABELS = {
    "cxr": "Chest X-ray",
    "flg": "Fluorography",
    "mmg": "Mammography",
    "ct-chest": "Chest CT",
    "ct-brain": "Head CT",
}
STUDY_TYPES = tuple(STUDY_TYPE_LABELS)

_MAMMO_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.1.2",  # Digital Mammography X-Ray Image - For Presentation
    "1.2.840.10008.5.1.4.1.1.1.2.1",  # - For Processing
    "1.2.840.10008.5.1.4.1.1.13.1.3",  # Breast Tomosynthesis
}
_HEAD = {"HEAD", "BRAIN", "SKULL", "HEADNECK"}
_CHEST = {"CHEST", "THORAX", "LUNG", "LUNGS", "TORSO", "CHEST_TO_PELVIS", "CHESTABDOMEN"}
#: text that marks a fluorography (screening photofluorogram) study; see docs/routing.md
FLUOROGRAPHY_PATTERN = re.compile(r"(?i)fluorog|флюорог|\bфлг\b|\bflg\b")


def attribute_text(attrs: dict[str, Any], key: str) -> str:
    """One attribute of an instance as text; multiple values joined by a backslash."""
    value = attrs.get(key, "")
    if isinstance(value, list):
        return "\\".join(str(v) for v in value)
    return str(value or "")


def is_fluorography(attrs: dict[str, Any]) -> bool:
    """Fluorography markers: ImageType, protocol or a description naming it (docs/routing.md)."""
    for key in (
        "ImageType",
        "ProtocolName",
        "StudyDescription",
        "SeriesDescription",
        "RequestedProcedureDescription",
    ):
        if FLUOROGRAPHY_PATTERN.search(attribute_text(attrs, key)):
            return True
    return False


#: an unlabelled CT reconstructed on a field this small is a head (chest: 320-500 mm)
HEAD_FOV_MM = 300.0


def _field_of_view_mm(attrs: dict[str, Any]) -> float:
    """Columns x column spacing (PixelSpacing), or 0 when either is missing or unreadable."""
    spacing: Any = attrs.get("PixelSpacing")
    try:
        column_spacing = float(spacing[1] if isinstance(spacing, list) else spacing)
        return column_spacing * int(attrs.get("Columns", 0))
    except (TypeError, ValueError, IndexError):
        return 0.0


def classify_study_type(attrs: dict[str, Any], sop_class_uid: str = "") -> str:
    """The study type key of DESIGN.md for one instance, or "" when none applies."""
    modality = attribute_text(attrs, "Modality").upper()
    body = attribute_text(attrs, "BodyPartExamined").upper().replace(" ", "")
    words = " ".join(
        attribute_text(attrs, k) for k in ("StudyDescription", "SeriesDescription", "ProtocolName")
    ).upper()
    if modality == "MG" or sop_class_uid in _MAMMO_CLASSES:
        return "mmg"
    if modality == "CT":
        if body in _HEAD or re.search(r"HEAD|BRAIN|CRAN|SKULL", words):
            return "ct-brain"
        if body in _CHEST or re.search(r"CHEST|THORAX|LUNG", words):
            return "ct-chest"
        if not body and not words.strip() and 0 < _field_of_view_mm(attrs) <= HEAD_FOV_MM:
            # unlabelled (CQ500's files name no body part): only a head fits this field;
            # the brain CT input checks still refuse what is not a head
            return "ct-brain"
        return ""
    if modality in {"CR", "DX", "DR", "RG"}:
        if is_fluorography(attrs):
            return "flg"
        if body in _CHEST or (not body and re.search(r"CHEST|THORAX|LUNG", words)):
            return "cxr"
        if not body and not words.strip():
            return "cxr"  # an unlabelled radiograph: the input checks decide
        return ""
    return ""
