"""Test-only network stand-ins for the agent's Kubernetes I/O tests.

- :func:`make_pki`: a CA with a server certificate for 127.0.0.1 and a client certificate,
  generated with ``cryptography``.
- :class:`CheckpointServer`: a tiny HTTPS API server holding one Checkpoint that answers the GET
  and status PATCH the agent does, only to requests that authenticate (a client certificate the
  CA signed, or a bearer token it accepts), and records who asked.
- :class:`TcpRelay`: a TCP relay in front of the sandbox on a fixed port that can be cut and
  restored, so the agent sees its API server go away and come back with its state intact.
- :class:`ForwardProxy`: an HTTP proxy that records what it forwarded.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import http.server
import ipaddress
import json
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CHECKPOINT_PATH = "/apis/cairn.dev/v1alpha1/namespaces/default/checkpoints/tls"


@dataclasses.dataclass(frozen=True)
class Pki:
    """PEM files of a test CA, a server certificate for 127.0.0.1, and a client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, signer = issuer if issuer else (name, key)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
        builder = builder.add_extension(usage, critical=True)
    else:
        purpose = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
    if server:
        names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(signer, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path.with_suffix(".key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


def make_pki(directory: Path) -> Pki:
    """Generate the CA, server and client (CN ``cairn-agent``) certificates under ``directory``."""
    ca_key, server_key, client_key = _key(), _key(), _key()
    ca = _cert("cairn-test-ca", ca_key, None, ca=True)
    signer = (ca.subject, ca_key)
    _write(directory / "ca.crt", ca, None)
    _write(
        directory / "server.crt", _cert("127.0.0.1", server_key, signer, server=True), server_key
    )
    _write(directory / "client.crt", _cert("cairn-agent", client_key, signer), client_key)
    return Pki(
        ca=directory / "ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
    )


@dataclasses.dataclass(frozen=True)
class Seen:
    """One request the server answered (or refused)."""

    method: str
    path: str
    authorization: str
    content_type: str
    client_cn: str
    status: int
    at: float
    """``time.monotonic()`` when it was answered."""


class CheckpointServer:
    """HTTPS on 127.0.0.1 serving the Checkpoint ``default/tls`` to authenticated clients.

    ``require_client_cert``: the TLS handshake itself demands a certificate the CA signed.
    ``accept_token``: a predicate over the bearer token (the scheme is case-insensitive, as on
    the API server); requests failing it get 401. ``failures``: answers (status, headers) given
    to the next requests, in order, before serving normally (throttling, conflicts, outages).
    """

    def __init__(
        self,
        pki: Pki,
        *,
        require_client_cert: bool = False,
        accept_token: Callable[[str], bool] | None = None,
        failures: tuple[tuple[int, dict[str, str]], ...] = (),
    ) -> None:
        self.seen: list[Seen] = []
        self._failures = deque(failures)
        self.status: dict[str, Any] = {}
        self._accept_token = accept_token
        self._lock = threading.Lock()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(pki.server_cert, pki.server_key)
        context.load_verify_locations(pki.ca)
        context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def tokens(self) -> list[str]:
        """The bearer tokens of accepted requests, in order."""
        with self._lock:
            return [s.authorization.split(" ", 1)[-1] for s in self.seen if s.status == 200]

    def _object(self) -> dict[str, Any]:
        return {
            "apiVersion": "cairn.dev/v1alpha1",
            "kind": "Checkpoint",
            "metadata": {"name": "tls", "namespace": "default", "resourceVersion": "1"},
            "spec": {},
            "status": dict(self.status),
        }

    def _answer(
        self, method: str, path: str, body: Any, auth: str
    ) -> tuple[int, Any, dict[str, str]]:
        if self._failures:
            status, headers = self._failures.popleft()
            return status, {"kind": "Status", "code": status}, headers
        if self._accept_token is not None:
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or not self._accept_token(token):
                return 401, {"kind": "Status", "code": 401, "reason": "Unauthorized"}, {}
        if method == "GET" and path == CHECKPOINT_PATH:
            return 200, self._object(), {}
        if method == "PATCH" and path == CHECKPOINT_PATH + "/status":
            self.status.update((body or {}).get("status") or {})
            self.status = {k: v for k, v in self.status.items() if v is not None}
            return 200, self._object(), {}
        return 404, {"kind": "Status", "code": 404, "reason": "NotFound"}, {}

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet test output
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                auth = self.headers.get("Authorization") or ""
                path = self.path.split("?", 1)[0]
                with server._lock:
                    status, answer, headers = server._answer(self.command, path, body, auth)
                    server.seen.append(
                        Seen(
                            method=self.command,
                            path=path,
                            authorization=auth,
                            content_type=self.headers.get("Content-Type") or "",
                            client_cn=_peer_cn(self.connection),
                            status=status,
                            at=time.monotonic(),
                        )
                    )
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PATCH = _serve

        return Handler


def _peer_cn(conn: Any) -> str:
    cert = conn.getpeercert() if isinstance(conn, ssl.SSLSocket) else None
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""


class TcpRelay:
    """Forwards 127.0.0.1:``port`` to ``target_port``; :meth:`cut` drops the listener and every
    open connection (the API server is gone), :meth:`restore` listens on the same port again."""

    def __init__(self, target_port: int) -> None:
        self._target = target_port
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.port = 0
        self.restore()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, []
        for sock in [listener, *conns]:
            if sock is None:
                continue
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._target))
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class ForwardProxy:
    """A plain-HTTP forward proxy on 127.0.0.1 (absolute-form requests, as urllib3's
    ``ProxyManager`` sends them to an http:// server) that records the URLs it forwarded."""

    def __init__(self) -> None:
        self.forwarded: list[str] = []
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        proxy = self
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() != "proxy-connection"}
                request = urllib.request.Request(self.path, body, headers, method=self.command)
                proxy.forwarded.append(f"{self.command} {self.path}")
                try:
                    with direct.open(request, timeout=30) as answer:
                        status, data = answer.status, answer.read()
                except urllib.error.HTTPError as exc:
                    status, data = exc.code, exc.read()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PATCH = _forward

        return Handler
