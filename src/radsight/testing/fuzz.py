"""Seeded hostile input for the DICOM and DICOMweb entries: mutated instances and raw PDUs.

Everything here is pure and reproducible from a seed: the same ``seed`` gives the same
bytes. :mod:`radsight.testing.fuzzrun` sends them to a server and checks what it did; the
CI test (``tests/security/test_fuzz.py``) and the benchmark (``bench/bench_fuzz.py``) both
use it.

Two registries, one function per attack class:

* :data:`MUTATIONS`: ``name -> f(rng, sample) -> Mutant``, a mutated copy of a valid
  instance (:func:`base_corpus`: several SOP classes and transfer syntaxes), sent over
  C-STORE or STOW-RS;
* :data:`PDU_ATTACKS`: ``name -> f(rng) -> bytes``, raw bytes written to the DICOM port
  (PS3.8 9.3) by a client that never associates properly.

A new attack class is one decorated function::

    @mutation("my_attack")
    def my_attack(rng: random.Random, sample: Sample) -> Mutant:
        return sample.with_dataset("my_attack", new_plain_bytes, "what was done")
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
    generate_uid,
)

from radsight.dicom.synthetic import make_ct_slice, make_radiograph
from radsight.dicom.uids import PREFIX

DIGITAL_MAMMOGRAPHY = "1.2.840.10008.5.1.4.1.1.1.2"  # For Presentation (PS3.4 B.5)

#: explicit VRs with a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2)
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT"}
LONG_VRS |= {b"UV"}


@dataclass(frozen=True)
class Sample:
    """A valid instance to mutate: its file meta and its data set's bytes."""

    name: str
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    plain: bytes  # the data set as encoded, inflated where the syntax is deflated

    @property
    def explicit(self) -> bool:
        return self.transfer_syntax_uid != ImplicitVRLittleEndian

    def encode(self, plain: bytes) -> bytes:
        """Data set bytes on the wire for this sample's transfer syntax."""
        if self.transfer_syntax_uid == DeflatedExplicitVRLittleEndian:
            c = zlib.compressobj(6, zlib.DEFLATED, -15)
            return c.compress(plain) + c.flush()
        return plain

    def with_dataset(self, mutation: str, plain: bytes, detail: str) -> Mutant:
        return Mutant(mutation, self, self.transfer_syntax_uid, self.encode(plain), detail)


@dataclass(frozen=True)
class Mutant:
    """One mutated instance: what the file meta says, and the data set bytes as sent."""

    mutation: str
    sample: Sample
    transfer_syntax_uid: str  # what the file meta (and so the presentation context) says
    dataset: bytes  # the data set on the wire, after the file meta
    detail: str

    @property
    def sop_class_uid(self) -> str:
        return self.sample.sop_class_uid

    @property
    def sop_instance_uid(self) -> str:
        return self.sample.sop_instance_uid

    def part10(self) -> bytes:
        """The DICOM file (PS3.10): preamble, file meta, then the (mutated) data set."""
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = UID(self.sop_class_uid)
        meta.MediaStorageSOPInstanceUID = UID(self.sop_instance_uid)
        meta.TransferSyntaxUID = UID(self.transfer_syntax_uid)
        meta.ImplementationClassUID = UID("1.2.826.0.1.3680043.8.498.1")
        buf = io.BytesIO()
        buf.write(b"\0" * 128 + b"DICM")
        write_file_meta_info(buf, meta, enforce_standard=True)  # type: ignore[arg-type]
        return buf.getvalue() + self.dataset


# --- the valid corpus ----------------------------------------------------------------------


def _sample(name: str, ds: Dataset, syntax: str) -> Sample:
    if syntax in (RLELossless, JPEG2000Lossless):
        ds.compress(syntax, generate_instance_uid=False)
    # the same bytes on every run: UIDs and dates that depend on the name only
    for keyword in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"):
        setattr(ds, keyword, generate_uid(prefix=PREFIX, entropy_srcs=[name, keyword]))
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyDate = ds.ContentDate = "20260101"
    ds.StudyTime = ds.ContentTime = "120000"
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    data = buf.getvalue()
    back = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    start = 132 + 12 + int(back.file_meta.FileMetaInformationGroupLength)
    wire = data[start:]
    plain = zlib.decompress(wire, -15) if syntax == DeflatedExplicitVRLittleEndian else wire
    return Sample(
        name,
        str(ds.SOPClassUID),
        str(ds.SOPInstanceUID),
        str(ds.StudyInstanceUID),
        str(ds.SeriesInstanceUID),
        syntax,
        plain,
    )


