"""Transport faults of the OpenAI-compatible backend, each against a real misbehaving server on 127.0.0.1.

Every server here is a raw socket on 127.0.0.1 (one thread per connection, bounded lifetime, stopped
at teardown). No test connects anywhere else: every test runs inside a network guard that refuses
any non-loopback destination before the real call, and asserts that none was even attempted.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time

import pytest

from radpriv import netguard
from radpriv.llm.backends import BackendError, BackendTimeout, OpenAIBackend, TransportError
from radpriv.llm.errors import TRANSPORT_REASONS
from radpriv.llm.http import JSONClient
from radpriv.netguard import NetworkPolicyError
from radpriv.models.registry import ModelSpec

SCHEMA = {"type": "object", "properties": {"label": {"type": "string", "enum": ["a", "b"]}},
          "required": ["label"], "additionalProperties": False}
MESSAGES = [{"role": "user", "content": "synthetic report: no findings"}]
PARAMS = {"temperature": 0.0, "max_tokens": 16}
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def completion(content: str = '{"label": "a"}') -> dict:
    return {"id": "x", "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 3}}


# --------------------------------------------------------------------------------------------- servers


def read_request(conn: socket.socket) -> tuple[str, str, dict, bytes, bytes] | None:
    """One HTTP/1.1 request: (method, target, headers, body, raw bytes); None at EOF."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = conn.recv(65536)
        if not data:
            return None
        buf += data
    head, body = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
    need = int(headers.get("content-length", 0))
    while len(body) < need:
        data = conn.recv(65536)
        if not data:
            break
        body += data
    return method, target, headers, body, head + b"\r\n\r\n" + body


def response(status: int, body: bytes | str | dict, ctype: str = "application/json", extra: str = "",
             length: int | None = None) -> bytes:
    if isinstance(body, dict):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    reason = {200: "OK", 307: "Temporary Redirect", 400: "Bad Request", 404: "Not Found",
              500: "Internal Server Error", 503: "Service Unavailable"}.get(status, "X")
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body) if length is None else length}\r\n{extra}\r\n")
    return head.encode() + body


class Server:
    """A raw-socket HTTP server on 127.0.0.1 whose ``handler(server, conn)`` misbehaves as told.

    Records requests and bytes received; stops by itself after ``lifetime`` seconds."""

    def __init__(self, handler, lifetime: float = 30.0):
        self.handler = handler
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str, dict, bytes]] = []
        self.connections = 0
        self.bytes_received = 0
        self.raw = b""
        self.stalling = False
        self._deadline = time.monotonic() + lifetime
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        self._accept = threading.Thread(target=self._serve, daemon=True)
        self._accept.start()

    def _serve(self) -> None:
        while not self.stop.is_set() and time.monotonic() < self._deadline:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            conn.settimeout(10)
            with self.lock:
                self.connections += 1
                self._conns.append(conn)
            t = threading.Thread(target=self._handle, args=(conn,), daemon=True)
            self._threads.append(t)
            t.start()
        self.stop.set()

    def _handle(self, conn: socket.socket) -> None:
        try:
            self.handler(self, conn)
        except OSError:
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def next_request(self, conn):
        req = read_request(conn)
        if req is not None:
            with self.lock:
                self.requests.append(req[:4])
                self.bytes_received += len(req[4])
                self.raw += req[4]
        return req

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        self._accept.join(timeout=5)
        for conn in self._conns:  # wakes handlers blocked in recv on a kept-alive connection
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self._threads:
            t.join(timeout=5)


@pytest.fixture
def serve():
    servers: list[Server] = []

    def start(handler, lifetime: float = 30.0) -> Server:
        servers.append(Server(handler, lifetime))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def replying(*replies: bytes):
    """A keep-alive handler answering successive requests on a connection with ``replies`` (last repeats)."""
    def handler(srv: Server, conn: socket.socket) -> None:
        i = 0
        while srv.next_request(conn) is not None:
            conn.sendall(replies[min(i, len(replies) - 1)])
            i += 1
    return handler


def good(content: str = '{"label": "a"}'):
    return replying(response(200, completion(content)))


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """No opt-in from the environment, and proof that no test attempted a non-loopback destination."""
    monkeypatch.delenv("RADPRIV_ALLOW_HOSTS", raising=False)
    with netguard.guard() as g:
        yield g
    assert not g.non_loopback, g.summary()


def backend(url: str, **opts) -> OpenAIBackend:
    spec = ModelSpec(name="srv", kind="openai", endpoint=f"{url}/v1", served_model="m")
    return OpenAIBackend(spec, **opts)


def generate(b: OpenAIBackend, seconds: float = 5.0):
    return b.generate_json(MESSAGES, SCHEMA, PARAMS, deadline=time.monotonic() + seconds)


