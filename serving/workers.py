"""Gunicorn worker classes: problem+json for Gunicorn's own errors, slow-client deadlines, drain.

``DLQR_WORKER_CLASS`` picks one (``serving/gunicorn.conf.py`` maps the name):

- ``gevent`` (default, :class:`GeventWorker`): one event loop per process, so a
  slow client holds a greenlet, never the worker. On top of Gunicorn's gevent
  worker it bounds the *first* request head by ``DLQR_READ_TIMEOUT`` seconds in
  all (Gunicorn only bounds it by the keep-alive timeout, and not at all with
  ``DLQR_KEEPALIVE=0``) and answers 408 when it expires, bounds every recv and
  send by the same timeout, and on SIGTERM serves the connections already
  waiting in the accept queue before the listener closes (Gunicorn closes it
  at once, which resets them). On a full stop the arbiter first makes the
  listener ignore new handshakes (:func:`refuse_new_connections_on_stop`), so
  no connection completes after that drain. The README's "Hardening" section has the
  measurements that chose it over sync and gthread.
- ``gthread`` / ``sync``: Gunicorn's own, kept for comparison; slow clients tie
  them up (that is what the measurements show).

All three answer what Gunicorn refuses itself (bad request line or header,
414, 431, a worker timeout) as problem+json through the app (see
:data:`serving.PROTOCOL_ERROR_KEY`), so it is counted in
``dlqr_http_requests_total`` and logged with a request id, instead of Gunicorn's
text/html. SIGTERM also turns ``/readyz`` to 503 at once (:func:`start_draining`),
and a worker timeout (SIGABRT) raises :class:`serving.WorkerAborted` in
the request that hogs the worker, which is answered 504 before the worker exits.

The gevent worker patches everything but threads: until models load
synchronously before a worker accepts connections, the registry loads them in
a background thread, and a real thread keeps that CPU-bound load from
freezing the event loop (and the heartbeat) for its whole duration.
"""

from __future__ import annotations

import contextvars
import ctypes
import errno
import io
import socket
import ssl
import struct
import sys
import time
from functools import partial
from http import HTTPStatus
from typing import Any

from gunicorn import http, util
from gunicorn.http import errors as herr
from gunicorn.http import wsgi as gwsgi
from gunicorn.http.wsgi import base_environ, default_environ
from gunicorn.workers.gthread import ThreadWorker as _ThreadWorker
from gunicorn.workers.sync import SyncWorker as _SyncWorker

from serving.settings import Settings

# What this module shares with serving.guard lives here: the Gunicorn master imports this module
# (to load the worker class) and must stay light, so the app side (Flask, NumPy) is imported
# only in workers, lazily.

#: Set on a synthetic request that carries an error found below the app: (status, slug, detail).
PROTOCOL_ERROR_KEY = "dlqr.protocol_error"
#: Set on every request: a callable that makes the server close the connection after the answer.
CLOSE_KEY = "dlqr.close_connection"
PROBLEM_CONTENT_TYPE = "application/problem+json"


def status_line(status: int) -> str:
    """``"404 Not Found"``: the reason phrase from :class:`http.HTTPStatus`."""
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Error"


_draining = False


def start_draining() -> None:
    """Called on SIGTERM (from the signal handler: only sets a flag)."""
    global _draining
    _draining = True


def draining() -> bool:
    return _draining


# ------------------------------------------------------------------ shutdown without resets

# Linux's SO_ATTACH_FILTER (socket(7)); Python's socket module does not name it.
_SO_ATTACH_FILTER = 26
# A classic BPF program (the kernel's Documentation/networking/filter.rst), hand-written because
# no maintained Python library attaches one. On a TCP socket it sees the TCP header at offset 0:
# it drops a segment with SYN set and ACK clear (a new handshake) and passes the rest, so
# handshakes already under way complete and join the accept queue.
_DROP_NEW_HANDSHAKES = (
    (0x30, 0, 0, 13),  # ldb [13]           the TCP flags byte
    (0x54, 0, 0, 0x12),  # and #0x12        SYN | ACK
    (0x15, 0, 1, 0x02),  # jeq #0x02        SYN alone?
    (0x06, 0, 0, 0),  # ret #0              yes: drop it
    (0x06, 0, 0, 0xFFFFFFFF),  # ret #-1    no: pass the whole segment
)


