"""Typed dependencies: one ``Annotated`` alias per injected thing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Path, Query, Request

from radsight.algorithms.registry import Registry
from radsight.runtime import Runtime
from radsight.store import Session


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime  # type: ignore[no-any-return]


def get_registry(request: Request) -> Registry:
    return request.app.state.registry  # type: ignore[no-any-return]


def get_session(rt: Annotated[Runtime, Depends(get_runtime)]) -> Iterator[Session]:
    with rt.db.session() as s:
        yield s


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
RegistryDep = Annotated[Registry, Depends(get_registry)]
SessionDep = Annotated[Session, Depends(get_session)]

#: the largest id or offset a request may name: SQL BIGINT (2^63 - 1). A bigger number
#: names nothing; without this bound SQLite cannot even bind it (a 500, not a 404)
MAX_ID = 2**63 - 1
#: a row id (or an index) in a path: larger than ``MAX_ID`` is a validation error (422)
Id = Annotated[int, Path(ge=0, le=MAX_ID)]
#: an optional row id in a query string
IdQuery = Annotated[int | None, Query(ge=0, le=MAX_ID)]
#: how many rows a list skips
Offset = Annotated[int, Query(ge=0, le=MAX_ID)]