def fails(b: OpenAIBackend, reason: str, *fragments: str, seconds: float = 5.0) -> TransportError:
    with pytest.raises(TransportError) as err:
        generate(b, seconds)
    exc = err.value
    assert exc.reason == reason, (exc.reason, str(exc))
    assert isinstance(exc, BackendError) and exc.reason in TRANSPORT_REASONS
    msg = str(exc)
    assert "\n" not in msg and f"{b.base}/chat/completions" in msg, msg
    for f in fragments:
        assert f in msg, (f, msg)
    return exc


# --------------------------------------------------------------------------------------------- tests


def test_a_good_server_answers_and_the_connection_is_reused(serve):
    srv = serve(good())
    b = backend(srv.url)
    for _ in range(3):
        gen = generate(b)
        assert json.loads(gen.text) == {"label": "a"} and gen.prompt_tokens == 7 and gen.completion_tokens == 3
    assert len(srv.requests) == 3 and srv.connections == 1
    method, target, headers, body = srv.requests[0]
    assert (method, target) == ("POST", "/v1/chat/completions")
    assert json.loads(body)["response_format"]["type"] == "json_schema" and "authorization" not in headers
    b.close()


def test_the_api_key_comes_from_the_named_environment_variable(serve, monkeypatch):
    monkeypatch.setenv("RADPRIV_TEST_KEY", "sk-test-123")
    srv = serve(good())
    spec = ModelSpec(name="srv", kind="openai", endpoint=f"{srv.url}/v1", served_model="m",
                     api_key_env="RADPRIV_TEST_KEY")
    generate(OpenAIBackend(spec))
    assert srv.requests[0][2]["authorization"] == "Bearer sk-test-123"


def test_concurrent_requests_share_one_backend(serve):
    srv = serve(good())
    b = backend(srv.url)
    results, errors = [], []

    def work():
        try:
            results.append(generate(b).text)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert not errors and len(results) == 6 and len(srv.requests) == 6


def test_exception_reasons_are_uniform():
    assert BackendError.reason == "backend_error" and BackendTimeout.reason == "timeout"
    assert BackendError("x").reason == "backend_error" and BackendTimeout("x").reason == "timeout"
    exc = TransportError("m", "bad_reply", url="u", status=200)
    assert (exc.reason, exc.url, exc.status, str(exc)) == ("bad_reply", "u", 200, "m")
    import pickle

    back = pickle.loads(pickle.dumps(exc))
    assert (back.reason, back.url, back.status, str(back)) == ("bad_reply", "u", 200, "m")
    with pytest.raises(ValueError):
        TransportError("m", "nonsense")


def test_connection_refused():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens on this port now
    fails(backend(f"http://127.0.0.1:{port}"), "connection_error", "connection refused")


def test_connection_reset(serve):
    def reset(srv, conn):
        srv.next_request(conn)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()  # linger 0: RST instead of FIN

    srv = serve(reset)
    fails(backend(srv.url), "connection_error", "reset")
    assert len(srv.requests) == 1


def test_remote_closes_without_a_response(serve):
    def hang_up(srv, conn):
        srv.next_request(conn)
        conn.shutdown(socket.SHUT_RDWR)

    srv = serve(hang_up)
    fails(backend(srv.url), "connection_error", "closed the connection without sending a response")


def test_http_500_with_a_json_error_body(serve):
    long_tail = "x" * 2000
    srv = serve(replying(response(500, {"error": {"message": f"CUDA out of memory {long_tail}", "type": "server"}})))
    exc = fails(backend(srv.url), "http_error", "HTTP 500", "CUDA out of memory")
    assert exc.status == 500 and len(str(exc)) < 600  # the server's message is truncated
    assert len(srv.requests) == 1  # a 5xx is not a format rejection: no fallback


def test_http_503_with_a_plain_text_body(serve):
    srv = serve(replying(response(503, "Service Unavailable: model is loading, retry later\n" + "y" * 1000,
                                  ctype="text/plain")))
    exc = fails(backend(srv.url), "http_error", "HTTP 503", "model is loading")
    assert exc.status == 503 and "y" * 300 not in str(exc)
    assert len(srv.requests) == 1


def test_http_400_with_a_fixed_format_raises_at_once(serve):
    srv = serve(replying(response(400, {"error": {"message": "response_format json_schema is not supported"}})))
    exc = fails(backend(srv.url, structured="json_schema"), "http_error", "HTTP 400", "json_schema is not supported")
    assert exc.status == 400 and len(srv.requests) == 1