def make_mammogram(**kwargs: object) -> Dataset:
    """A generated MG view (a radiograph with the Digital Mammography SOP class)."""
    laterality = str(kwargs.pop("laterality", "L"))
    kwargs.setdefault("view_position", "CC")
    ds = make_radiograph(modality="MG", body_part="BREAST", **kwargs)  # type: ignore[arg-type]
    ds.SOPClassUID = DIGITAL_MAMMOGRAPHY
    ds.file_meta.MediaStorageSOPClassUID = UID(DIGITAL_MAMMOGRAPHY)
    ds.ImageLaterality = laterality
    ds.Laterality = laterality
    return ds


def base_corpus(size: int = 64) -> list[Sample]:
    """Valid instances of three SOP classes in five transfer syntaxes (small images)."""
    ct = make_ct_slice(
        study_instance_uid="1.2.826.0.1.3680043.8.498.7001",
        series_instance_uid="1.2.826.0.1.3680043.8.498.7002",
        index=3,
        rows=size,
        columns=size,
    )
    return [
        _sample("dx-explicit", make_radiograph(rows=size, columns=size), ExplicitVRLittleEndian),
        _sample("dx-implicit", make_radiograph(rows=size, columns=size), ImplicitVRLittleEndian),
        _sample(
            "mg-deflated", make_mammogram(rows=size, columns=size), DeflatedExplicitVRLittleEndian
        ),
        _sample("ct-rle", ct, RLELossless),
        _sample("dx-j2k", make_radiograph(rows=size, columns=size), JPEG2000Lossless),
    ]


def fresh_uids(sample: Sample, rng: random.Random) -> Sample:
    """The same instance under new, same-length SOP Instance, Series and Study UIDs.

    Same length, so that every length field stays true and only the mutation is wrong.
    """
    plain = sample.plain
    new = {}
    for uid in (sample.sop_instance_uid, sample.series_instance_uid, sample.study_instance_uid):
        head, _, tail = uid.rpartition(".")
        digits = str(rng.randint(1, 9)) + "".join(str(rng.randint(0, 9)) for _ in tail[1:])
        new[uid] = f"{head}.{digits}" if len(tail) >= 6 else uid
        plain = plain.replace(uid.encode(), new[uid].encode())
    return replace(
        sample,
        sop_instance_uid=new[sample.sop_instance_uid],
        series_instance_uid=new[sample.series_instance_uid],
        study_instance_uid=new[sample.study_instance_uid],
        plain=plain,
    )


# --- reading the raw data set --------------------------------------------------------------


@dataclass(frozen=True)
class Element:
    """Where a top-level data element sits in the encoded bytes."""

    offset: int
    tag: int
    vr: bytes | None  # None in Implicit VR
    length_at: int
    length_size: int
    value_at: int
    length: int


def walk(data: bytes, explicit: bool, limit: int = 2000) -> list[Element]:
    """Top-level elements of a little endian data set, up to an undefined length."""
    out: list[Element] = []
    i = 0
    while i + 8 <= len(data) and len(out) < limit:
        group, elem = struct.unpack_from("<HH", data, i)
        vr: bytes | None = None
        if explicit:
            vr = data[i + 4 : i + 6]
            size, length_at = (4, i + 8) if vr in LONG_VRS else (2, i + 6)
        else:
            size, length_at = 4, i + 4
        value_at = length_at + size
        if value_at > len(data):
            break
        length = int.from_bytes(data[length_at:value_at], "little")
        out.append(Element(i, (group << 16) | elem, vr, length_at, size, value_at, length))
        if length == 0xFFFFFFFF:
            break
        i = value_at + length
    return out


def _pick(rng: random.Random, sample: Sample, tags: tuple[int, ...] = ()) -> Element | None:
    elements = [e for e in walk(sample.plain, sample.explicit) if not tags or e.tag in tags]
    return rng.choice(elements) if elements else None


PIXEL_DATA = 0x7FE00010
#: every transfer syntax a mutant's file meta may name
TRANSFER_SYNTAXES = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
    RLELossless,
    JPEG2000Lossless,
)
STRING_TAGS = (0x00100010, 0x00081030, 0x00080080, 0x00100020, 0x00200010, 0x00080070)


# --- mutations: one function per attack class ----------------------------------------------

Mutation = Callable[[random.Random, Sample], Mutant]
MUTATIONS: dict[str, Mutation] = {}


