"""The DICOM listener's connection layer: what happens before pynetdicom sees a byte.

pynetdicom gives every TCP connection two threads at once (association and DUL) and reads
a PDU as ``recv(6)`` for its header and then ``recv(declared length)`` into memory, with
no time limit on either. Left alone, an idle connection holds a thread pair and a
connection slot, a truncated A-ASSOCIATE-RQ holds them forever, and a PDU declaring
0xFFFFFFFF bytes grows the process by what the peer sends (issue 16). So:

* :class:`Lobby` (one thread, a selector) holds every new connection until it has sent a
  complete A-ASSOCIATE-RQ, for at most ``dicom_handshake_timeout_s``, without a thread
  of its own, and does the TLS handshake there too. It checks the request against
  :func:`radsight.ingest.callers.check_association` and answers an A-ASSOCIATE-RJ (or
  an A-ABORT for anything that is not a request) itself; only an admitted request is
  handed to pynetdicom, which then reads it again from :class:`GuardedSocket`. One
  address may have at most :func:`lobby_places_per_address` connections waiting (a new
  one beyond it drops that address's oldest), and when the lobby is full the oldest
  connection of the address with the most waiting is dropped: a real modality sends its
  request within a round trip, so a flood of idle connections cannot keep it out, and
  one address's flood cannot evict another address's pending request.
* :class:`GuardedSocket` (pynetdicom's socket, subclassed) refuses a PDU whose declared
  length is over ``dicom_max_pdu_bytes`` before reading its body, and gives up on a peer
  silent for ``dicom_idle_timeout_s`` in the middle of a PDU.

pynetdicom internals relied on (tested against 3.0, see ``PYNETDICOM_TESTED``): the DUL
reads a PDU body with one ``AssociationSocket.recv(length)`` call and treats a short
read as a closed connection; ``RequestHandler._create_association`` builds the
acceptor's ``AssociationSocket``.
"""

from __future__ import annotations

import logging
import selectors
import socket
import socketserver
import ssl
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pynetdicom
from cryptography import x509
from pynetdicom.association import Association
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from radsight.config import Settings
from radsight.errors import (
    PduTooLarge,
    ProtocolError,
    RadsightError,
    TlsRefused,
)
from radsight.ingest.callers import CallerDirectory, Refusal, check_association
from radsight.ingest.refusals import RefusalLog

log = logging.getLogger(__name__)

#: pynetdicom versions whose DUL reads PDUs the way GuardedSocket expects
PYNETDICOM_TESTED = ("3.0.",)
#: bytes a sender may put in a P-DATA-TF PDU beyond the advertised maximum (some count
#: the PDV headers in, some do not)
PDU_SLACK = 64
#: an A-ASSOCIATE-RQ is sent before the peer knows our maximum PDU; a real one with 128
#: presentation contexts is ~20 KB
MAX_ASSOCIATE_RQ = 64 * 1024
#: connections waiting to complete their request; beyond it the oldest of the address
#: with the most waiting is dropped
LOBBY_CAPACITY = 256


