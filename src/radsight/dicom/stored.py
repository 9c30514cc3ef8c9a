"""Reading back what Radsight stored itself (pure: pydicom).

An instance was parsed and checked when it was accepted, so when its stored bytes no
longer read, or its pixels do not decode, the fault is ours (the object store damaged
it, or a codec fails on what ingest let through), not the caller's: such failures are
:class:`~radsight.errors.StoredObjectUnreadable` (HTTP 500, a job fails for good), never
:class:`~radsight.errors.MalformedDicom` (400, "you sent bad DICOM") or
:class:`~radsight.errors.NotAcceptable` (406, which is for the ``Accept`` header alone).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import pydicom
from pydicom.uid import UID, ExplicitVRLittleEndian

from radsight.dicom.codestream import check_pixel_data
from radsight.dicom.instances import sequence_depth
from radsight.errors import MalformedDicom, PixelDataMismatch, StoredObjectUnreadable, TooLarge

__all__ = ["READABLE_SEQUENCE_DEPTH", "decoding_stored", "read_stored", "stored_as_explicit_little"]

#: the deepest nesting read back (and the upper bound of ``max_sequence_depth``):
#: encoding a data set (DICOM JSON, pydicom) recurses a few frames per level, and ~190
#: levels exhaust Python's recursion limit
READABLE_SEQUENCE_DEPTH = 100


def read_stored(data: bytes, what: str) -> pydicom.Dataset:
    """The data set of a stored instance file.

    Parameters
    ----------
    data
        The bytes the object store gave back for the key.
    what
        Names the object in the error (e.g. its storage key or SOP Instance UID).

    Raises
    ------
    radsight.errors.StoredObjectUnreadable
        When the bytes are not (any more) a readable DICOM file.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # odd values were reported at ingest
            ds = pydicom.dcmread(io.BytesIO(data))
            depth = sequence_depth(ds)
    except RecursionError as exc:
        raise StoredObjectUnreadable(
            f"stored object {what} cannot be read: its sequences nest too deep"
        ) from exc
    except Exception as exc:  # pydicom raises many kinds on damaged bytes
        raise StoredObjectUnreadable(
            f"stored object {what} cannot be read ({type(exc).__name__}: {exc})"
        ) from exc
    if depth > READABLE_SEQUENCE_DEPTH:
        # stored before max_sequence_depth refused it: encoding it (JSON, a job) would
        # exhaust the interpreter's recursion limit
        raise StoredObjectUnreadable(
            f"stored object {what} cannot be read: its sequences nest {depth} deep, "
            f"more than the {READABLE_SEQUENCE_DEPTH} Radsight reads back"
        )
    return ds


@contextmanager
def decoding_stored(what: str) -> Iterator[None]:
    """Decode a stored object's pixels inside this block: a decode failure
    (:class:`~radsight.errors.MalformedDicom` from :mod:`radsight.dicom.pixels` or
    :mod:`radsight.dicom.rendering`) becomes :class:`~radsight.errors.StoredObjectUnreadable`.

    So does a refusal to decode (:class:`~radsight.errors.PixelDataMismatch`, a frame over
    ``max_frame_pixels``, an instance over ``max_instance_pixels``): an instance stored
    before those checks existed, or put into the object store by other means, is not the
    caller's fault; the message keeps the reason and its code (``pixel_data_mismatch``,
    ``too_large``).
    """
    try:
        yield
    except (MalformedDicom, PixelDataMismatch, TooLarge) as exc:
        reason = exc.message if isinstance(exc, MalformedDicom) else f"{exc.code}: {exc.message}"
        raise StoredObjectUnreadable(f"stored object {what} cannot be decoded: {reason}") from exc


def stored_as_explicit_little(
    data: bytes, what: str, *, max_frame_pixels: int, max_instance_pixels: int
) -> bytes:
    """A stored instance converted to Explicit VR Little Endian (its pixels decompressed).

    This decodes every frame, so the pixel data is checked first
    (:func:`radsight.dicom.codestream.check_pixel_data`, both limits: the memory this
    takes is bounded by ``max_instance_pixels``), inside :func:`decoding_stored`.

    Raises
    ------
    radsight.errors.StoredObjectUnreadable
        When the file does not read, its pixel data is refused by the check (the message
        keeps ``too_large`` or ``pixel_data_mismatch``) or does not decode.
    """
    ds = read_stored(data, what)
    stored = UID(str(ds.file_meta.get("TransferSyntaxUID", "")) or ExplicitVRLittleEndian)
    with decoding_stored(what):
        if stored.is_compressed:
            check_pixel_data(
                ds, max_frame_pixels=max_frame_pixels, max_instance_pixels=max_instance_pixels
            )
    try:
        if stored.is_compressed:
            ds.decompress()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True, implicit_vr=False, little_endian=True)
    except MemoryError:  # the process's memory ceiling: not the data's fault
        raise
    except Exception as exc:  # the codecs raise many kinds; the client asked for nothing wrong
        raise StoredObjectUnreadable(
            f"stored object {what} cannot be converted from {stored} to "
            f"{ExplicitVRLittleEndian}: {exc}"
        ) from exc
    return out.getvalue()
