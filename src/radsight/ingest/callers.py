"""Who may open a DICOM association: the one policy, checked before pynetdicom sees it.

A complete A-ASSOCIATE-RQ is admitted only when, in this order:

1. its called AE title is Radsight's (with ``dicom_strict_called_ae``), else
   "called-AE-title-not-recognized";
2. its calling AE title is registered to an organisation, else
   "calling-AE-title-not-recognized";
3. the connection comes from one of the AE's ``allowed_hosts`` (empty: any), and, over
   DICOM TLS, with a client certificate whose subject is the AE's ``tls_client_subject``
   (empty: any the CA signed), else "calling-AE-title-not-recognized" as well (Orthanc's
   DicomCheckModalityHost answers the same way: the peer learns nothing more);
4. fewer than ``dicom_max_associations`` associations are open in all and fewer than
   ``dicom_max_associations_per_peer`` from its address, else "local-limit-exceeded"
   (rejected-transient: the sender may try again later).

Result, source and reason are the A-ASSOCIATE-RJ fields of PS3.8 9.3.4.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from dataclasses import dataclass

from radsight.config import Settings
from radsight.errors import (
    AssociationRefused,
    CalledAeNotRecognised,
    CallerNotAllowed,
    RadsightError,
    TooManyAssociations,
    UnknownCaller,
)
from radsight.runtime import Runtime
from radsight.store import tenants
from radsight.store.scope import Scope

log = logging.getLogger(__name__)

#: A-ASSOCIATE-RJ (result, source, reason/diag.), PS3.8 9.3.4
CALLING_AE_NOT_RECOGNISED = (0x01, 0x01, 0x03)
CALLED_AE_NOT_RECOGNISED = (0x01, 0x01, 0x07)
LOCAL_LIMIT_EXCEEDED = (0x02, 0x03, 0x02)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Caller:
    """A registered calling AE title and where it may call from."""

    ae_title: str
    organisation_id: int
    allowed_hosts: tuple[IPNetwork, ...] = ()
    tls_client_subject: str = ""

    def allows_address(self, address: str) -> bool:
        if not self.allowed_hosts:
            return True
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:10.1.2.3 on a dual-stack listener
        return any(ip.version == net.version and ip in net for net in self.allowed_hosts)


class CallerDirectory:
    """Registered calling AE titles, read from the database at most once a second."""

    def __init__(self, rt: Runtime, ttl_s: float = 1.0) -> None:
        self.rt = rt
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._cache: dict[str, Caller] = {}
        self._loaded = 0.0

    def callers(self) -> dict[str, Caller]:
        with self._lock:
            if time.monotonic() - self._loaded > self.ttl_s:
                with self.rt.db.session() as s:
                    self._cache = {
                        a.ae_title: Caller(
                            a.ae_title,
                            a.organisation_id,
                            tuple(ipaddress.ip_network(h, strict=False) for h in a.allowed_hosts),
                            a.tls_client_subject or "",
                        )
                        for a in tenants.list_application_entities(s, scope=Scope.ALL)
                    }
                self._loaded = time.monotonic()
            return self._cache

    def mapping(self) -> dict[str, int]:
        """AE title -> organisation id."""
        return {t: c.organisation_id for t, c in self.callers().items()}

    def get(self, ae_title: str) -> Caller | None:
        return self.callers().get(ae_title.strip())

    def organisation_for(self, ae_title: str) -> int | None:
        caller = self.get(ae_title)
        return caller.organisation_id if caller else None


@dataclass(frozen=True)
class Refusal:
    """Why an association is refused: the error recorded and the A-ASSOCIATE-RJ sent."""

    error: RadsightError
    reject: tuple[int, int, int]
    organisation_id: int | None = None


def check_association(
    settings: Settings,
    directory: CallerDirectory,
    *,
    calling_ae_title: str,
    called_ae_title: str,
    address: str,
    tls_subject: str | None,
    open_in_all: int,
    open_from_address: int,
) -> Caller | Refusal:
    """The admitted caller, or why not (see the module docstring for the order)."""
    calling = calling_ae_title.strip()
    called = called_ae_title.strip()
    if settings.dicom_strict_called_ae and called != settings.ae_title:
        return Refusal(
            CalledAeNotRecognised(
                f"called AE title {called!r} from {address} is not {settings.ae_title!r} "
                "(dicom_strict_called_ae)"
            ),
            CALLED_AE_NOT_RECOGNISED,
        )
    try:
        caller = directory.get(calling)
    except Exception:  # database unreachable: refuse rather than let unknown callers in
        log.exception("could not load registered AE titles")
        caller = None
    if caller is None:
        return Refusal(
            UnknownCaller(f"association from unregistered calling AE title {calling!r}"),
            CALLING_AE_NOT_RECOGNISED,
        )
    org = caller.organisation_id
    if not caller.allows_address(address):
        allowed = ", ".join(str(n) for n in caller.allowed_hosts)
        return Refusal(
            CallerNotAllowed(
                f"AE title {calling!r} called from {address}, outside its allowed hosts ({allowed})"
            ),
            CALLING_AE_NOT_RECOGNISED,
            org,
        )
    if caller.tls_client_subject and tls_subject != caller.tls_client_subject:
        shown = "no TLS client certificate" if tls_subject is None else repr(tls_subject)
        return Refusal(
            CallerNotAllowed(
                f"AE title {calling!r} from {address} presented {shown}, not the "
                f"certificate subject it is registered with ({caller.tls_client_subject!r})"
            ),
            CALLING_AE_NOT_RECOGNISED,
            org,
        )
    limit: AssociationRefused | None = None
    if open_in_all >= settings.dicom_max_associations:
        limit = TooManyAssociations(
            f"{open_in_all} associations open, the most there may be "
            f"(dicom_max_associations={settings.dicom_max_associations})"
        )
    elif open_from_address >= settings.dicom_max_associations_per_peer:
        limit = TooManyAssociations(
            f"{open_from_address} associations open from {address}, the most one address "
            f"may have (dicom_max_associations_per_peer="
            f"{settings.dicom_max_associations_per_peer})"
        )
    if limit is not None:
        return Refusal(limit, LOCAL_LIMIT_EXCEEDED, org)
    return caller
