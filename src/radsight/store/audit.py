"""The audit trail: one write path, a hash chain over it, and its verification (SQL only).

Every event is written by :func:`record_audit`, which links it to the one before: its
``prev_hash`` is the previous event's ``hash``, and its ``hash`` is the SHA-256 of that
``prev_hash`` and a canonical JSON of the event's content (:func:`event_digest`). Events
are chained in ``id`` order. Writers in several processes (gateways, workers, the command
line) keep the chain linear because the head is read and the event inserted under one lock
held to the end of the writer's transaction: ``pg_advisory_xact_lock`` on PostgreSQL, the
database write lock on SQLite (every Radsight transaction there begins ``IMMEDIATE``).

:func:`verify_chain` recomputes the chain. An edited event no longer matches its hash; a
deleted, inserted or reordered event breaks the link of the event after it. Where the
chain starts is fixed, not inferred: migration 0006 writes one ``audit_chain_start`` row
whose ``unchained_through_id`` is the newest event id at that time. Events up to it were
written before the chain and carry no hash (they are counted, not checked); any later
event without a hash is refused, and the first chained event links to
:func:`chain_genesis` of that id, so a changed start breaks its link. A chain alone
cannot stop someone who can rewrite the whole table (they can recompute every hash):
:func:`chain_head` is the value to copy out to write-once storage, and ``verify
--anchor`` checks that an anchored head is still there.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from radsight.store.clock import utcnow
from radsight.store.scope import Scope
from radsight.store.tables import AuditChainStartRow, AuditEventRow

#: the advisory lock key that serialises audit writers on PostgreSQL ("audit" in ASCII)
_PG_LOCK_KEY = 0x6175646974
#: how long a throttled event (a viewer's frame stream) stands for later ones like it
THROTTLE_S = 60.0


class Actor(Protocol):
    """Who did something, as the audit trail records it (a :class:`radsight.auth.Principal`)."""

    @property
    def name(self) -> str: ...
    @property
    def organisation_id(self) -> int | None: ...
    @property
    def user_id(self) -> int | None: ...


def _when(value: datetime) -> str:
    # the database keeps microseconds and no time zone (see clock.utcnow)
    return value.replace(tzinfo=None).strftime("%Y-%m-%dT%H:%M:%S.%f")


def event_digest(prev_hash: str, row: AuditEventRow) -> str:
    """SHA-256 (hex) of the previous hash and the event's content, canonical JSON.

    The ``id`` is left out (the database assigns it on insert); the order of the chain is
    the order of ids, and a moved event breaks the link of its neighbours instead.
    """
    content = {
        "created_at": _when(row.created_at),
        "actor": row.actor,
        "user_id": row.user_id,
        "organisation_id": row.organisation_id,
        "action": row.action,
        "study_id": row.study_id,
        "detail": row.detail,
        "remote_addr": row.remote_addr,
    }
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256((prev_hash + "\n" + canonical).encode("ascii")).hexdigest()


def chain_genesis(unchained_through_id: int) -> str:
    """What the first chained event's ``prev_hash`` is: a digest of where the chain starts."""
    start = f"radsight audit chain start: events up to #{unchained_through_id} are unchained"
    return hashlib.sha256(start.encode("ascii")).hexdigest()


def chain_start(s: Session) -> list[int]:
    """The ``unchained_through_id`` of each ``audit_chain_start`` row (one, after 0006).

    A database built from the models without migrations has none: its chain starts at
    the first event (0), as a freshly migrated one does."""
    return list(
        s.scalars(select(AuditChainStartRow.unchained_through_id).order_by(AuditChainStartRow.id))
    )