def test_http_400_in_auto_mode_falls_back_to_the_next_format(serve):
    srv = serve(replying(response(400, {"error": {"message": "unknown response_format"}}),
                         response(200, completion())))
    b = backend(srv.url)
    assert json.loads(generate(b).text) == {"label": "a"}
    kinds = [json.loads(body).get("response_format", {}).get("type") for *_, body in srv.requests]
    assert kinds == ["json_schema", "json_object"] and b.structured == "json_object"


def test_no_format_accepted_names_the_last_rejection(serve):
    srv = serve(replying(response(422, {"detail": [{"msg": "field response_format not permitted"}]})))
    exc = fails(backend(srv.url), "http_error", "accepted no structured-output format", "HTTP 422",
                "not permitted")
    assert exc.status == 422 and len(srv.requests) == 3


def test_a_200_body_that_is_not_json(serve):
    srv = serve(replying(response(200, "<html><body>Welcome to nginx!</body></html>", ctype="text/html")))
    fails(backend(srv.url), "bad_reply", "is not JSON", "Welcome to nginx")


def test_a_truncated_body(serve):
    def truncated(srv, conn):
        srv.next_request(conn)
        conn.sendall(response(200, json.dumps(completion())[:40], length=1000))
        conn.shutdown(socket.SHUT_RDWR)

    srv = serve(truncated)
    fails(backend(srv.url), "connection_error", "truncated reply")


def test_a_json_body_without_choices(serve):
    srv = serve(replying(response(200, {"object": "error", "message": "model m not loaded"})))
    fails(backend(srv.url), "bad_reply", "no choices", "model m not loaded")


def _stalling(srv, conn, head_only: bool = False):
    srv.next_request(conn)
    full = response(200, completion())
    conn.sendall(full[:30] if head_only else full[: full.index(b"\r\n\r\n") + 4 + 15])
    srv.stalling = True
    srv.stop.wait(20)  # until the test ends (or the server's lifetime)
    srv.stalling = False


@pytest.mark.parametrize("head_only", [False, True], ids=["mid-body", "mid-headers"])
def test_a_server_that_stalls_mid_response_times_out_by_the_deadline(serve, head_only):
    srv = serve(lambda s, c: _stalling(s, c, head_only))
    b = backend(srv.url)
    t0 = time.monotonic()
    with pytest.raises(BackendTimeout) as err:
        generate(b, seconds=1.5)
    took = time.monotonic() - t0
    assert took < 10 and srv.stalling  # it gave up by itself while the server was still stalling
    assert err.value.reason == "timeout" and "deadline" in str(err.value) and f"{srv.url}/v1" in str(err.value)


@pytest.mark.parametrize("in_headers", [False, True], ids=["body", "headers"])
def test_a_trickling_server_cannot_extend_the_deadline(serve, in_headers):
    """One byte every 0.2 s: every single read succeeds well within its own timeout, so only a
    deadline on the whole exchange stops it (in the headers, the HTTP library reads on by itself)."""
    def trickle(srv, conn):
        srv.next_request(conn)
        full = response(200, completion(" " * 500 + '{"label": "a"}'), extra="X-Pad: " + "p" * 200 + "\r\n")
        cut = 17 if in_headers else full.index(b"\r\n\r\n") + 4
        conn.sendall(full[:cut])
        srv.stalling = True
        for i in range(cut, len(full)):
            if srv.stop.wait(0.2):
                break
            conn.sendall(full[i:i + 1])
        srv.stalling = False

    srv = serve(trickle)
    t0 = time.monotonic()
    with pytest.raises(BackendTimeout):
        generate(backend(srv.url), seconds=1.5)
    assert time.monotonic() - t0 < 10 and srv.stalling


def test_a_redirect_is_never_followed(serve, loopback_only):
    target = "http://10.9.9.9/v1/chat/completions"
    srv = serve(replying(response(307, "", extra=f"Location: {target}\r\n")))
    exc = fails(backend(srv.url), "redirect_refused", "HTTP 307", target, "never followed")
    assert exc.status == 307 and len(srv.requests) == 1
    assert not [a for a in loopback_only.attempts if a.host == "10.9.9.9"]