def refuse_new_handshakes(listener: Any) -> bool:
    """Make a TCP listener ignore new connection attempts; what is queued stays acceptable.

    The kernel resets every connection still in the accept queue when the
    last copy of a listener closes, and a client whose handshake completed
    there has already sent its request: it sees a reset, not a refusal. With
    new handshakes dropped first, the workers' last drain of the queue is
    final; a client that tries meanwhile resends its SYN a second later and
    is refused (or, where the listener is still open, waits for the next
    resend). Returns False (and changes nothing) off Linux or for a
    non-TCP socket.
    """
    if not sys.platform.startswith("linux") or listener.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *op) for op in _DROP_NEW_HANDSHAKES))
    # struct sock_fprog {unsigned short len; struct sock_filter *filter;}; the kernel copies the
    # program during the call, so `code` only has to outlive it.
    prog = struct.pack("HP", len(_DROP_NEW_HANDSHAKES), ctypes.addressof(code))
    listener.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, prog)
    return True


def refuse_new_connections_on_stop(arbiter: Any) -> None:
    """On stop (SIGTERM, SIGINT, SIGQUIT), the arbiter refuses new handshakes before closing.

    Gunicorn closes the arbiter's listeners and then signals the workers,
    which take what waits in the accept queue (GeventWorker.run) and close
    theirs; a handshake that completed between a worker's last look and the
    last close was reset (2 of 40 runs of the chaos SIGTERM scenario lost
    one request that way). Only where this arbiter owns its listeners alone,
    Gunicorn's own condition for unlinking a Unix socket: an old master
    during a USR2 upgrade or a socket from systemd is shared with a server
    that keeps listening.
    """
    stop = arbiter.stop

    def stop_refusing_new_connections(graceful: bool = True) -> None:
        if (
            arbiter.reexec_pid == arbiter.master_pid == 0
            and not arbiter.systemd
            and not arbiter.cfg.reuse_port
        ):
            for listener in arbiter.LISTENERS:
                try:
                    refuse_new_handshakes(listener)
                except OSError as exc:  # a kernel without socket filters: stop as Gunicorn does
                    arbiter.log.warning("could not stop new handshakes before closing %s: %s", listener, exc)
        stop(graceful)

    arbiter.stop = stop_refusing_new_connections


class WorkerAborted(BaseException):  # noqa: N818 - a BaseException like SystemExit, so Flask lets it through
    """Raised by the worker's SIGABRT handler (Gunicorn's worker timeout) in the request that hogs it."""


class HeadTimeout(Exception):
    """The request head did not arrive within DLQR_READ_TIMEOUT."""


#: The request being served by this greenlet/thread, for the close-connection callback.
_current_request: contextvars.ContextVar[Any] = contextvars.ContextVar("dlqr_gunicorn_request", default=None)


def pre_request(worker: Any, req: Any) -> None:
    """Gunicorn ``pre_request`` hook (set in gunicorn.conf.py): remember the request being served."""
    _current_request.set(req)


def _close_current() -> None:
    req = _current_request.get()
    if req is not None:
        req.must_close = True  # gunicorn.http.message.Message.should_close honours it
        req.dlqr_linger = True  # the body may be unread: close gently (lingering_close)


#: Lingering close: at most this long, and this many bytes, read and dropped after the answer.
LINGER_SECONDS = 1.0
LINGER_BYTES = 4 * 1024 * 1024


