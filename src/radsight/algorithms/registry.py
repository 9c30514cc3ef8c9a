"""The algorithm registry: Python entry points in the ``radsight.algorithms`` group.

A package registers an algorithm with, in its pyproject.toml::

    [project.entry-points."radsight.algorithms"]
    my-algorithm = "my_package.module:MyAlgorithm"

The entry point names a class (instantiated without arguments) or a zero-argument factory;
a factory that returns None registers nothing (e.g. a plug-in that is not configured).
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

from radsight.algorithms.contract import Algorithm
from radsight.errors import ConfigError, NotFound

log = logging.getLogger(__name__)
GROUP = "radsight.algorithms"


class Registry:
    def __init__(self, algorithms: list[Algorithm] | None = None) -> None:
        self._by_key: dict[tuple[str, str], Algorithm] = {}
        for algorithm in algorithms or []:
            self.add(algorithm)

    def add(self, algorithm: Algorithm) -> None:
        for attr in ("name", "version", "study_types", "findings"):
            if not getattr(algorithm, attr, None):
                raise ConfigError(f"algorithm {algorithm!r} does not declare {attr}")
        self._by_key[(algorithm.name, algorithm.version)] = algorithm

    @classmethod
    def from_entry_points(cls) -> Registry:
        reg = cls()
        for ep in entry_points(group=GROUP):
            try:
                obj = ep.load()
                algorithm = obj()
                if algorithm is None:  # a factory with nothing configured registers nothing
                    continue
                reg.add(algorithm)
            except Exception as exc:  # one broken plug-in must not stop the platform
                log.error("algorithm entry point %s failed to load: %s", ep.name, exc)
        return reg

    def names(self) -> set[str]:
        return {name for name, _ in self._by_key}

    def refs(self) -> set[str]:
        """Every way a rule may name an algorithm: ``name`` and ``name@version``."""
        return self.names() | {f"{name}@{version}" for name, version in self._by_key}

    def versions(self, name: str) -> list[str]:
        """Every installed version of ``name``, oldest first (by :func:`version_key`)."""
        return sorted((v for n, v in self._by_key if n == name), key=version_key)

    def all(self) -> list[Algorithm]:
        return sorted(self._by_key.values(), key=lambda a: (a.name, version_key(a.version)))

    def resolve(self, ref: str) -> Algorithm:
        """``name`` (newest version) or ``name@version``."""
        name, _, version = ref.partition("@")
        if version:
            try:
                return self._by_key[(name, version)]
            except KeyError:
                raise NotFound(f"algorithm {name} version {version} is not registered") from None
        versions = [a for (n, _), a in self._by_key.items() if n == name]
        if not versions:
            raise NotFound(f"algorithm {name} is not registered")
        return max(versions, key=lambda a: version_key(a.version))


def version_key(version: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in version.replace("-", ".").split("."))