def mutation(name: str) -> Callable[[Mutation], Mutation]:
    def register(f: Mutation) -> Mutation:
        MUTATIONS[name] = f
        return f

    return register


@mutation("bit_flip")
def bit_flip(rng: random.Random, sample: Sample) -> Mutant:
    data = bytearray(sample.plain)
    at = [rng.randrange(len(data)) for _ in range(rng.randint(1, 8))]
    for i in at:
        data[i] ^= 1 << rng.randrange(8)
    return sample.with_dataset("bit_flip", bytes(data), f"bits flipped at {sorted(at)}")


@mutation("truncate")
def truncate(rng: random.Random, sample: Sample) -> Mutant:
    cut = rng.randrange(len(sample.plain))
    return sample.with_dataset("truncate", sample.plain[:cut], f"cut at {cut}")


@mutation("huge_length")
def huge_length(rng: random.Random, sample: Sample) -> Mutant:
    """A length field set to a huge, an odd or an off-by-some value."""
    e = _pick(rng, sample)
    assert e is not None
    top = (1 << (8 * e.length_size)) - 1
    value = rng.choice([top, top - 1, top - 15, e.length + 1, e.length * 7 + 3, 0x7FFFFFFF]) & top
    data = bytearray(sample.plain)
    data[e.length_at : e.value_at] = value.to_bytes(e.length_size, "little")
    return sample.with_dataset("huge_length", bytes(data), f"({e.tag:08X}) length -> {value}")


@mutation("vr_change")
def vr_change(rng: random.Random, sample: Sample) -> Mutant:
    """Another VR for an element (explicit VR) or a value of another size (implicit VR)."""
    data = bytearray(sample.plain)
    e = _pick(rng, sample)
    assert e is not None
    if e.vr is not None:
        # same header size, so the element still ends where it did
        same = [v for v in (b"US", b"SS", b"FD", b"DA", b"PN", b"AT", b"UI", b"DS", b"IS", b"FL")]
        long = [v for v in (b"OB", b"OW", b"SQ", b"UN", b"UT", b"OF")]
        vr = rng.choice(long if e.vr in LONG_VRS else same)
        data[e.offset + 4 : e.offset + 6] = vr
        return sample.with_dataset("vr_change", bytes(data), f"({e.tag:08X}) {e.vr!r} -> {vr!r}")
    # implicit VR: a value whose length does not fit its dictionary VR (a 2-byte US as 3)
    value = bytes(rng.randrange(256) for _ in range(rng.choice([1, 3, 5, 6, 9])))
    header = data[e.offset : e.offset + 4] + len(value).to_bytes(4, "little")
    data[e.offset : e.value_at + e.length] = header + value
    return sample.with_dataset("vr_change", bytes(data), f"({e.tag:08X}) {len(value)}-byte value")


@mutation("vm_change")
def vm_change(rng: random.Random, sample: Sample) -> Mutant:
    """Several values where one is allowed (UIDs, Rows, names), or none."""
    wanted = (0x00280010, 0x00280011, 0x0020000D, 0x00080018, 0x00100010, 0x00280100)
    e = _pick(rng, sample, wanted) or _pick(rng, sample)
    assert e is not None
    old = sample.plain[e.value_at : e.value_at + e.length]
    if e.vr in (b"US", b"SS") or (e.vr is None and e.length == 2):
        value = old * rng.choice([0, 2, 3, 17])
    else:
        value = b"\\".join([old.rstrip(b"\0 ")] * rng.choice([2, 3, 64]))
        value += b" " * (len(value) % 2)
    data = bytearray(sample.plain)
    data[e.length_at : e.value_at + e.length] = len(value).to_bytes(e.length_size, "little") + value
    return sample.with_dataset("vm_change", bytes(data), f"({e.tag:08X}) {len(value)} bytes")


def _element(tag: int, vr: bytes, value: bytes, explicit: bool) -> bytes:
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    if not explicit:
        return head + struct.pack("<I", len(value)) + value
    if vr in LONG_VRS:
        return head + vr + b"\0\0" + struct.pack("<I", len(value)) + value
    return head + vr + struct.pack("<H", len(value)) + value


def _insert_sorted(sample: Sample, blob: bytes, tag: int) -> bytes:
    """Insert an encoded element before the first element with a higher tag."""
    for e in walk(sample.plain, sample.explicit):
        if e.tag > tag:
            return sample.plain[: e.offset] + blob + sample.plain[e.offset :]
    return sample.plain + blob