def lingering_close(sock: Any, seconds: float = LINGER_SECONDS, limit: int = LINGER_BYTES) -> None:
    """Half-close, then read and drop what the client still sends, for a short while.

    A refusal that leaves the body unread (413, 400 on bad framing) closes the connection.
    Closing a socket with unread data makes the kernel send a reset, which can reach the
    client before it has read the answer (or while it is still sending), so it sees
    "connection reset" instead of the 413. Reading on after the answer is what nginx
    (``lingering_close``) and Apache do, and what RFC 9112 section 9.6 recommends; Gunicorn
    has no option for it, hence this function. Bounded in time and bytes.
    """
    try:
        sock.shutdown(socket.SHUT_WR)  # the answer is sent; the client sees our FIN
        end = time.monotonic() + seconds
        got = 0
        while got < limit:
            left = end - time.monotonic()
            if left <= 0:
                return
            sock.settimeout(left)
            data = sock.recv(64 * 1024)
            if not data:
                return
            got += len(data)
    except OSError:  # reset, timeout: the client is gone or still sending; close anyway
        return


def classify(exc: BaseException) -> tuple[int, str, str]:
    """(status, problem slug, detail) for an exception Gunicorn hands to ``handle_error``."""
    if isinstance(exc, (HeadTimeout, TimeoutError)):
        return 408, "request-timeout", "the request head did not arrive in time (DLQR_READ_TIMEOUT)"
    if isinstance(exc, (WorkerAborted, SystemExit)):
        return 504, "deadline-exceeded", "the worker timed out (DLQR_TIMEOUT) and is being replaced"
    if isinstance(exc, herr.LimitRequestLine):
        return 414, "uri-too-long", f"request line too long: {exc}"
    if isinstance(exc, herr.LimitRequestHeaders):
        return 431, "headers-too-large", f"request header fields too large: {exc}"
    if isinstance(exc, herr.ExpectationFailed):
        return 417, "http-error", str(exc)
    if isinstance(exc, herr.ForbiddenProxyRequest):
        return 403, "http-error", "request forbidden"
    if isinstance(exc, herr.UnsupportedTransferCoding):
        # RFC 9112 says 501 SHOULD; a client's bad framing must not trip the 5xx alert, so 400.
        return 400, "malformed-request", f"unsupported transfer coding: {exc}"
    if isinstance(
        exc, (herr.InvalidResponseHeader, herr.InvalidResponseHeaderName, herr.ConfigurationProblem)
    ):
        return 500, "internal-error", "unexpected error"
    if isinstance(exc, (herr.ParseException, herr.NoMoreData, ssl.SSLError)):
        return 400, "malformed-request", f"{type(exc).__name__}: {exc}"[:300]
    return 500, "internal-error", "unexpected error"


class OneWriteResponse(gwsgi.Response):
    """Gunicorn's Response, with the status line and headers sent with the first body bytes.

    Gunicorn writes the head and each body item in separate ``sendall`` calls: for a small
    JSON answer that is two syscalls and two TCP segments where one does (17 % of a worker's
    samples under load went to writing answers). The head is kept until the first body bytes,
    or until close for an answer without a body; the bytes on the wire are the same.
    """

    _head = b""

    def send_headers(self) -> None:
        if self.headers_sent:
            return
        tosend = self.default_headers()
        tosend.extend(["%s: %s\r\n" % (k, v) for k, v in self.headers])  # noqa: UP031 - Gunicorn's own
        self._head = util.to_bytestring("%s\r\n" % "".join(tosend), "latin-1")  # noqa: UP031
        self.headers_sent = True

    def _flush_head(self) -> None:
        if self._head:
            head, self._head = self._head, b""
            util.write(self.sock, head)

    def _emit_body(self, data: bytes) -> None:
        if self._head and not self.chunked:
            head, self._head = self._head, b""
            util.write(self.sock, head + data)
            return
        self._flush_head()
        super()._emit_body(data)

    def sendfile(self, respiter: Any) -> Any:
        self.send_headers()
        self._flush_head()
        return super().sendfile(respiter)

    def close(self) -> None:
        self.send_headers()
        self._flush_head()
        super().close()


