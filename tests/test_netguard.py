"""Network guard: loopback only unless a host is opted in by name; every attempt is recorded.

No test here sends a packet off this machine: refused destinations raise inside the patched call,
before the real connect/resolve runs (the exception type proves it: a real attempt to 10.0.0.1
would time out or fail with a routing error, not NetworkPolicyError), and the test session runs with
interception on (conftest), so an opted-in non-loopback attempt is recorded and stopped
(InterceptedConnection) before the real call.
"""

import http.server
import socket
import threading
import urllib.error
import urllib.request

import pytest

from radpriv.netguard import NetworkPolicyError, check_endpoint, guard, is_loopback
from radpriv import netguard


# no proxies: a proxy from the environment would change where the test connects
_open = urllib.request.build_opener(urllib.request.ProxyHandler({})).open


@pytest.fixture(autouse=True)
def no_env_opt_in(monkeypatch):
    monkeypatch.delenv("RADPRIV_ALLOW_HOSTS", raising=False)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "::ffff:127.0.0.1", "localhost",
                                  "LOCALHOST."])
def test_loopback_hosts(host):
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["10.0.0.1", "192.168.1.20", "8.8.8.8", "::ffff:10.0.0.1", "2001:db8::1",
                                  "example.com", "localhost.example.com", "0.0.0.0", "", None,
                                  # names are never assumed local: a resolver may ask a DNS server for them
                                  "api.localhost", "localhost.evil.example", "127.0.0.1.nip.io"])
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
    active_before = netguard.active()
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
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with pytest.raises(NetworkPolicyError, match="sendmsg"):
            u.sendmsg([b"report text"], [], 0, ("192.0.2.8", 9))
        u.close()
        for lookup in (socket.gethostbyname, socket.gethostbyname_ex):
            with pytest.raises(NetworkPolicyError, match="gethostbyname"):
                lookup("pacs.hospital.example")
        with pytest.raises(NetworkPolicyError, match="gethostbyaddr"):
            socket.gethostbyaddr("10.0.0.9")  # a reverse lookup sends the address to a DNS server
    assert len(g.refused) == 10 and not any(a.allowed for a in g.attempts)
    assert {a.host for a in g.refused} == {"10.0.0.1", "example.com", "192.0.2.7", "192.0.2.8",
                                           "pacs.hospital.example", "10.0.0.9"}
    assert {a.via for a in g.refused} == {"connect", "connect_ex", "create_connection", "getaddrinfo", "sendto",
                                          "sendmsg", "gethostbyname", "gethostbyname_ex", "gethostbyaddr"}
    assert "10 refused" in g.summary() and not g.left_machine
    # with no guard block left, the patches are removed again (or stay for the process guard of this session)
    if not active_before:
        assert (socket.socket.connect, socket.socket.connect_ex, socket.create_connection,
                socket.getaddrinfo) == originals
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
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
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


def test_opted_in_name_is_intercepted_before_anything_is_sent():
    """An opted-in host passes the policy; in this session the attempt is recorded and stopped before the
    real resolve/connect (no packet to a hospital network, ever), so the test proves the path without
    traffic. Without the opt-in the same call is refused."""
    name = "gpu-server.hospital.example"
    with guard() as g:
        with pytest.raises(urllib.error.URLError, match=f"--allow-host {name}"):
            _open(f"http://{name}:8000/", timeout=5)
    assert g.refused and not g.intercepted
    with guard(allow_hosts=[name]) as g:
        with pytest.raises(urllib.error.URLError) as err:
            _open(f"http://{name}:8000/", timeout=5)
        assert isinstance(err.value.reason, netguard.InterceptedConnection)
        s = socket.socket()
        with pytest.raises(NetworkPolicyError) as refused:
            s.connect(("10.0.0.5", 8000))  # an address, not the opted-in name: refused by the policy...
        assert not isinstance(refused.value, netguard.InterceptedConnection)
        s.close()
    assert [a.host for a in g.intercepted] == [name]          # ...so only the name was intercepted
    assert not g.left_machine and any(a.host == "10.0.0.5" and not a.allowed for a in g.attempts)


@pytest.mark.parametrize("url,allow,ok", [
    ("http://10.0.0.5/v1", [], False),                                 # a private address, not opted in
    ("http://10.0.0.5/v1", ["10.0.0.5"], True),                        # opted in by that address
    ("http://gpu.lan:8000/v1", ["10.0.0.5"], False),                   # opted in by IP, used by name
    ("http://10.0.0.5:8000/v1", ["gpu.lan"], False),                   # opted in by name, used by IP
    ("http://[::ffff:10.0.0.5]/v1", [], False),                        # IPv4-mapped IPv6 of a private address
    ("http://[::ffff:127.0.0.1]:8080/v1", [], True),                   # IPv4-mapped loopback
    ("http://localhost.evil.example/v1", [], False),
    ("http://127.0.0.1.nip.io/v1", [], False),                         # resolves to 127.0.0.1 via public DNS
    ("http://127.0.0.1@evil.example/v1", [], False),                   # userinfo trick: the host is evil.example
])
def test_endpoint_bad_inputs(url, allow, ok):
    if ok:
        assert check_endpoint(url, allow)
        return
    with pytest.raises((NetworkPolicyError, ValueError)) as err:
        check_endpoint(url, allow)
    msg = str(err.value)
    if isinstance(err.value, NetworkPolicyError):
        assert "is not this machine (loopback)" in msg and "--allow-host" in msg
    else:
        assert "credentials in a URL" in msg


def test_endpoint_with_credentials_is_refused():
    with pytest.raises(ValueError, match=r"credentials in a URL .* --api-key-env VAR") as err:
        check_endpoint("https://user:pw@host.example/v1", ["host.example"])
    assert "pw" not in str(err.value)  # the secret is not echoed


def test_process_guard_log_records_non_loopback_attempts(tmp_path):
    """The privacy check reads RADPRIV_NET_LOG: one JSON line per non-loopback attempt, any process."""
    import subprocess
    import sys

    log = tmp_path / "net.jsonl"
    code = ("import socket; from radpriv import netguard; netguard.install_process_guard()\n"
            "try:\n    socket.create_connection(('10.0.0.7', 443), timeout=1)\nexcept netguard.NetworkPolicyError as e:"
            "\n    print('refused', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**__import__("os").environ, "RADPRIV_NET_LOG": str(log)})
    assert out.returncode == 0 and out.stdout.startswith("refused radpriv network guard refused create_connection")
    rows = netguard.read_log(log)
    assert len(rows) == 1 and rows[0]["host"] == "10.0.0.7" and rows[0]["port"] == 443 and not rows[0]["allowed"]


def test_opted_in_addresses_and_nesting():
    with guard(allow_hosts=["10.0.0.1", "gpu-server.lan"]) as outer:
        assert outer.permits("10.0.0.1") and outer.permits("GPU-SERVER.LAN") and not outer.permits("10.0.0.2")
        with guard() as inner:  # nested guards intersect: the stricter one wins
            s = socket.socket()
            with pytest.raises(NetworkPolicyError):
                s.connect(("10.0.0.1", 80))
            s.close()
        assert inner.refused and outer.refused  # both recorded the attempt


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
