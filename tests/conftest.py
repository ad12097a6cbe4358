"""Test-wide isolation: offline, headless, a private cache per session, and the privacy check.

Fetched model files are found where `make models` put them (RADPRIV_MODELS, resolved before the
cache is redirected); everything else a test writes (LLM answer cache, generated corpora) goes to a
temporary directory so tests never see results from an earlier run.

Privacy check (every session, so `make test` includes it): the proxy variables point at a recorder on
127.0.0.1 that counts every byte it receives; this process and every radpriv process it starts
(notebook kernels, CLI subprocesses) run the network guard with interception on
(``RADPRIV_NET_INTERCEPT=1``): a non-loopback attempt is refused, or, where a test opted its host in,
recorded and stopped before anything is sent, and appended to ``RADPRIV_NET_LOG``. At the end the
session prints attempts per destination, refusals, interceptions and the proxy's bytes, and fails if a
byte reached the proxy or an attempt left loopback.
"""

import os
import socket
import tempfile
import threading
from collections import Counter

import pytest

from radpriv import paths

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

# Resolve the model store from the real environment before redirecting the cache.
os.environ["RADPRIV_MODELS"] = str(paths.models_dir())

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


class ProxyRecorder:
    """A TCP listener on 127.0.0.1 that records what a client sends it (a stand-in for a hospital proxy)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.bytes = 0
        self.connections = 0
        self.first = b""
        self._lock = threading.Lock()
        self._stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn):
        with self._lock:
            self.connections += 1
        conn.settimeout(2)
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                with self._lock:
                    self.bytes += len(data)
                    self.first = (self.first + data)[:200]
                conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                break
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self._stop = True
        self.sock.close()


_LOG = os.path.join(tempfile.mkdtemp(prefix="radpriv-net-"), "attempts.jsonl")
os.environ["RADPRIV_NET_INTERCEPT"] = "1"
os.environ["RADPRIV_NET_LOG"] = _LOG
os.environ.pop("RADPRIV_ALLOW_HOSTS", None)
PROXY = ProxyRecorder()
for _v in PROXY_VARS:
    os.environ[_v] = PROXY.url
os.environ.pop("NO_PROXY", None)
os.environ.pop("no_proxy", None)

from radpriv import netguard  # noqa: E402

netguard.install_process_guard()


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    os.environ["RADPRIV_CACHE"] = str(tmp_path_factory.mktemp("radpriv-cache"))
    yield


@pytest.fixture
def proxy_recorder():
    """The session's proxy recorder (the proxy variables point at it)."""
    return PROXY


def privacy_report() -> tuple[list[str], bool]:
    attempts = netguard.read_log(_LOG)
    lines = [f"privacy check: {len(attempts)} non-loopback network attempts in this session and its subprocesses "
             f"(log {_LOG}); proxy recorder {PROXY.url} received {PROXY.bytes} bytes over {PROXY.connections} "
             "connections"]
    per = Counter((f"{a['host']}:{a['port']}" if a["port"] is not None else a["host"],
                   "left the machine" if a["allowed"] and not a["intercepted"] else
                   "intercepted before sending" if a["intercepted"] else "refused before sending") for a in attempts)
    for (dest, what), n in sorted(per.items()):
        lines.append(f"  {n:4d} x {dest:40s} {what}")
    left = [a for a in attempts if a["allowed"] and not a["intercepted"]]
    ok = not left and PROXY.bytes == 0
    if PROXY.bytes:
        lines.append(f"  FAIL: {PROXY.bytes} bytes reached the proxy, starting {PROXY.first!r}")
    if left:
        lines.append(f"  FAIL: {len(left)} attempts left loopback")
    return lines, ok


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    lines, _ = privacy_report()
    for line in lines:
        terminalreporter.write_line(line)


def pytest_sessionfinish(session, exitstatus):
    import sys

    backends = sys.modules.get("radpriv.llm.backends")
    if backends is not None:  # close llama.cpp models before interpreter shutdown (no noise at exit)
        backends.unload_all()
    _, ok = privacy_report()
    if not ok:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def llama_server():
    """A real llama.cpp server (llama_cpp.server) on 127.0.0.1 serving SmolLM2-135M; its base URL."""
    import subprocess
    import sys
    import time
    import urllib.request

    from radpriv.models.registry import ModelNotFetchedError, model_path

    try:
        smol = model_path("smollm2-135m")
    except ModelNotFetchedError as exc:
        pytest.skip(f"SmolLM2 not fetched ({exc}); run `make models-test`")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(smol), "--host", "127.0.0.1",
                             "--port", str(port), "--n_ctx", "4096", "--logits_all", "true", "--model_alias",
                             "smollm2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the test's own probe: no proxy
    for _ in range(240):
        try:
            direct.open(url + "/v1/models", timeout=1)
            break
        except Exception:
            if proc.poll() is not None:
                pytest.fail("llama_cpp.server exited during start-up")
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("llama_cpp.server did not start within 120 s")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def enc_without_dropout(tmp_path_factory):
    """The MiniLM checkpoint with dropout off (its files linked, config edited), so two training runs differ
    only in how their batches were computed. Shared by the DP training and memory-budget tests."""
    import json

    from radpriv.models import registry

    enc = registry.get_model("minilm-l6").local_path
    if not enc.is_dir():
        pytest.skip("minilm-l6 not fetched (make models-test)")
    d = tmp_path_factory.mktemp("minilm-no-dropout")
    for f in enc.iterdir():
        if f.name != "config.json":
            (d / f.name).symlink_to(f)
    c = json.loads((enc / "config.json").read_text())
    c.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (d / "config.json").write_text(json.dumps(c))
    return str(d)


def assert_clean_reader_page(html: str, *dirs) -> None:
    """A reader's report holds results only: no stderr block (warnings, progress bars), no traceback, and no
    path of this machine (home, the environment, the checkout, the run's output folder)."""
    import sys

    from radpriv import paths

    # (an output element's attribute; the page's stylesheet names the same mime type in single quotes)
    assert 'data-mime-type="application/vnd.jupyter.stderr"' not in html, "stderr output in the reader's page"
    for needle in ("Traceback (most recent call last)", "TqdmWarning", "it/s]", "report/s]"):
        assert needle not in html, needle
    for d in (os.path.expanduser("~"), sys.prefix, str(paths.REPO), *map(str, dirs)):
        assert d not in html, f"machine path {d} in the reader's page"