#: the deepest nesting deep_sequence makes: far beyond max_sequence_depth (32 by default,
#: at most 100), so the fuzz proves a deep data set is refused at every entry, and that
#: whatever is acknowledged reads back (its WADO-RS metadata too). Before the limit a data
#: set nested ~190 deep was acknowledged over STOW-RS and its metadata answered 500 (issue 16)
SEQUENCE_DEPTH_MAX = 400


@mutation("deep_sequence")
def deep_sequence(rng: random.Random, sample: Sample) -> Mutant:
    """A Referenced Image Sequence nested ``depth`` items deep, undefined lengths."""
    depth = rng.randint(8, SEQUENCE_DEPTH_MAX)
    seq = 0x00081140  # Referenced Image Sequence
    head = struct.pack("<HH", 0x0008, 0x1140)
    opener = head + (b"SQ\0\0" if sample.explicit else b"") + b"\xff\xff\xff\xff"
    item = b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
    close = b"\xfe\xff\x0d\xe0\0\0\0\0" + b"\xfe\xff\xdd\xe0\0\0\0\0"
    blob = opener + (item + opener) * depth + item + close * (depth + 1)
    plain = _insert_sorted(sample, blob, seq)
    return sample.with_dataset("deep_sequence", plain, f"{depth} levels")


@mutation("duplicate_tag")
def duplicate_tag(rng: random.Random, sample: Sample) -> Mutant:
    e = _pick(rng, sample)
    assert e is not None
    end = len(sample.plain) if e.length == 0xFFFFFFFF else e.value_at + e.length
    copy = sample.plain[e.offset : end]
    times = rng.choice([1, 2, 50])
    plain = sample.plain[:end] + copy * times + sample.plain[end:]
    return sample.with_dataset("duplicate_tag", plain, f"({e.tag:08X}) x{times + 1}")


@mutation("wrong_transfer_syntax")
def wrong_transfer_syntax(rng: random.Random, sample: Sample) -> Mutant:
    """The file meta (and so the presentation context) names another syntax."""
    others = [s for s in TRANSFER_SYNTAXES if s != sample.transfer_syntax_uid]
    syntax = rng.choice(others)
    return Mutant(
        "wrong_transfer_syntax", sample, syntax, sample.encode(sample.plain), f"meta says {syntax}"
    )


