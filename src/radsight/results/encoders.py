"""The result encoders, registered as a list: every output of an analysis has a role.

An analysed (study, algorithm version) is stored as an ordered list of DICOM objects, each
described by its role and SOP class (:class:`ResultObject`), never by its position. The
objects are built by the encoders in :data:`ENCODERS`, in that order:

======  ===============================================  ==============================
role    SOP Class                                        built by
======  ===============================================  ==============================
``sr``  Comprehensive 3D SR Storage (PS3.3 A.35.13)      :func:`build_measurement_report`
``sc``  Secondary Capture Image Storage (PS3.3 A.8.1)    :func:`build_secondary_captures`
======  ===============================================  ==============================

A new output type (a GSPS, a SEG) is a ``build_*`` function in its own module, a role in
:data:`Role` and one :class:`ResultEncoder` appended to :data:`ENCODERS`; storage,
delivery, the API and monitoring follow the list.

Every UID of an output derives from the result's seed (organisation, Study Instance UID,
algorithm name and version, and the revision of a re-analysed result) through
:func:`radsight.dicom.uids.result_uid`, so a rerun gives the same objects with the same
UIDs and a re-analysis gives new ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal, get_args

import pydicom
from pydicom.uid import Comprehensive3DSRStorage, SecondaryCaptureImageStorage

from radsight.dicom.uids import result_uid
from radsight.errors import EncodingError
from radsight.results.report import AnalysisReport
from radsight.results.sc import build_secondary_captures
from radsight.results.sr import build_measurement_report

#: what an output is for; a new output type adds its role here (next: "gsps", "seg")
Role = Literal["sr", "sc"]
ROLES: tuple[Role, ...] = get_args(Role)

#: ``result_uid`` bound to one result's seed: ``uid("sr")``, ``uid("sc", sop_uid, frame)``
UidSource = Callable[..., str]


@dataclass(frozen=True)
class ResultObject:
    """One stored output of a result: what it is (role, SOP class) and where it lies."""

    role: str
    sop_class_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    storage_key: str


@dataclass(frozen=True)
class EncodedObject:
    """One output built by an encoder, before it is stored."""

    role: Role
    file_name: str
    dataset: pydicom.Dataset

    def stored_as(self, storage_key: str) -> ResultObject:
        """The :class:`ResultObject` of this output once written under ``storage_key``."""
        ds = self.dataset
        return ResultObject(
            role=self.role,
            sop_class_uid=str(ds.SOPClassUID),
            series_instance_uid=str(ds.SeriesInstanceUID),
            sop_instance_uid=str(ds.SOPInstanceUID),
            storage_key=storage_key,
        )


#: (source images, report, UID source, decode limits) -> the encoder's objects, in order;
#: the limits are the keyword arguments max_frame_pixels and max_instance_pixels
Build = Callable[
    [Sequence[pydicom.Dataset], AnalysisReport, UidSource, dict[str, int]],
    Sequence[pydicom.Dataset],
]


@dataclass(frozen=True)
class ResultEncoder:
    """One output type: its role, SOP class, file names and ``build_*`` call."""

    role: Role
    sop_class_uid: str
    build: Build
    #: one object (``sr.dcm``) or a numbered series of them (``sc-0001.dcm``, ...)
    numbered: bool = False

    def file_name(self, index: int) -> str:
        return f"{self.role}-{index + 1:04d}.dcm" if self.numbered else f"{self.role}.dcm"


def _measurement_report(
    sources: Sequence[pydicom.Dataset],
    report: AnalysisReport,
    uid: UidSource,
    limits: dict[str, int],
) -> list[pydicom.Dataset]:
    sr = build_measurement_report(
        sources, report, series_instance_uid=uid("sr-series"), sop_instance_uid=uid("sr")
    )
    return [sr]


def _secondary_captures(
    sources: Sequence[pydicom.Dataset],
    report: AnalysisReport,
    uid: UidSource,
    limits: dict[str, int],
) -> list[pydicom.Dataset]:
    sop_instance_uids = [
        uid("sc", ds.SOPInstanceUID, frame)
        for ds in sources
        for frame in range(int(ds.get("NumberOfFrames", 1) or 1))
    ]
    return build_secondary_captures(
        sources,
        report,
        series_instance_uid=uid("sc-series"),
        sop_instance_uids=sop_instance_uids,
        **limits,
    )


#: every output of an analysed result, in the order they are stored and delivered
ENCODERS: tuple[ResultEncoder, ...] = (
    ResultEncoder("sr", Comprehensive3DSRStorage, _measurement_report),
    ResultEncoder("sc", SecondaryCaptureImageStorage, _secondary_captures, numbered=True),
)


def result_uids(
    organisation_id: int,
    study_instance_uid: str,
    algorithm_name: str,
    algorithm_version: str,
    revision: int = 0,
) -> UidSource:
    """The UID source of one result: every output UID derives from these values.

    Parameters
    ----------
    organisation_id : int
        The organisation the study belongs to.
    study_instance_uid : str
        Study Instance UID of the analysed study.
    algorithm_name, algorithm_version : str
        The algorithm version that produced the result.
    revision : int, optional
        The result's revision: 0 for the first analysis, ``n`` for its ``n``-th
        re-analysis on changed input. A revision above 0 enters the seed, so a re-analysed
        result has new SOP Instance UIDs (PS3.3 C.12.1.1.1: one UID, one object) and a
        PACS never receives two different objects under one UID; revision 0 keeps the
        UIDs results had before revisions existed.

    Returns
    -------
    callable
        ``uid(*parts)``: :func:`radsight.dicom.uids.result_uid` of the seed and ``parts``.
    """
    seed: tuple[object, ...] = (
        organisation_id,
        study_instance_uid,
        algorithm_name,
        algorithm_version,
    )
    if revision > 0:
        seed = (*seed, f"revision-{revision}")
    return partial(result_uid, *seed)


def encode_results(
    source_images: Sequence[pydicom.Dataset],
    report: AnalysisReport,
    uid: UidSource,
    encoders: Sequence[ResultEncoder] = ENCODERS,
    *,
    max_frame_pixels: int,
    max_instance_pixels: int,
) -> list[EncodedObject]:
    """Build every output of one analysis, encoder by encoder.

    Parameters
    ----------
    source_images : Sequence[pydicom.Dataset]
        The analysed images of one study, with their pixel data.
    report : radsight.results.AnalysisReport
        The findings to encode.
    uid : callable
        The result's UID source (:func:`result_uids`).
    encoders : Sequence[ResultEncoder], optional
        The output types to build; every registered one by default.
    max_frame_pixels, max_instance_pixels : int
        The decode limits (settings of those names) for an encoder that decodes pixels.

    Returns
    -------
    list of EncodedObject
        The outputs in encoder order, each with its role and file name.

    Raises
    ------
    ValueError
        When an encoder refuses its input (see the ``build_*`` functions).
    radsight.errors.EncodingError
        When an encoder returns an object of another SOP class than it is registered with.
    """
    out: list[EncodedObject] = []
    limits = {"max_frame_pixels": max_frame_pixels, "max_instance_pixels": max_instance_pixels}
    for encoder in encoders:
        for i, ds in enumerate(encoder.build(source_images, report, uid, limits)):
            if str(ds.SOPClassUID) != encoder.sop_class_uid:
                raise EncodingError(
                    f"the {encoder.role!r} encoder built SOP class {ds.SOPClassUID}, "
                    f"registered as {encoder.sop_class_uid}"
                )
            out.append(EncodedObject(encoder.role, encoder.file_name(i), ds))
    return out
