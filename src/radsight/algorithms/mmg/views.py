"""Laterality, view and presentation intent of a mammogram, from its DICOM attributes (pure).

- Laterality: Image Laterality (0020,0062), else Laterality (0020,0060) (PS3.3 C.8.11.7:
  the Mammography Image module requires Image Laterality), else the breast named in the
  Anatomic Region Sequence (0008,2218) or its modifier (CID 4013/244 codes).
- View: the View Code Sequence (0054,0220), coded from CID 4014 "View for Mammography"
  (SNOMED CT, or the legacy SRT/SNM3 values that older units still send), else View
  Position (0018,5101) as text.
- Presentation intent (0008,0068): FOR PRESENTATION images are processed for reading; FOR
  PROCESSING images are raw detector data whose look depends on the vendor's processing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

__all__ = [
    "FOR_PROCESSING_SOP_CLASS",
    "FOR_PRESENTATION_SOP_CLASS",
    "TOMOSYNTHESIS_SOP_CLASSES",
    "VIEWS",
    "laterality",
    "presentation_intent",
    "view",
]

FOR_PRESENTATION_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1.2"
FOR_PROCESSING_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1.2.1"
TOMOSYNTHESIS_SOP_CLASSES = frozenset(
    {"1.2.840.10008.5.1.4.1.1.13.1.3", "1.2.840.10008.5.1.4.1.1.13.1.4"}
)

#: CID 4014 code values (SCT and legacy SRT/SNM3) -> the view's short name
_VIEW_CODES = {
    "399162004": "CC",
    "R-10242": "CC",
    "399368009": "MLO",
    "R-10226": "MLO",
    "399260004": "ML",
    "R-10224": "ML",
    "399352003": "LM",
    "R-10228": "LM",
    "399192008": "XCCL",
    "R-1024A": "XCCL",
    "399101009": "XCCM",
    "R-1024B": "XCCM",
    "399099002": "LMO",
    "R-10230": "LMO",
}
#: views the algorithm reads: the screening views and their common supplements
VIEWS = frozenset(_VIEW_CODES.values())

#: breast codes in Anatomic Region Sequence (SCT and legacy SRT) and laterality modifiers
_LATERALITY_CODES = {
    "80248007": "L",  # Left breast
    "T-04030": "L",
    "73056007": "R",  # Right breast
    "T-04020": "R",
    "7771000": "L",  # Left
    "G-A101": "L",
    "24028007": "R",  # Right
    "G-A100": "R",
    "51440002": "B",  # Bilateral
    "G-A102": "B",
}


def _items(value: Any) -> Iterable[Any]:
    if value is None or isinstance(value, (str, bytes)):
        return ()
    try:
        return list(value)
    except TypeError:
        return ()


def _get(item: Any, keyword: str) -> Any:
    if isinstance(item, dict):
        return item.get(keyword)
    return getattr(item, keyword, None) if keyword in item else None


def _codes(sequence: Any) -> list[str]:
    """Code values of a code sequence's items (pydicom Datasets or plain dicts)."""
    out = []
    for item in _items(sequence):
        try:
            value = _get(item, "CodeValue")
        except TypeError:
            continue
        if value:
            out.append(str(value).strip())
    return out


def laterality(image_laterality: str, attributes: dict[str, Any]) -> str:
    """``"L"``, ``"R"``, ``"B"`` (both) or ``""`` when the header does not say."""
    for text in (attributes.get("ImageLaterality"), attributes.get("Laterality"), image_laterality):
        value = str(text or "").strip().upper()
        if value in ("L", "R", "B"):
            return value
    for item in _items(attributes.get("AnatomicRegionSequence")):
        for code in _codes([item]):
            if code in _LATERALITY_CODES:
                return _LATERALITY_CODES[code]
        try:
            modifiers = _get(item, "AnatomicRegionModifierSequence")
        except TypeError:
            modifiers = None
        for code in _codes(modifiers):
            if code in _LATERALITY_CODES:
                return _LATERALITY_CODES[code]
    return ""


def view(view_position: str, attributes: dict[str, Any]) -> str:
    """The view's short name (``CC``, ``MLO``, ...), the raw View Position, or ``""``.

    The coded View Code Sequence wins over View Position text. Text such as ``LCC`` or
    ``RMLO`` (laterality folded into the view, as some units send) is unfolded. With
    neither, a view named as a word of the image's descriptive text (ImageComments,
    SeriesDescription, ProtocolName: "R MLO", "LEFT_CC", "RCC") is taken; else ``""``.
    """
    for code in _codes(attributes.get("ViewCodeSequence")):
        if code in _VIEW_CODES:
            return _VIEW_CODES[code]
    text = str(view_position or "").strip().upper().replace(" ", "").replace("-", "")
    if text:
        return _unfold(text) or text
    for keyword in DESCRIPTIVE_TEXT:
        named = {
            _unfold(word)
            for word in re.split(r"[^A-Z]+", str(attributes.get(keyword) or "").upper())
        }
        named.discard("")
        if len(named) == 1:  # one view named, not "CC and MLO"
            return named.pop()
    return ""


#: where a view is looked for when the view attributes are empty (digitised film, such as
#: CBIS-DDSM, often has no View Position)
DESCRIPTIVE_TEXT = ("ImageComments", "SeriesDescription", "ProtocolName")


def _unfold(word: str) -> str:
    """``CC`` / ``RCC`` / ``LMLO`` -> the view, else ``""``."""
    if word in VIEWS:
        return word
    if len(word) > 2 and word[0] in "LR" and word[1:] in VIEWS:
        return word[1:]
    return ""


def presentation_intent(sop_class_uid: str, attributes: dict[str, Any]) -> str:
    """``"FOR PRESENTATION"``, ``"FOR PROCESSING"`` or ``""`` (not stated)."""
    value = str(attributes.get("PresentationIntentType") or "").strip().upper()
    if value in ("FOR PRESENTATION", "FOR PROCESSING"):
        return value
    if sop_class_uid == FOR_PROCESSING_SOP_CLASS:
        return "FOR PROCESSING"
    if sop_class_uid == FOR_PRESENTATION_SOP_CLASS:
        return "FOR PRESENTATION"
    return ""