def _lock_head(s: Session) -> str:
    """Serialise chain writers to the end of this transaction; the current head hash."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
    # SQLite: this transaction already holds the database's write lock (BEGIN IMMEDIATE)
    head = s.scalar(select(AuditEventRow.hash).order_by(AuditEventRow.id.desc()).limit(1))
    if head:
        return head
    starts = chain_start(s)
    return chain_genesis(starts[0] if starts else 0)


def record_audit(
    s: Session,
    principal: Actor | None,
    action: str,
    organisation_id: int | None = None,
    study_id: int | None = None,
    detail: dict[str, Any] | None = None,
    remote_addr: str = "",
    at: datetime | None = None,
) -> AuditEventRow:
    """One event of the audit trail (opened a study, gave a verdict, signed in, ...), chained.

    Written in the caller's transaction: a change and its event commit together. The
    chain lock is held until that transaction ends, so call this last in a unit of work
    (or use :func:`record_access`, which commits at once).
    """
    row = AuditEventRow(
        organisation_id=organisation_id
        if organisation_id is not None
        else (principal.organisation_id if principal else None),
        user_id=principal.user_id if principal else None,
        actor=(principal.name if principal else "")[:128],
        action=action[:64],
        study_id=study_id,
        # what the JSON column will give back, so the hash is computed on what is read
        detail=json.loads(json.dumps(detail or {}, default=str)),
        remote_addr=remote_addr[:64],
        created_at=(at or utcnow()).replace(tzinfo=None),
    )
    row.prev_hash = _lock_head(s)
    row.hash = event_digest(row.prev_hash, row)
    s.add(row)
    s.flush()
    return row


def record_access(
    s: Session,
    principal: Actor | None,
    action: str,
    *,
    organisation_id: int | None,
    study_id: int | None,
    detail: dict[str, Any],
    remote_addr: str,
    throttle: bool = False,
) -> AuditEventRow | None:
    """A read of patient data, committed before the data is sent.

    ``throttle``: for a stream of requests (a viewer's frames, thumbnails), at most one
    event per (actor, address, study, action) per :data:`THROTTLE_S` seconds; None when an
    event written within that time already stands for this one.
    """
    if throttle:
        since = utcnow() - timedelta(seconds=THROTTLE_S)
        q = select(AuditEventRow.id).where(
            AuditEventRow.organisation_id == organisation_id,
            AuditEventRow.created_at >= since,
            AuditEventRow.study_id == study_id,
            AuditEventRow.action == action,
            AuditEventRow.actor == (principal.name if principal else "")[:128],
            AuditEventRow.remote_addr == remote_addr[:64],
        )
        if s.scalar(q.limit(1)) is not None:
            return None
    row = record_audit(s, principal, action, organisation_id, study_id, detail, remote_addr)
    # the event is durable before any of the data leaves, and the chain lock is released
    s.commit()
    return row


def list_audit(
    s: Session,
    *,
    scope: Scope,
    study_id: int | None = None,
    action: str | None = None,
    actor: str | None = None,
    since: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[AuditEventRow]:
    """Events, newest first, of the scope's organisations (``action`` ending in ``.*``:
    every action of that prefix)."""
    q = select(AuditEventRow).order_by(AuditEventRow.id.desc())
    q = q.where(scope.where(AuditEventRow.organisation_id))
    if study_id is not None:
        q = q.where(AuditEventRow.study_id == study_id)
    if action:
        if action.endswith(".*"):
            q = q.where(AuditEventRow.action.startswith(action[:-1], autoescape=True))
        else:
            q = q.where(AuditEventRow.action == action)
    if actor:
        q = q.where(AuditEventRow.actor == actor)
    if since is not None:
        q = q.where(AuditEventRow.created_at >= since)
    return list(s.scalars(q.limit(limit).offset(offset)))


# --- verification -------------------------------------------------------------------------


@dataclass
class ChainReport:
    """What :func:`verify_chain` found. ``ok`` when every chained event matches."""

    events: int = 0
    unchained: int = 0
    first_id: int | None = None
    last_id: int | None = None
    head: str = ""
    problems: list[str] = field(default_factory=list)
    #: the id of the first event that does not verify (None when intact)
    broken_at: int | None = None
    anchor_found: bool | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if not self.ok:
            return self.problems[0]
        if self.first_id is None:
            text_ = f"{self.events} events, none chained yet"
        else:
            text_ = f"{self.events} events, chain intact from #{self.first_id} to #{self.last_id}"
        if self.unchained:
            text_ += f" ({self.unchained} earlier events were written before the chain)"
        return text_

    def describe_problems(self, most: int = 20) -> str:
        """The first ``most`` problems, one a line (the first is the first break)."""
        lines = self.problems[:most]
        if len(self.problems) > most:
            lines.append(f"... and {len(self.problems) - most} more")
        return "\n".join(lines)


def _rows(s: Session, batch: int = 2000) -> Iterator[AuditEventRow]:
    last = 0
    while True:
        rows = list(
            s.scalars(
                select(AuditEventRow)
                .where(AuditEventRow.id > last)
                .order_by(AuditEventRow.id)
                .limit(batch)
            )
        )
        if not rows:
            return
        yield from rows
        last = rows[-1].id
        s.expunge_all()  # bounded memory on a trail of millions of events


def verify_chain(s: Session, anchor: str | None = None) -> ChainReport:
    """Recompute the whole chain; the first problem names the event where it breaks.

    ``anchor``: a head hash copied out earlier (``radsight audit head``); it must still be
    the hash of some event, or events since that anchor were removed or rewritten.
    """
    report = ChainReport()
    prev: AuditEventRow | None = None
    if anchor is not None:
        report.anchor_found = False

    def fail(row_id: int, message: str) -> None:
        if report.broken_at is None:
            report.broken_at = row_id
        report.problems.append(message)

    starts = chain_start(s)
    boundary = starts[0] if starts else 0
    if len(starts) > 1:
        fail(0, f"the start of the chain is recorded {len(starts)} times (audit_chain_start)")
    for row in _rows(s):
        report.events += 1
        if row.id <= boundary:  # written before migration 0006: counted, not checked
            report.unchained += 1
            if row.hash or row.prev_hash:
                fail(
                    row.id,
                    f"event #{row.id} carries a hash but comes before the start of the chain "
                    f"(#{boundary}): the start was changed",
                )
            continue
        if prev is None:
            report.first_id = row.id
        if not row.hash:
            fail(row.id, f"event #{row.id} is not chained (written around the audit writer)")
        elif prev is None and row.prev_hash != chain_genesis(boundary):
            fail(
                row.id,
                f"event #{row.id} links to an earlier event that is missing "
                "(the start of the chain was deleted or changed)",
            )
        elif prev is not None and row.prev_hash != prev.hash:
            fail(
                row.id,
                f"chain broken at event #{row.id}: it does not follow event #{prev.id} "
                "(an event before it was deleted, inserted or moved)",
            )
        if row.hash and event_digest(row.prev_hash, row) != row.hash:
            fail(row.id, f"event #{row.id} was altered: its content does not match its hash")
        if anchor is not None and row.hash == anchor:
            report.anchor_found = True
        report.last_id = row.id
        report.head = row.hash or report.head
        prev = row
    if anchor is not None and not report.anchor_found:
        report.problems.append(
            f"the anchored head {anchor[:16]}... is not in the trail "
            "(events were removed or the trail was rewritten since it was anchored)"
        )
    return report


def chain_head(s: Session) -> tuple[int, str] | None:
    """(id, hash) of the newest event: the value to anchor outside the database."""
    row = s.execute(
        select(AuditEventRow.id, AuditEventRow.hash).order_by(AuditEventRow.id.desc()).limit(1)
    ).first()
    return (row[0], row[1]) if row is not None else None
