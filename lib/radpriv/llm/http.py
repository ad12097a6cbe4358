"""A small JSON-over-HTTP client for model servers (used by :class:`~radpriv.llm.backends.OpenAIBackend`).

Privacy rules, enforced here for every request:

* **Every URL passes** :func:`radpriv.netguard.check_endpoint` first (loopback, or a host opted
  in by name), and a URL carrying credentials (``https://user:pw@host/v1``) is refused
  (:func:`refuse_url_credentials`): credentials in URLs end up in logs, caches and registries; pass
  the key through ``--api-key-env VAR``.
* **The environment is never read**: ``trust_env=False``, so ``HTTP_PROXY`` / ``HTTPS_PROXY`` /
  ``ALL_PROXY`` / ``NO_PROXY`` (any case), ``.netrc`` and ``SSL_CERT_*`` have no effect. A proxy is
  used only when the caller passes ``proxy=URL``, and that URL passes the same policy.
* **Redirects are never followed**: a 3xx becomes :class:`TransportError` ``redirect_refused``
  naming the ``Location`` (a redirect could send a report to another host).

Faults become one-line exceptions naming the URL (see :mod:`radpriv.llm.errors`):
:class:`BackendTimeout` (``reason == "timeout"``) when the deadline passes, else
:class:`TransportError` with ``reason`` ``connection_error`` / ``http_error`` / ``bad_reply`` /
``redirect_refused``. A :class:`~radpriv.netguard.NetworkPolicyError` raised by an active
:func:`~radpriv.netguard.guard` is re-raised as such, never disguised as a connection error.

Deadlines are absolute (``time.monotonic()``) and bound the *whole* exchange: every socket
operation (connect, each write, each read, headers included) gets at most the time left, and the
body is read in chunks with the deadline checked between them, so a server that stalls or trickles
bytes mid-response cannot hold a request past its deadline.

One :class:`JSONClient` keeps one ``httpx.Client`` (connection reuse); it is safe to share between
threads.
"""

from __future__ import annotations

import errno
import json
import threading
import time
from typing import Any, Iterable
from urllib.parse import urlsplit, urlunsplit

import httpcore
import httpx

from radpriv.llm.errors import BackendTimeout, TransportError
from radpriv.netguard import check_endpoint, policy_error_in

#: largest reply body read (bytes, after content decoding); a larger one is a bad reply
MAX_REPLY_BYTES = 32 * 1024 * 1024
#: of an HTTP error reply, this much of the body is read for the message
_MAX_ERROR_BYTES = 64 * 1024


# --------------------------------------------------------------------------------------------- URLs