def test_proxy_variables_and_netrc_are_ignored(serve, monkeypatch, tmp_path):
    recorder = serve(replying(response(200, completion('{"label": "b"}'))))
    for var in PROXY_VARS:
        monkeypatch.setenv(var, recorder.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine 127.0.0.1 login alice password s3cret\ndefault login alice password s3cret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("HOME", str(tmp_path))
    srv = serve(good())
    gen = generate(backend(srv.url))
    assert json.loads(gen.text) == {"label": "a"}  # straight from the server, not via the "proxy"
    assert recorder.bytes_received == 0 and recorder.connections == 0
    assert "authorization" not in srv.requests[0][2] and "proxy-authorization" not in srv.requests[0][2]


def test_an_explicit_loopback_proxy_is_used(serve, monkeypatch):
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    recorder = serve(replying(response(200, completion('{"label": "b"}'))))
    srv = serve(good())
    gen = generate(backend(srv.url, proxy=recorder.url))
    assert json.loads(gen.text) == {"label": "b"}  # answered by the proxy
    assert recorder.bytes_received > 0 and f"POST {srv.url}/v1/chat/completions".encode() in recorder.raw
    assert srv.connections == 0


def test_an_explicit_proxy_off_this_machine_is_refused_before_anything_is_sent(serve, loopback_only):
    srv = serve(good())
    with pytest.raises(NetworkPolicyError) as err:
        backend(srv.url, proxy="http://proxy.hospital.example:3128")
    assert "proxy.hospital.example" in str(err.value) and "--allow-host" in str(err.value)
    assert srv.connections == 0 and not loopback_only.attempts


def test_credentials_in_urls_are_refused(serve):
    srv = serve(good())
    with pytest.raises(ValueError) as err:
        backend(f"http://alice:s3cret@127.0.0.1:{srv.port}")
    msg = str(err.value)
    assert "--api-key-env VAR" in msg and "s3cret" not in msg and "alice" not in msg
    with pytest.raises(ValueError, match="--api-key-env"):
        backend(srv.url, proxy=f"http://bob:pw@127.0.0.1:{srv.port}")
    client = JSONClient()
    with pytest.raises(ValueError, match="--api-key-env"):
        client.get_json(f"http://u:p@127.0.0.1:{srv.port}/v1/models", deadline=time.monotonic() + 2)
    client.close()
    assert srv.connections == 0


def test_served_model_digest_from_ollama_tags(serve):
    tags = {"models": [{"name": "other:7b", "model": "other:7b", "digest": "1" * 64},
                       {"name": "m:latest", "model": "m:latest", "digest": "ab" * 32, "size": 123}]}

    def ollama(srv, conn):
        while (req := srv.next_request(conn)) is not None:
            conn.sendall(response(200, tags) if req[:2] == ("GET", "/api/tags") else response(404, "404 page not found"))

    srv = serve(ollama)
    b = backend(srv.url)
    assert b.served_model_digest() == "ab" * 32
    assert [r[:2] for r in srv.requests] == [("GET", "/api/tags")]
    tags["models"][1]["digest"] = "cd" * 32  # the model behind the name changed: every call probes again
    assert b.served_model_digest() == "cd" * 32


def test_served_model_digest_from_openai_models(serve):
    created = iter(range(1_000_000, 2_000_000))

    def models(srv, conn):
        while (req := srv.next_request(conn)) is not None:
            if req[:2] == ("GET", "/v1/models"):
                conn.sendall(response(200, {"object": "list", "data": [
                    {"id": "other", "object": "model", "created": next(created), "owned_by": "me"},
                    {"id": "m", "object": "model", "created": next(created), "owned_by": "me",
                     "meta": {"n_params": 134515008, "size": 105454848}}]}))
            elif req[:2] == ("GET", "/api/tags"):  # llama.cpp's server: an Ollama-style list without digests
                conn.sendall(response(200, {"models": [{"name": "m", "model": "m", "digest": ""}]}))
            else:
                conn.sendall(response(404, {"error": {"message": "not found"}}))

    srv = serve(models)
    b = backend(srv.url)
    d1 = b.served_model_digest()
    assert d1 is not None and d1.startswith("sha256:") and len(d1) == 7 + 64
    assert b.served_model_digest() == d1  # "created" changes per call; the digest does not
    assert ("GET", "/v1/models") in [r[:2] for r in srv.requests]


def test_served_model_digest_is_none_when_the_server_reports_none(serve):
    srv = serve(replying(response(404, "404 page not found", ctype="text/plain")))
    assert backend(srv.url).served_model_digest() is None
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    assert backend(f"http://127.0.0.1:{port}").served_model_digest(timeout=1) is None
    stall = serve(lambda srv, conn: _stalling(srv, conn))
    t0 = time.monotonic()
    assert backend(stall.url).served_model_digest(timeout=0.5) is None and time.monotonic() - t0 < 5


def test_get_json_and_a_deadline_already_passed(serve):
    srv = serve(replying(response(200, {"ok": True})))
    with JSONClient() as client:
        assert client.get_json(f"{srv.url}/health", deadline=time.monotonic() + 2) == {"ok": True}
        with pytest.raises(BackendTimeout, match="deadline passed before the request was sent"):
            client.get_json(f"{srv.url}/health", deadline=time.monotonic() - 1)
    assert len(srv.requests) == 1