class ProblemWorkerMixin:
    """What every worker class here adds to Gunicorn's (see the module doc)."""

    cfg: Any
    log: Any
    wsgi: Any
    alive: bool

    def init_process(self) -> None:
        settings = Settings.from_env()
        self.read_timeout = float(settings.read_timeout)
        # In this worker process only: every answer Gunicorn builds (gunicorn.http.wsgi.create looks
        # the class up in its module) leaves in one write; Gunicorn has no setting to pick the class.
        gwsgi.Response = OneWriteResponse
        super().init_process()  # type: ignore[misc]

    def load_wsgi(self) -> None:
        super().load_wsgi()  # type: ignore[misc]
        app = self.flask_app = self.wsgi

        def with_close_hook(environ: dict, start_response: Any) -> Any:
            environ[CLOSE_KEY] = _close_current
            return app(environ, start_response)

        self.wsgi = with_close_hook

    def models_loading(self) -> bool:
        """True while this worker's registry still loads models in the background.

        Until models load synchronously before a worker accepts connections, a
        worker that replaces another (kill -9, HUP) would otherwise take
        requests it can only answer 503 not-ready. Always False once loading is
        synchronous (or for an app without the registry).
        """
        service = getattr(getattr(self, "flask_app", None), "extensions", {}).get("dlqr")
        states = getattr(getattr(service, "registry", None), "states", {})
        return any(getattr(st, "status", None) in ("pending", "loading") for st in states.values())

    # ------------------------------------------------------------------ signals

    def handle_exit(self, sig: int, frame: Any) -> None:
        start_draining()
        super().handle_exit(sig, frame)  # type: ignore[misc]

    def handle_abort(self, sig: int, frame: Any) -> None:
        """Worker timeout: end the hogging request with 504 (see guard), then exit."""
        self.alive = False
        self.cfg.worker_abort(self)
        raise WorkerAborted()

    # ------------------------------------------------------------------- errors

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        status, slug, detail = classify(exc)
        if status >= 500 and not isinstance(exc, (WorkerAborted, SystemExit)):
            self.log.exception("Error handling request")  # the traceback goes to the log only
        else:
            self.log.debug("refused request from %s: %s %s", (addr or ("",))[0], status, detail)
        try:
            data = self._render(req, client, addr, status, slug, detail)
        except Exception:  # the app itself failed: still answer problem+json, uncounted
            self.log.exception("could not render the error through the app")
            from serving.errors import problem_json

            data = self._raw_response(
                status, [("Content-Type", PROBLEM_CONTENT_TYPE)], problem_json(status, slug, detail)
            )
        try:
            util.write(client, data)
        except OSError:
            self.log.debug("could not send the error answer")

    def _render(self, req: Any, client: Any, addr: Any, status: int, slug: str, detail: str) -> bytes:
        """Answer through the WSGI app (guard -> counted, logged) and return the raw response bytes."""
        if req is not None and getattr(req, "method", None):
            environ = default_environ(req, client, self.cfg)
            environ["PATH_INFO"] = req.path or ""
        else:
            environ = base_environ(self.cfg)
            environ.update(REQUEST_METHOD="", PATH_INFO="", QUERY_STRING="", SERVER_PROTOCOL="HTTP/1.1")
        environ["wsgi.input"] = io.BytesIO()
        environ["REMOTE_ADDR"] = str((addr or ("",))[0])
        environ[PROTOCOL_ERROR_KEY] = (status, slug, detail)
        got: list[Any] = []

        def start_response(st: str, headers: list, exc_info: Any = None) -> Any:
            got[:] = [st, headers]
            return None

        body = b"".join(self.wsgi(environ, start_response))
        return self._raw_response(int(got[0][:3]), got[1], body)

    @staticmethod
    def _raw_response(status: int, headers: list, body: bytes) -> bytes:
        lines = [f"HTTP/1.1 {status_line(status)}", "Connection: close", f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in headers if k.lower() not in ("content-length", "connection")]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class SyncWorker(ProblemWorkerMixin, _SyncWorker):
    """Gunicorn's sync worker with problem+json errors and drain-aware /readyz."""