def redact_url(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``***@`` (for messages)."""
    parts = urlsplit(str(url))
    if "@" not in parts.netloc:
        return str(url)
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def refuse_url_credentials(url: str, what: str = "endpoint") -> None:
    """Raise ``ValueError`` when ``url`` carries credentials (``https://user:pw@host/v1``).

    The message never repeats the credentials.
    """
    parts = urlsplit(str(url))
    if "@" in parts.netloc or parts.username is not None or parts.password is not None:
        raise ValueError(
            f"refusing {what} {redact_url(url)}: it has credentials in the URL (user:password@), which end up in "
            "logs, caches and model registries. Remove them and pass the API key through an environment variable: "
            "`--api-key-env VAR` (CLI) / api_key_env='VAR' (registry), with VAR holding the key.")


def _one_line(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ------------------------------------------------------------------------------- deadline-aware sockets

_local = threading.local()  # .deadline: the absolute deadline of the request running in this thread


def _clamp(timeout: float | None, exc_cls: type[Exception]) -> float | None:
    deadline = getattr(_local, "deadline", None)
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise exc_cls("the request deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A network stream whose every operation waits at most until the current request's deadline."""

    def __init__(self, stream: httpcore.NetworkStream):
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _clamp(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _clamp(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context, server_hostname: str | None = None, timeout: float | None = None):
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname,
                                                      _clamp(timeout, httpcore.ConnectTimeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, backend: httpcore.NetworkBackend):
        self._backend = backend

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        return _DeadlineStream(self._backend.connect_tcp(host, port, _clamp(timeout, httpcore.ConnectTimeout),
                                                         local_address=local_address, socket_options=socket_options))

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        return _DeadlineStream(self._backend.connect_unix_socket(path, _clamp(timeout, httpcore.ConnectTimeout),
                                                                 socket_options=socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def _transport(proxy: str | None) -> httpx.HTTPTransport:
    transport = httpx.HTTPTransport(proxy=proxy, trust_env=False, retries=0)
    pool = getattr(transport, "_pool", None)
    if pool is None or not hasattr(pool, "_network_backend"):  # pragma: no cover - guards a pinned httpx/httpcore
        raise RuntimeError("this httpx/httpcore version has no pluggable network backend; radpriv pins httpx==0.28.1")
    pool._network_backend = _DeadlineBackend(pool._network_backend)
    return transport


# --------------------------------------------------------------------------------------------- faults


_policy_error = policy_error_in


def _os_errno(exc: BaseException) -> int | None:
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError) and exc.errno is not None:
            return exc.errno
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


_ERRNO_TEXT = {
    errno.ECONNREFUSED: "connection refused: nothing is listening there (is the server running, on this port?)",
    errno.ECONNRESET: "connection reset by the server",
    errno.EPIPE: "connection closed by the server while sending the request",
    errno.ECONNABORTED: "connection aborted",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
}


def _transport_fault(exc: httpx.HTTPError, where: str, url: str, budget: float) -> Exception:
    """The radpriv exception for an httpx fault (``where`` is ``"POST http://..."``)."""
    policy = _policy_error(exc)
    if policy is not None:
        return policy
    if isinstance(exc, httpx.TimeoutException):
        phase = {httpx.ConnectTimeout: "connecting", httpx.WriteTimeout: "sending the request",
                 httpx.PoolTimeout: "waiting for a free connection"}.get(type(exc), "waiting for the reply")
        return BackendTimeout(f"{where}: no complete reply within the deadline ({budget:.1f} s; timed out {phase})")
    text = _one_line(str(exc), 200)
    code = _os_errno(exc)
    if isinstance(exc, httpx.ProxyError):
        return TransportError(f"{where}: the proxy failed: {text}", "connection_error", url=url)
    if code in _ERRNO_TEXT:
        return TransportError(f"{where}: {_ERRNO_TEXT[code]}", "connection_error", url=url)
    if isinstance(exc, httpx.RemoteProtocolError):
        low = text.lower()
        if "without sending a response" in low or "disconnected" in low:
            return TransportError(f"{where}: the server closed the connection without sending a response",
                                  "connection_error", url=url)
        if "complete message body" in low or "incomplete" in low:
            return TransportError(f"{where}: truncated reply: the server closed the connection before the whole body "
                                  f"was sent ({text})", "connection_error", url=url)
        return TransportError(f"{where}: malformed HTTP reply: {text}", "bad_reply", url=url)
    if isinstance(exc, httpx.DecodingError):
        return TransportError(f"{where}: the reply body could not be decoded: {text}", "bad_reply", url=url)
    if isinstance(exc, httpx.ConnectError):
        return TransportError(f"{where}: cannot connect: {text}", "connection_error", url=url)
    return TransportError(f"{where}: {type(exc).__name__}: {text or 'connection failed'}", "connection_error", url=url)


def _error_detail(raw: bytes, truncated: bool) -> str:
    """The server's error message from an HTTP error body (JSON ``error.message`` and friends)."""
    text = raw.decode("utf-8", "replace")
    try:
        obj = json.loads(text)
    except ValueError:
        obj = None
    if isinstance(obj, dict):
        msg = obj.get("error", obj.get("message", obj.get("detail")))
        if isinstance(msg, dict):
            msg = msg.get("message") or msg.get("msg") or json.dumps(msg, sort_keys=True)
        if isinstance(msg, list):
            msg = json.dumps(msg)
        if msg is None:
            msg = json.dumps(obj, sort_keys=True)
        return _one_line(str(msg), 300)
    if not text.strip():
        return "(empty body)"
    return _one_line(text[:200], 200) + (" …" if truncated or len(text) > 200 else "")


# --------------------------------------------------------------------------------------------- client


class JSONClient:
    """JSON requests to model servers under radpriv's network policy (see the module docstring).

    ``allow_hosts``: host names opted in besides loopback (plus ``$RADPRIV_ALLOW_HOSTS``).
    ``proxy``: an explicit proxy URL (itself loopback or opted in); environment proxies are ignored.
    ``headers``: sent with every request (e.g. ``Authorization``). ``timeout``: the deadline used
    when a call passes ``deadline=None`` (seconds from the start of the call).
    """

    def __init__(self, allow_hosts: Iterable[str] = (), proxy: str | None = None,
                 headers: dict[str, str] | None = None, timeout: float = 600.0,
                 max_reply_bytes: int = MAX_REPLY_BYTES):
        self.allow_hosts = tuple(allow_hosts or ())
        self.timeout = float(timeout)
        self.max_reply_bytes = int(max_reply_bytes)
        if proxy is not None:
            proxy = str(proxy)
            refuse_url_credentials(proxy, "proxy")
            check_endpoint(proxy, self.allow_hosts)
        self.proxy = proxy
        self._client = httpx.Client(transport=_transport(proxy), trust_env=False, follow_redirects=False,
                                    headers={"Accept": "application/json", **(headers or {})})

    # ---- public -----------------------------------------------------------------------------
    def post_json(self, url: str, body: Any, deadline: float | None = None) -> Any:
        """POST ``body`` as JSON; return the decoded JSON reply."""
        data = json.dumps(body).encode("utf-8")
        return self._request("POST", url, data, deadline)

    def get_json(self, url: str, deadline: float | None = None) -> Any:
        """GET ``url``; return the decoded JSON reply."""
        return self._request("GET", url, None, deadline)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "JSONClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- internals --------------------------------------------------------------------------
    def _request(self, method: str, url: str, data: bytes | None, deadline: float | None) -> Any:
        url = str(url)
        refuse_url_credentials(url)
        check_endpoint(url, self.allow_hosts)
        where = f"{method} {url}"
        start = time.monotonic()
        if deadline is None:
            deadline = start + self.timeout
        budget = deadline - start
        if budget <= 0:
            raise BackendTimeout(f"{where}: the deadline passed before the request was sent")
        headers = {"Content-Type": "application/json"} if data is not None else {}
        outer = getattr(_local, "deadline", None)
        _local.deadline = deadline
        try:
            with self._client.stream(method, url, content=data, headers=headers,
                                     timeout=httpx.Timeout(budget)) as resp:
                status = resp.status_code
                if 300 <= status < 400:
                    location = resp.headers.get("location")
                    raise TransportError(
                        f"{where}: the server redirected (HTTP {status}) to "
                        f"{_one_line(location, 200) if location else '(no Location)'}; redirects are never followed, "
                        "so a report cannot be sent to another address. Configure the final URL if you trust it.",
                        "redirect_refused", url=url, status=status)
                if status >= 400:
                    raw, truncated = self._read_error_body(resp, deadline)
                    raise TransportError(f"{where}: HTTP {status} {resp.reason_phrase}: {_error_detail(raw, truncated)}",
                                         "http_error", url=url, status=status)
                raw = self._read_body(resp, deadline, where, url, budget)
        except httpx.HTTPError as exc:
            raise _transport_fault(exc, where, url, budget) from None
        finally:
            _local.deadline = outer
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            sample = _one_line(raw[:200].decode("utf-8", "replace"), 200) or "(empty body)"
            raise TransportError(f"{where}: the reply (HTTP {status}) is not JSON: {sample}", "bad_reply",
                                 url=url, status=status) from None

    def _read_body(self, resp: httpx.Response, deadline: float, where: str, url: str, budget: float) -> bytes:
        chunks, size = [], 0
        for chunk in resp.iter_bytes():
            size += len(chunk)
            if size > self.max_reply_bytes:
                raise TransportError(f"{where}: the reply is larger than {self.max_reply_bytes} bytes", "bad_reply",
                                     url=url, status=resp.status_code)
            chunks.append(chunk)
            if time.monotonic() > deadline:
                raise BackendTimeout(f"{where}: no complete reply within the deadline ({budget:.1f} s; "
                                     f"{size} bytes of the body received)")
        return b"".join(chunks)

    @staticmethod
    def _read_error_body(resp: httpx.Response, deadline: float) -> tuple[bytes, bool]:
        """Up to ``_MAX_ERROR_BYTES`` of an error reply; whatever arrived if it stalls or breaks off."""
        chunks, size = [], 0
        try:
            for chunk in resp.iter_bytes():
                chunks.append(chunk)
                size += len(chunk)
                if size >= _MAX_ERROR_BYTES or time.monotonic() > deadline:
                    return b"".join(chunks)[:_MAX_ERROR_BYTES], True
        except httpx.HTTPError:
            return b"".join(chunks), True
        return b"".join(chunks), False