@mutation("garbage_pixels")
def garbage_pixels(rng: random.Random, sample: Sample) -> Mutant:
    """Random bytes for Pixel Data: the same length, shorter, or longer (bounded)."""
    e = _pick(rng, sample, (PIXEL_DATA,))
    assert e is not None
    length = len(sample.plain) - e.value_at if e.length == 0xFFFFFFFF else e.length
    n = rng.choice([length, length // 3, length * 3, 2, 0]) & ~1
    value = rng.randbytes(n)
    if e.length == 0xFFFFFFFF and rng.random() < 0.5:  # encapsulated: a garbage fragment
        value = b"\xfe\xff\x00\xe0\0\0\0\0" + b"\xfe\xff\x00\xe0" + struct.pack("<I", n) + value
        value += b"\xfe\xff\xdd\xe0\0\0\0\0"
        header = sample.plain[e.offset : e.value_at]
    else:
        header = _element(PIXEL_DATA, b"OW", b"", sample.explicit)[:-4] + struct.pack("<I", n)
    plain = sample.plain[: e.offset] + header + value
    return sample.with_dataset("garbage_pixels", plain, f"{n} random bytes")


@mutation("oversized_string")
def oversized_string(rng: random.Random, sample: Sample, max_bytes: int = 1 << 18) -> Mutant:
    """A string element far beyond its VR's length (PN 64 chars per group, LO 64)."""
    e = _pick(rng, sample, STRING_TAGS)
    assert e is not None
    n = rng.choice([65, 1025, 65534, max_bytes]) & ~1
    long_vr = sample.explicit and n > 0xFFFF
    value = bytes(rng.choice(b"ABCDEFGHIJ^= \\") for _ in range(min(n, 4096)))
    value = (value * (n // len(value) + 1))[:n]
    vr = (b"UT" if long_vr else (e.vr or b"LO")) if sample.explicit else b""
    plain = (
        sample.plain[: e.offset]
        + _element(e.tag, vr or b"LO", value, sample.explicit)
        + sample.plain[e.value_at + e.length :]
    )
    return sample.with_dataset("oversized_string", plain, f"({e.tag:08X}) {n} bytes")


def mutants(
    seed: int, n: int, corpus: list[Sample], classes: list[str] | None = None
) -> list[Mutant]:
    """``n`` mutants, round robin over the attack classes, reproducible from ``seed``."""
    rng = random.Random(seed)
    names = classes or sorted(MUTATIONS)
    out = []
    for i in range(n):
        sample = fresh_uids(corpus[i % len(corpus)], rng)
        out.append(MUTATIONS[names[i % len(names)]](rng, sample))
    return out


# --- raw PDUs on the DICOM port (PS3.8 9.3) -----------------------------------------------

PduAttack = Callable[[random.Random], bytes]
PDU_ATTACKS: dict[str, PduAttack] = {}


def pdu_attack(name: str) -> Callable[[PduAttack], PduAttack]:
    def register(f: PduAttack) -> PduAttack:
        PDU_ATTACKS[name] = f
        return f

    return register


def _pdu(pdu_type: int, body: bytes, declared: int | None = None) -> bytes:
    length = len(body) if declared is None else declared
    return struct.pack(">BBI", pdu_type, 0, length) + body


def _item(item_type: int, body: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(body)) + body


def associate_rq(calling: str = "MODALITY1", called: str = "RADSIGHT") -> bytes:
    """A well-formed A-ASSOCIATE-RQ asking for Verification (PS3.8 9.3.2)."""
    ts = _item(0x40, ImplicitVRLittleEndian.encode())
    context = _item(0x20, b"\x01\0\0\0" + _item(0x30, b"1.2.840.10008.1.1") + ts)
    user = _item(0x50, _item(0x51, struct.pack(">I", 16384)) + _item(0x52, b"1.2.3.4"))
    body = (
        struct.pack(">HH", 1, 0)
        + called.ljust(16).encode()
        + calling.ljust(16).encode()
        + b"\0" * 32
        + _item(0x10, b"1.2.840.10008.3.1.1.1")
        + context
        + user
    )
    return _pdu(0x01, body)


@pdu_attack("random_bytes")
def random_bytes(rng: random.Random) -> bytes:
    return rng.randbytes(rng.randint(1, 4096))


@pdu_attack("truncated_associate_rq")
def truncated_associate_rq(rng: random.Random) -> bytes:
    rq = associate_rq()
    return rq[: rng.randint(1, len(rq) - 1)]


@pdu_attack("bad_pdu_type")
def bad_pdu_type(rng: random.Random) -> bytes:
    pdu_type = rng.choice([0x00, 0x08, 0x09, 0x7F, 0xFF])
    body = rng.randbytes(rng.randint(0, 512))
    return _pdu(pdu_type, body)


@pdu_attack("pdata_before_association")
def pdata_before_association(rng: random.Random) -> bytes:
    pdv = struct.pack(">IB", 1 + 1 + 64, 1) + b"\x03" + rng.randbytes(64)
    return _pdu(0x04, pdv)


@pdu_attack("huge_declared_length")
def huge_declared_length(rng: random.Random) -> bytes:
    """A PDU that declares up to 4 GiB and carries a few hundred bytes (issue 16, 2)."""
    pdu_type = rng.choice([0x01, 0x04, 0x05, 0x07])
    return _pdu(pdu_type, rng.randbytes(rng.randint(0, 1000)), rng.choice([0xFFFFFFFF, 1 << 30]))


@pdu_attack("associate_rq_bad_items")
def associate_rq_bad_items(rng: random.Random) -> bytes:
    """A valid A-ASSOCIATE-RQ header followed by items with lying lengths."""
    rq = bytearray(associate_rq())
    for _ in range(rng.randint(1, 6)):
        i = rng.randrange(74, len(rq) - 2)
        rq[i : i + 2] = struct.pack(">H", rng.choice([0, 1, 0xFFFF, rng.randrange(65536)]))
    return bytes(rq)


@pdu_attack("release_and_abort_unassociated")
def release_and_abort_unassociated(rng: random.Random) -> bytes:
    return rng.choice([_pdu(0x05, b"\0" * 4), _pdu(0x07, b"\0\0\0\0"), _pdu(0x06, b"\0" * 4)])


def pdus(seed: int, n: int, classes: list[str] | None = None) -> list[tuple[str, bytes]]:
    """``n`` raw PDUs, round robin over the attack classes, reproducible from ``seed``."""
    rng = random.Random(seed)
    names = classes or sorted(PDU_ATTACKS)
    return [(names[i % len(names)], PDU_ATTACKS[names[i % len(names)]](rng)) for i in range(n)]
