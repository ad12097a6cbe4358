"""Network guard: loopback only unless a host is opted in by name; every attempt is recorded.

No test here sends a packet off this machine: refused destinations raise inside the patched call,
before the real connect/resolve runs (the exception type proves it: a real attempt to 10.0.0.1
would time out or fail with a routing error, not NetworkPolicyError).
"""

import http.server
import socket
import threading
import urllib.error
import urllib.request

import pytest

from radpriv.llm.netguard import NetworkPolicyError, check_endpoint, guard, is_loopback
from radpriv.llm import netguard


# no proxies: a proxy from the environment would change where the test connects
_open = urllib.request.build_opener(urllib.request.ProxyHandler({})).open


@pytest.fixture(autouse=True)
def no_env_opt_in(monkeypatch):
    monkeypatch.delenv("RADPRIV_ALLOW_HOSTS", raising=False)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "::ffff:127.0.0.1", "localhost",
                                  "LOCALHOST.", "api.localhost"])
def test_loopback_hosts(host):
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["10.0.0.1", "192.168.1.20", "8.8.8.8", "::ffff:10.0.0.1", "2001:db8::1",
                                  "example.com", "localhost.example.com", "0.0.0.0", "", None])
def test_non_loopback_hosts(host):
    assert not is_loopback(host)


def test_check_endpoint_policy(monkeypatch):
    assert check_endpoint("http://127.0.0.1:8080/v1") == "127.0.0.1"
    assert check_endpoint("http://localhost:11434/v1") == "localhost"
    assert check_endpoint("http://[::1]:8000/v1") == "::1"
    with pytest.raises(NetworkPolicyError) as err:
        check_endpoint("https://api.example.com/v1")
    msg = str(err.value)
    assert "--allow-host api.example.com" in msg and "RADPRIV_ALLOW_HOSTS=api.example.com" in msg
    assert check_endpoint("https://API.example.com/v1", allow_hosts=["api.example.com"]) == "api.example.com"
    assert check_endpoint("http://gpu-server.lan:8000/v1", allow_hosts="gpu-server.lan") == "gpu-server.lan"
    with pytest.raises(NetworkPolicyError):  # opting in one host does not open another
        check_endpoint("http://gpu-server2.lan:8000/v1", allow_hosts=["gpu-server.lan"])
    monkeypatch.setenv("RADPRIV_ALLOW_HOSTS", "a.lan, gpu-server2.lan")
    assert check_endpoint("http://gpu-server2.lan:8000/v1") == "gpu-server2.lan"
    for bad in ("127.0.0.1:8000", "ftp://127.0.0.1/x", "http:///v1"):
        with pytest.raises(ValueError):
            check_endpoint(bad)


def test_guard_refuses_non_loopback_before_connecting():
    originals = (socket.socket.connect, socket.socket.connect_ex, socket.create_connection, socket.getaddrinfo)
    with guard() as g:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(5)
        with pytest.raises(NetworkPolicyError, match="10.0.0.1:80"):
            s.connect(("10.0.0.1", 80))
        with pytest.raises(NetworkPolicyError):
            s.connect_ex(("10.0.0.1", 443))
        s.close()
        with pytest.raises(NetworkPolicyError, match="example.com"):
            socket.create_connection(("example.com", 80), timeout=5)
        with pytest.raises(NetworkPolicyError, match="getaddrinfo"):
            socket.getaddrinfo("example.com", 443)  # not even a DNS lookup
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with pytest.raises(NetworkPolicyError):
            u.sendto(b"report text", ("192.0.2.7", 9))
        u.close()
        with pytest.raises(urllib.error.URLError) as err:
            _open("http://example.com/", timeout=5)
        assert isinstance(err.value.reason, NetworkPolicyError)
    assert len(g.refused) == 6 and not any(a.allowed for a in g.attempts)
    assert {a.host for a in g.refused} == {"10.0.0.1", "example.com", "192.0.2.7"}
    assert {a.via for a in g.refused} == {"connect", "connect_ex", "create_connection", "getaddrinfo", "sendto"}
    assert "6 refused" in g.summary()
    # patches are removed on exit
    assert (socket.socket.connect, socket.socket.connect_ex, socket.create_connection, socket.getaddrinfo) == originals
    assert "connect" not in socket.socket.__dict__ and not netguard.active()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    srv = http.server.ThreadingHTTPServer(("0.0.0.0", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def test_guard_allows_loopback_and_records_it(http_server):
    port = http_server
    with guard() as g:
        assert _open(f"http://127.0.0.1:{port}/", timeout=10).read() == b"ok"
        assert _open(f"http://localhost:{port}/", timeout=10).read() == b"ok"
    assert g.attempts and not g.refused and not g.non_loopback
    assert all(a.loopback and a.allowed for a in g.attempts)
    assert any(a.port == port and a.via == "connect" for a in g.attempts)


def test_guard_applies_to_every_thread():
    errors = []

    def worker():
        try:
            socket.create_connection(("10.1.2.3", 80), timeout=5)
        except NetworkPolicyError as exc:
            errors.append(exc)

    with guard() as g:
        t = threading.Thread(target=worker)
        t.start()
        t.join()
    assert len(errors) == 1 and g.refused[0].host == "10.1.2.3"


def test_opted_in_name_is_allowed_end_to_end(http_server):
    """Opt in this machine's host name (not a loopback *name*): refused without, connected with."""
    port = http_server
    name = socket.gethostname()
    if is_loopback(name):
        pytest.skip("host name is 'localhost'")
    try:
        socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except OSError:
        pytest.skip(f"host name {name!r} does not resolve here")
    with guard() as g:
        with pytest.raises(urllib.error.URLError, match=f"--allow-host {name.lower()}"):
            _open(f"http://{name}:{port}/", timeout=10)
    assert g.refused
    with guard(allow_hosts=[name]) as g:
        assert _open(f"http://{name}:{port}/", timeout=10).read() == b"ok"
    assert not g.refused and any(a.host == name.lower() and a.allowed for a in g.attempts)


def test_opted_in_addresses_and_nesting():
    with guard(allow_hosts=["10.0.0.1", "gpu-server.lan"]) as outer:
        assert outer.permits("10.0.0.1") and outer.permits("GPU-SERVER.LAN") and not outer.permits("10.0.0.2")
        with guard() as inner:  # nested guards intersect: the stricter one wins
            s = socket.socket()
            with pytest.raises(NetworkPolicyError):
                s.connect(("10.0.0.1", 80))
            s.close()
        assert inner.refused and outer.refused  # both recorded the attempt
    assert not netguard.active()


def test_unix_sockets_are_local(tmp_path):
    path = str(tmp_path / "s.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    with guard() as g:
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(path)
        c.close()
    srv.close()
    assert g.attempts[0].family == "unix" and g.attempts[0].allowed and not g.refused


from hypothesis import given, strategies as st  # noqa: E402
import ipaddress  # noqa: E402


@given(st.ip_addresses())
def test_is_loopback_agrees_with_ipaddress(ip):
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else ip
    assert is_loopback(str(ip)) == mapped.is_loopback
    with guard() as g:
        assert g.permits(str(ip)) == mapped.is_loopback