class ThreadWorker(ProblemWorkerMixin, _ThreadWorker):
    """Gunicorn's gthread worker with problem+json errors and drain-aware /readyz."""


#: Seconds between two balancer checks of a gevent worker (only with serving/balance.py on).
BALANCE_TICK = 0.005


def _gevent_worker_class() -> type:
    import gevent
    from gevent import monkey
    from gevent import socket as gsocket
    from gevent.pool import Pool
    from gevent.server import StreamServer
    from gunicorn.sock import ssl_context
    from gunicorn.workers.ggevent import GeventWorker as _GeventWorker

    class _Server(StreamServer):
        """StreamServer that counts connections at accept for the balancer (serving/balance.py)."""

        worker: Any = None
        paused = False

        def do_handle(self, *args: Any) -> None:
            balancer = self.worker.balancer
            if balancer is not None:
                balancer.opened()  # counted at accept, before the next accept can happen
            super().do_handle(*args)

        def _start_accepting_if_started(self, _event: Any = None) -> None:
            # gevent resumes accepting when a pool slot frees; not while the balancer pauses us.
            if not self.paused:
                super()._start_accepting_if_started(_event)

    def balancer_for(servers: list) -> Any:
        from serving import balance

        if balance.TABLE is None:
            return None

        def pause() -> None:
            for server in servers:
                server.paused = True
                server.stop_accepting()

        def resume() -> None:
            for server in servers:
                server.paused = False
                server.start_accepting()

        return balance.Balancer(balance.TABLE, pause, resume)

    class GeventWorker(ProblemWorkerMixin, _GeventWorker):
        """Gunicorn's gevent worker with a head deadline, 408, socket timeouts and a backlog drain."""

        def patch(self) -> None:
            # Sockets, select, time and ssl only: see the module doc for threads; os, subprocess and
            # signal stay real so that the loader thread's subprocess calls (TensorFlow) do not need
            # gevent's child watchers, which only the main thread's loop has.
            monkey.patch_all(thread=False, os=False, subprocess=False, signal=False)
            self.sockets = [
                gsocket.socket(s.FAMILY, gsocket.SOCK_STREAM, fileno=s.sock.detach()) for s in self.sockets
            ]

        balancer: Any = None

        def handle_abort(self, sig: int, frame: Any) -> None:
            hub = gevent.get_hub()
            if gevent.getcurrent() in (hub, hub.parent):  # not inside a request: exit as Gunicorn does
                _GeventWorker.handle_abort(self, sig, frame)
            super().handle_abort(sig, frame)

        # Gunicorn's AsyncWorker.handle, HTTP/1.x only (this service does not enable HTTP/2),
        # with two changes: the first head has a deadline of its own and gets 408, and socket
        # timeouts end the connection quietly instead of logging a traceback.
        def handle(self, listener: Any, client: Any, addr: Any) -> None:
            client.setblocking(1)
            client.settimeout(self.read_timeout)  # every recv/send: a stalled peer is dropped
            req = None
            try:
                parser = http.get_parser(self.cfg, client, addr)
                # Known before the listener is closed on SIGTERM (connections drained from the
                # accept queue are served after that).
                listener_name = self.listener_names.get(listener) or listener.getsockname()
                served = 0
                while True:
                    req = None
                    # The first head must arrive within DLQR_READ_TIMEOUT; later ones (keep-alive)
                    # within the keep-alive timeout, after which the idle connection just closes.
                    limit = self.read_timeout if served == 0 else max(self.cfg.keepalive, 0.001)
                    timer = gevent.Timeout(limit, HeadTimeout)
                    timer.start()
                    try:
                        req = next(parser)
                    except HeadTimeout:
                        if served == 0:
                            self.handle_error(None, client, addr, HeadTimeout())
                        return
                    finally:
                        timer.close()
                    if not req:
                        return
                    served += 1
                    # Raises StopIteration when the answer closes the connection.
                    self.handle_request(listener_name, req, client, addr)
            except (StopIteration, herr.NoMoreData):
                pass  # the response said Connection: close, or the client went away
            except (ConnectionError, TimeoutError) as e:
                self.log.debug("connection ended: %s", e)
            except OSError as e:
                if e.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                    self.log.exception("Socket error processing request.")
            except BaseException as e:  # parse errors, and a WorkerAborted outside the app
                self.handle_error(req, client, addr, e)
            finally:
                if req is not None and getattr(req, "dlqr_linger", False):
                    lingering_close(client)
                util.close(client)
                if self.balancer is not None:
                    self.balancer.closed()

        def run(self) -> None:
            """Gunicorn's GeventWorker.run, plus the accept-queue drain on SIGTERM."""
            ssl_args = {"ssl_context": ssl_context(self.cfg)} if self.cfg.is_ssl else {}
            if self.age > self.cfg.workers:
                # A replacement worker (after kill -9, a crash or HUP; Gunicorn numbers workers
                # 1..N at start): the other workers keep serving while this one loads its
                # models, heartbeat going; at start all load together and /readyz says so.
                while self.alive and self.models_loading():
                    self.notify()
                    gevent.sleep(0.1)
            servers = []
            self.listener_names = {s: s.getsockname() for s in self.sockets}
            for s in self.sockets:
                s.setblocking(1)
                server = _Server(
                    s, handle=partial(self.handle, s), spawn=Pool(self.worker_connections), **ssl_args
                )
                server.worker = self
                if self.cfg.workers > 1:
                    server.max_accept = 1
                servers.append(server)
            self.balancer = balancer_for(servers)
            for server in servers:
                server.start()

            beat = time.monotonic()
            while self.alive:
                if self.balancer is None:
                    self.notify()
                    gevent.sleep(0.25)
                    continue
                # The balancer's heartbeat and re-check (another worker's count may have changed).
                self.balancer.check()
                if time.monotonic() - beat >= 0.25:
                    self.notify()
                    beat = time.monotonic()
                gevent.sleep(BALANCE_TICK)
            if self.balancer is not None:
                self.balancer.close()  # the others stop waiting on this worker

            # Connections the kernel has already accepted for us wait in the listen queue:
            # closing the listener would reset them, so take them first (then close at once).
            # On a full stop the arbiter has made the listener ignore new handshakes first
            # (refuse_new_connections_on_stop), so once every worker has looked, none is left.
            drained = 0
            for server in servers:
                server.stop_accepting()
                while True:
                    args = server.do_read()
                    if not args:
                        break
                    server.do_handle(*args)
                    drained += 1
                server.close()
            if drained:
                self.log.info("draining: took %d queued connections before closing the listener", drained)

            deadline = time.monotonic() + self.cfg.graceful_timeout
            while time.monotonic() < deadline:
                if all(s.pool.free_count() == s.pool.size for s in servers):
                    return
                self.notify()
                gevent.sleep(0.1)
            self.log.warning("Worker graceful timeout (pid:%s)", self.pid)
            for server in servers:
                server.stop(timeout=1)

    return GeventWorker


def __getattr__(name: str) -> Any:
    # Lazy, so that importing this module (sync, gthread) never needs gevent.
    if name == "GeventWorker":
        cls = _gevent_worker_class()
        globals()[name] = cls
        return cls
    raise AttributeError(name)
