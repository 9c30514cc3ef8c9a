"""Typed dependencies: one ``Annotated`` alias per injected thing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request

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