def lobby_places_per_address(settings: Settings) -> int:
    """Connections one address may have waiting in the lobby: twice the associations it
    may hold (a modality opening its allowance at once, with room to spare), at least 8
    and at most a quarter of the lobby (so a flood from one address leaves 3/4 of it)."""
    return max(8, min(2 * settings.dicom_max_associations_per_peer, LOBBY_CAPACITY // 4))


#: how long a refused peer has to read our A-ASSOCIATE-RJ / A-ABORT before we close
LINGER_S = 2.0


def a_associate_rj(result: int, source: int, reason: int) -> bytes:
    """An A-ASSOCIATE-RJ PDU (PS3.8 9.3.4)."""
    return struct.pack(">BBLBBBB", 0x03, 0, 4, 0, result, source, reason)


def a_abort(source: int, reason: int) -> bytes:
    """An A-ABORT PDU (PS3.8 9.3.8): source 2 is the service provider; reason 1
    unrecognised PDU, 2 unexpected PDU, 6 invalid PDU parameter value."""
    return struct.pack(">BBLBBBB", 0x07, 0, 4, 0, 0, source, reason)


def peer_subject(sock: socket.socket) -> str | None:
    """The RFC 4514 subject of the TLS client's certificate (None: plain TCP or none)."""
    if not isinstance(sock, ssl.SSLSocket):
        return None
    der = sock.getpeercert(binary_form=True)
    if not der:
        return None
    return x509.load_der_x509_certificate(der).subject.rfc4514_string()


class GuardedSocket(AssociationSocket):
    """pynetdicom's socket with a PDU size cap, a silence timeout and a replay buffer.

    Installed on the acceptor's socket by :class:`_Handler` (``__class__`` is swapped,
    so everything pynetdicom set up on it stays).
    """

    _replay: bytearray
    _max_body: int
    _idle_timeout_s: float
    _on_refused: Callable[[RadsightError], None]

    def install_guard(
        self,
        replay: bytes,
        max_pdu_bytes: int,
        idle_timeout_s: float,
        on_refused: Callable[[RadsightError], None],
    ) -> None:
        self._replay = bytearray(replay)
        self._max_body = max_pdu_bytes + PDU_SLACK
        self._idle_timeout_s = idle_timeout_s
        self._on_refused = on_refused

    @property
    def ready(self) -> bool:
        return bool(self._replay) or super().ready

    def recv(self, nr_bytes: int) -> bytearray:
        out = bytearray(self._replay[:nr_bytes])  # the request the lobby already read
        del self._replay[:nr_bytes]
        remaining = nr_bytes - len(out)
        if remaining <= 0:
            return out
        sock = self.socket
        if sock is None:
            return out
        # the DUL asks for a PDU's whole body at once: recv(declared length). A header is
        # 6 bytes, so anything over the cap is a body we refuse to read (PS3.8 9.3.1)
        if remaining > self._max_body:
            self._on_refused(
                PduTooLarge(
                    f"a PDU declared {remaining} bytes, more than the {self._max_body - PDU_SLACK}"
                    " this listener accepts (dicom_max_pdu_bytes)"
                )
            )
            try:
                sock.sendall(a_abort(0x02, 0x06))
            except OSError:
                pass
            self._shutdown_socket()
            return bytearray()  # a short read: the DUL closes the association (Evt17)
        sock.settimeout(self._idle_timeout_s)
        while remaining:
            try:
                chunk = sock.recv(min(remaining, 65536))
            except (TimeoutError, OSError) as exc:
                log.info("DICOM peer stopped in the middle of a PDU: %s", exc or "timed out")
                self._shutdown_socket()
                return out
            if not chunk:
                return out
            out += chunk
            remaining -= len(chunk)
        return out


class _Handler(RequestHandler):
    """pynetdicom's request handler, with our socket and the association counted."""

    server: RadsightServer

    def _create_association(self) -> Association:
        assoc = super()._create_association()
        sock = assoc.dul.socket
        assert sock is not None and type(sock) is AssociationSocket
        sock.__class__ = GuardedSocket
        address = str(self.client_address[0])
        handover = self.server.handover
        organisation_id, calling = handover.organisation_id, handover.calling_ae_title

        def on_refused(exc: RadsightError) -> None:
            self.server.on_refused(exc, organisation_id, calling, address)

        assert isinstance(sock, GuardedSocket)
        sock.install_guard(
            handover.request,
            self.server.settings.dicom_max_pdu_bytes,
            self.server.settings.dicom_idle_timeout_s,
            on_refused,
        )
        self.server.track(assoc, address)
        return assoc


@dataclass
class _Handover:
    request: bytes = b""
    calling_ae_title: str = ""
    organisation_id: int | None = None


@dataclass
class _Waiting:
    sock: socket.socket
    address: str
    since: float
    deadline: float
    tls_done: bool
    buf: bytearray = field(default_factory=bytearray)
    #: refused: our answer is sent, waiting for the peer to close (or LINGER_S)
    closing: bool = False


class RadsightServer(ThreadedAssociationServer):
    """pynetdicom's server with our accept path: every connection goes to the lobby."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.settings: Settings = kwargs.pop("settings")
        self.directory: CallerDirectory = kwargs.pop("directory")
        self.refusals: RefusalLog = kwargs.pop("refusals")
        self.on_refused = self.refusals.record
        kwargs["request_handler"] = _Handler
        self.request_queue_size = 128
        super().__init__(*args, **kwargs)
        self.handover = _Handover()
        self._open: list[tuple[Association, str]] = []
        self._open_lock = threading.Lock()
        self.lobby = Lobby(self)

    # --- socketserver hooks -----------------------------------------------------------
    def get_request(self) -> tuple[socket.socket, Any]:
        assert self.socket is not None
        sock, address = self.socket.accept()
        sock.setblocking(False)
        if self.ssl_context is not None:
            # pynetdicom would do the handshake here, in the accept loop, with no time
            # limit: one silent client would stop every other. The lobby does it.
            sock = self.ssl_context.wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False
            )
        return sock, address

    def process_request(self, request: Any, client_address: Any) -> None:
        self.lobby.add(request, str(client_address[0]))

    def shutdown(self) -> None:
        self.lobby.stop()
        self.refusals.close()
        # stop serve_forever; not AssociationServer.shutdown, which expects the server in
        # the AE's private list of the servers start_server made
        socketserver.BaseServer.shutdown(self)
        self.server_close()

    # --- associations -------------------------------------------------------------------
    def open_counts(self, address: str) -> tuple[int, int]:
        with self._open_lock:
            self._open = [(a, addr) for a, addr in self._open if a.is_alive()]
            return len(self._open), sum(1 for _a, addr in self._open if addr == address)

    def track(self, assoc: Association, address: str) -> None:
        with self._open_lock:
            self._open.append((assoc, address))

    def admit(self, sock: socket.socket, address: str, request: bytes) -> None:
        """Decode a complete A-ASSOCIATE-RQ; hand it to pynetdicom or answer a refusal."""
        pdu = A_ASSOCIATE_RQ()
        try:
            pdu.decode(request)
            calling, called = str(pdu.calling_ae_title), str(pdu.called_ae_title)
        except Exception as exc:
            raise _Refuse(
                ProtocolError(f"undecodable A-ASSOCIATE-RQ from {address}: {exc}"),
                a_abort(0x02, 0x06),
            ) from exc
        open_in_all, open_here = self.open_counts(address)
        verdict = check_association(
            self.settings,
            self.directory,
            calling_ae_title=calling,
            called_ae_title=called,
            address=address,
            tls_subject=peer_subject(sock),
            open_in_all=open_in_all,
            open_from_address=open_here,
        )
        if isinstance(verdict, Refusal):
            raise _Refuse(
                verdict.error, a_associate_rj(*verdict.reject), verdict.organisation_id, calling
            )
        sock.setblocking(True)
        self.handover = _Handover(request, calling.strip(), verdict.organisation_id)
        # synchronous: builds the Association and starts its threads, then returns; the
        # lobby is the only caller, so the counts above cannot race
        self.finish_request(sock, (address, 0))


class _Refuse(Exception):
    def __init__(
        self,
        error: RadsightError,
        answer: bytes,
        organisation_id: int | None = None,
        calling: str = "",
    ) -> None:
        super().__init__(error.message)
        self.error, self.answer = error, answer
        self.organisation_id, self.calling = organisation_id, calling.strip()


class Lobby:
    """Connections that have not yet sent a complete A-ASSOCIATE-RQ, in one thread."""

    def __init__(self, server: RadsightServer) -> None:
        self.server = server
        self.settings = server.settings
        self._sel = selectors.DefaultSelector()
        self._new: list[tuple[socket.socket, str]] = []
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._waiting: dict[int, _Waiting] = {}
        self._per_address: dict[str, int] = {}
        self._places_per_address = lobby_places_per_address(self.settings)
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="radsight-dicom-lobby", daemon=True)
        self._thread.start()

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, sock: socket.socket, address: str) -> None:
        with self._lock:
            self._new.append((sock, address))
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass

    def stop(self) -> None:
        self._stop = True
        self.add_wake()
        self._thread.join(5)
        for w in list(self._waiting.values()):
            self._close(w)
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()

    def add_wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass

    # --- the loop -------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop:
            now = time.monotonic()
            next_deadline = min((w.deadline for w in self._waiting.values()), default=now + 1)
            try:
                events = self._sel.select(timeout=max(0.01, min(1.0, next_deadline - now)))
            except OSError:  # pragma: no cover - a closed fd raced the select
                events = []
            for key, _mask in events:
                if key.data is None:
                    try:
                        self._wake_r.recv(4096)
                    except OSError:
                        pass
                    continue
                try:
                    self._service(key.data)
                except Exception:  # the loop's catch-all: one connection, never the lobby
                    log.exception("DICOM connection from %s failed", key.data.address)
                    self._close(key.data)
            self._take_new()
            self._expire(time.monotonic())

    def _take_new(self) -> None:
        with self._lock:
            new, self._new = self._new, []
        for sock, address in new:
            now = time.monotonic()
            w = _Waiting(
                sock,
                address,
                now,
                now + self.settings.dicom_handshake_timeout_s,
                tls_done=not isinstance(sock, ssl.SSLSocket),
            )
            self._hold(w)
            self._sel.register(sock, selectors.EVENT_READ, w)
            self._try(w)  # what it has sent already (or the TLS handshake's first step)
            while self._per_address.get(address, 0) > self._places_per_address:
                log.debug("%s has too many connections waiting: dropping its oldest", address)
                self._evict(self._oldest(address))
            while len(self._waiting) > LOBBY_CAPACITY:
                busiest = max(self._per_address, key=lambda a: self._per_address[a])
                log.debug("lobby full: dropping the oldest waiting connection of %s", busiest)
                self._evict(self._oldest(busiest))

    def _try(self, w: _Waiting) -> None:
        try:
            self._service(w)
        except Exception:  # the loop's catch-all: one connection, never the lobby
            log.exception("DICOM connection from %s failed", w.address)
            self._close(w)

    def _evict(self, w: _Waiting) -> None:
        """Drop ``w`` for room, after reading what it has sent: a request complete by now
        is still answered."""
        if not w.closing:
            self._try(w)
        if self._waiting.get(w.sock.fileno()) is w:  # not admitted, refused or gone
            self._close(w)

    def _expire(self, now: float) -> None:
        for w in [w for w in self._waiting.values() if w.deadline <= now]:
            if not w.closing:
                log.debug(
                    "closed a DICOM connection from %s: no complete association request "
                    "within %.1f s (dicom_handshake_timeout_s)",
                    w.address,
                    self.settings.dicom_handshake_timeout_s,
                )
            self._close(w)

    def _oldest(self, address: str) -> _Waiting:
        return min(
            (w for w in self._waiting.values() if w.address == address), key=lambda w: w.since
        )

    def _hold(self, w: _Waiting) -> None:
        self._waiting[w.sock.fileno()] = w
        self._per_address[w.address] = self._per_address.get(w.address, 0) + 1

    def _release(self, w: _Waiting) -> bool:
        """Take ``w`` out of the waiting connections (False: it was not there)."""
        if self._waiting.pop(w.sock.fileno(), None) is None:
            return False
        left = self._per_address[w.address] - 1
        if left:
            self._per_address[w.address] = left
        else:
            del self._per_address[w.address]
        return True

    def _close(self, w: _Waiting) -> None:
        if self._release(w):
            try:
                self._sel.unregister(w.sock)
            except (KeyError, ValueError):
                pass
        try:
            w.sock.close()
        except OSError:
            pass

    def _service(self, w: _Waiting) -> None:
        if w.closing:
            self._drain(w)
            return
        if not w.tls_done and not self._handshake(w):
            return
        while True:
            try:
                chunk = w.sock.recv(65536)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                break
            except OSError:
                self._close(w)
                return
            if not chunk:  # the peer went away before asking anything
                self._close(w)
                return
            w.buf += chunk
            # TLS may hold decrypted bytes the selector does not see: take them now
            if not (isinstance(w.sock, ssl.SSLSocket) and w.sock.pending()):
                break
        if len(w.buf) < 6:
            return
        pdu_type, _, length = struct.unpack(">BBL", w.buf[:6])
        try:
            if pdu_type != 0x01:
                raise _Refuse(
                    ProtocolError(
                        f"a connection from {w.address} began with PDU type 0x{pdu_type:02X}, "
                        "not an A-ASSOCIATE-RQ"
                    ),
                    a_abort(0x02, 0x02 if 0x02 <= pdu_type <= 0x07 else 0x01),
                )
            if length > MAX_ASSOCIATE_RQ:
                raise _Refuse(
                    PduTooLarge(
                        f"an A-ASSOCIATE-RQ from {w.address} declared {length} bytes, more "
                        f"than the {MAX_ASSOCIATE_RQ} a request may have"
                    ),
                    a_abort(0x02, 0x06),
                )
            if len(w.buf) < 6 + length:
                return  # wait for the rest (until the handshake deadline)
            self._sel.unregister(w.sock)
            self._release(w)
            self.server.admit(w.sock, w.address, bytes(w.buf))
        except _Refuse as refusal:
            self.server.on_refused(
                refusal.error, refusal.organisation_id, refusal.calling, w.address
            )
            self._answer(w, refusal.answer, linger=refusal.answer[0] == 0x03)

    def _handshake(self, w: _Waiting) -> bool:
        assert isinstance(w.sock, ssl.SSLSocket)
        try:
            w.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._sel.modify(w.sock, selectors.EVENT_READ, w)
            return False
        except ssl.SSLWantWriteError:
            self._sel.modify(w.sock, selectors.EVENT_WRITE, w)
            return False
        except (ssl.SSLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or str(exc)
            self.server.on_refused(
                TlsRefused(f"TLS handshake with {w.address} failed: {reason}"), None, "", w.address
            )
            self._close(w)
            return False
        w.tls_done = True
        self._sel.modify(w.sock, selectors.EVENT_READ, w)
        return True

    def _answer(self, w: _Waiting, answer: bytes, *, linger: bool) -> None:
        """Send a refusal. After an A-ASSOCIATE-RJ stop writing and give the peer LINGER_S
        to read it and close; after an A-ABORT close at once (whatever it still sends is
        never read)."""
        try:
            w.sock.send(answer)
        except OSError:
            pass
        if not linger:
            self._close(w)
            return
        if w.sock.fileno() not in self._waiting:  # taken out of the lobby for admission
            self._hold(w)
            self._sel.register(w.sock, selectors.EVENT_READ, w)
        try:
            if not isinstance(w.sock, ssl.SSLSocket):
                w.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(w)
            return
        w.closing = True
        w.buf = bytearray()
        w.deadline = time.monotonic() + LINGER_S

    def _drain(self, w: _Waiting) -> None:
        try:
            for _ in range(16):  # bounded: a peer that keeps sending is closed at LINGER_S
                if not w.sock.recv(65536):
                    break
            else:
                return
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            return
        except OSError:
            pass
        self._close(w)


def check_pynetdicom_version() -> None:
    """Log loudly when pynetdicom is not a version GuardedSocket was tested with."""
    if not pynetdicom.__version__.startswith(PYNETDICOM_TESTED):
        log.error(
            "pynetdicom %s is not one the DICOM listener's PDU cap was tested with (%s): "
            "check radsight.ingest.transport against its dul.py",
            pynetdicom.__version__,
            ", ".join(PYNETDICOM_TESTED),
        )
