"""Argon2id hashing and verification, bounded: at most ``password_hash_concurrency``
hashes run at once in a process, and a sign-in flood waits in a short queue or is refused.

Argon2 is deliberately expensive (64 MiB and ~50 ms of CPU per hash with argon2-cffi's
defaults). Sign-in routes already run in Starlette's thread pool, so the event loop is never
blocked; what a flood exhausts is CPU and memory. :class:`HashGate` caps the hashes that
run at once; at most ``QUEUE_FACTOR`` times as many callers wait, for ``WAIT_S`` at most;
any further caller is answered at once with :class:`~radsight.errors.TooManyAttempts`
(HTTP 429 with ``Retry-After``), without hashing.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from radsight.errors import TooManyAttempts

#: callers that may wait for a hashing slot, per slot
QUEUE_FACTOR = 4
#: the longest a caller waits for a slot before it is refused
WAIT_S = 5.0
#: what a refused caller is told to wait
BUSY_RETRY_S = 2.0

_hasher = PasswordHasher()


@functools.cache
def dummy_hash() -> str:
    """Verified against when a username is unknown or locked, so every case takes the same
    time. Made at a process's first sign-in, not at import: every radsight process (CLI
    commands and workers too) imports this module, and an argon2 hash costs ~0.2 s."""
    return _hasher.hash("radsight-no-such-user")


class HashGate:
    """At most ``concurrency`` hashes at once; ``QUEUE_FACTOR * concurrency`` callers wait."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.max_waiting = QUEUE_FACTOR * concurrency
        self._slots = threading.BoundedSemaphore(concurrency)
        self._lock = threading.Lock()
        self._waiting = 0

    def check(self) -> None:
        """Refuse at once when the queue is full (before any other work for the caller)."""
        if self._waiting >= self.max_waiting:
            raise _busy()

    @contextmanager
    def slot(self) -> Iterator[None]:
        busy = _busy()
        with self._lock:
            if self._waiting >= self.max_waiting:
                raise busy
            self._waiting += 1
        try:
            acquired = self._slots.acquire(timeout=WAIT_S)
        finally:
            with self._lock:
                self._waiting -= 1
        if not acquired:
            raise busy
        try:
            yield
        finally:
            self._slots.release()


def _busy() -> TooManyAttempts:
    return TooManyAttempts("sign-in is busy: try again in a few seconds", BUSY_RETRY_S)


@functools.cache
def gate(concurrency: int) -> HashGate:
    """The process's gate for this concurrency (one per setting value, shared by requests)."""
    return HashGate(concurrency)


def hash_password(password: str, hash_gate: HashGate | None = None) -> str:
    if hash_gate is None:  # the command line: one hash, nothing to bound
        return _hasher.hash(password)
    with hash_gate.slot():
        return _hasher.hash(password)


def verify_password(stored_hash: str, password: str, hash_gate: HashGate) -> bool:
    """Whether ``password`` matches ``stored_hash`` (an unusable hash never matches)."""
    with hash_gate.slot():
        try:
            return bool(_hasher.verify(stored_hash, password))
        except (VerificationError, InvalidHashError):
            return False


def needs_rehash(stored_hash: str) -> bool:
    return bool(_hasher.check_needs_rehash(stored_hash))
