"""Deterministic UIDs for results, so that a rerun after a crash makes the same objects."""

from __future__ import annotations

from pydicom.uid import generate_uid

#: pydicom's UID root; a site may set its own org root later
PREFIX = "1.2.826.0.1.3680043.8.498."


def result_uid(*parts: object) -> str:
    """A UID derived from ``parts`` (PS3.5 B.2 style hash of stable inputs)."""
    return str(generate_uid(prefix=PREFIX, entropy_srcs=[str(p) for p in parts]))
