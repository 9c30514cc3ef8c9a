"""The fuzz corpus itself: valid where it should be, reproducible from its seed."""

from __future__ import annotations

import io
import random

import pydicom
import pytest

from radsight.testing import fuzz


def test_the_base_corpus_is_valid_dicom_in_each_transfer_syntax() -> None:
    corpus = fuzz.base_corpus()
    assert len({s.transfer_syntax_uid for s in corpus}) == 5
    assert len({s.sop_class_uid for s in corpus}) == 3
    for sample in corpus:
        m = fuzz.Mutant("none", sample, sample.transfer_syntax_uid, sample.encode(sample.plain), "")
        ds = pydicom.dcmread(io.BytesIO(m.part10()))
        assert ds.SOPInstanceUID == sample.sop_instance_uid
        assert ds.pixel_array.shape == (ds.Rows, ds.Columns)


def test_the_same_seed_gives_the_same_bytes_and_another_seed_others() -> None:
    def corpus_bytes(seed: int) -> list[bytes]:
        return [m.part10() for m in fuzz.mutants(seed, 44, fuzz.base_corpus())]

    assert corpus_bytes(3) == corpus_bytes(3)
    assert corpus_bytes(3) != corpus_bytes(4)
    assert fuzz.pdus(3, 21) == fuzz.pdus(3, 21)


@pytest.mark.parametrize("name", sorted(fuzz.MUTATIONS))
def test_each_mutation_class_changes_the_instance(name: str) -> None:
    corpus = fuzz.base_corpus()
    for i, m in enumerate(fuzz.mutants(1, 10, corpus, classes=[name])):
        assert m.mutation == name
        original = fuzz.fresh_uids(corpus[i % len(corpus)], random.Random(0))
        assert (m.dataset, m.transfer_syntax_uid) != (
            original.encode(original.plain),
            original.transfer_syntax_uid,
        )


def test_fresh_uids_keep_every_length() -> None:
    sample = fuzz.base_corpus()[0]
    fresh = fuzz.fresh_uids(sample, random.Random(5))
    assert len(fresh.plain) == len(sample.plain)
    assert fresh.sop_instance_uid != sample.sop_instance_uid
    assert (
        pydicom.dcmread(
            io.BytesIO(
                fuzz.Mutant("none", fresh, fresh.transfer_syntax_uid, fresh.plain, "").part10()
            )
        ).StudyInstanceUID
        == fresh.study_instance_uid
    )
