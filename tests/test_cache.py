"""Answer cache: keys, persistence, WAL, concurrent writers, crash safety."""

import json
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from radpriv import paths
from radpriv.llm.cache import AnswerCache, CacheError, cache_key

SCHEMA = {"type": "object", "properties": {"label": {"enum": ["a", "b"]}}}


def test_key_is_canonical_and_sensitive_to_every_input():
    k = cache_key("sha", "llama_cpp", "prompt", SCHEMA, {"temperature": 0.0, "max_tokens": 64})
    assert len(k) == 64
    assert k == cache_key("sha", "llama_cpp", "prompt", dict(reversed(list(SCHEMA.items()))),
                          {"max_tokens": 64, "temperature": np.float64(0.0)})
    variants = [("sha2", "llama_cpp", "prompt", SCHEMA, {"temperature": 0.0, "max_tokens": 64}),
                ("sha", "openai", "prompt", SCHEMA, {"temperature": 0.0, "max_tokens": 64}),
                ("sha", "llama_cpp", "prompt ", SCHEMA, {"temperature": 0.0, "max_tokens": 64}),
                ("sha", "llama_cpp", "prompt", {"type": "object"}, {"temperature": 0.0, "max_tokens": 64}),
                ("sha", "llama_cpp", "prompt", SCHEMA, {"temperature": 0.1, "max_tokens": 64}),
                ("sha", "llama_cpp", [{"role": "user", "content": "prompt"}], SCHEMA,
                 {"temperature": 0.0, "max_tokens": 64})]
    assert len({cache_key(*v) for v in variants} | {k}) == len(variants) + 1
    assert AnswerCache.key("sha", "llama_cpp", "prompt", SCHEMA, {"temperature": 0.0, "max_tokens": 64}) == k
    with pytest.raises(TypeError, match="cache key"):
        cache_key("sha", "b", "p", SCHEMA, {"x": object()})


def test_default_path_miss_put_hit_and_stats(tmp_path, monkeypatch):
    monkeypatch.setenv("RADPRIV_CACHE", str(tmp_path))
    c = AnswerCache()
    assert c.path == paths.llm_cache_path() == tmp_path / "llm_cache.sqlite"
    k = c.key("m", "b", "p", SCHEMA, {})
    assert c.get(k) is None and k not in c
    c.put(k, {"label": "a", "logprobs": [-0.1, -2.3]}, model_id="m", backend="b")
    assert c.get(k) == {"label": "a", "logprobs": [-0.1, -2.3]} and k in c
    c.put(k, {"label": "b"})  # replace
    assert c.get(k) == {"label": "b"}
    st = c.stats()
    assert (st["rows"], st["hits"], st["misses"], st["writes"]) == (1, 2, 1, 2)
    assert st["journal_mode"] == "wal" and st["path"] == str(c.path)
    with pytest.raises(TypeError, match="dicts"):
        c.put(k, ["not", "a", "dict"])
    with pytest.raises(ValueError):
        c.put(k, {"x": float("nan")})
    assert c.get(k) == {"label": "b"}  # failed puts changed nothing
    c.close()


def test_persists_across_instances_and_is_wal(tmp_path):
    path = tmp_path / "c.sqlite"
    with AnswerCache(path) as c:
        c.put_many([(f"k{i}", {"i": i}) for i in range(10)], model_id="m1")
        c.put("other", {"i": -1}, model_id="m2")
    with AnswerCache(path) as c:
        assert len(c) == 11 and c.get("k7") == {"i": 7}
        assert c.clear(model_id="m1") == 10 and len(c) == 1
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()


def test_concurrent_writers_from_threads(tmp_path):
    path = tmp_path / "c.sqlite"
    shared = AnswerCache(path)
    second = AnswerCache(path)  # another connection on the same file, like a second worker

    def writer(w):
        cache = shared if w % 2 else second
        for i in range(40):
            cache.put(f"{w}-{i}", {"w": w, "i": i, "text": "x" * 200})
            assert cache.get(f"{w}-{i}")["i"] == i

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with AnswerCache(path) as check:
        assert len(check) == 8 * 40
        assert all(check.get(f"{w}-{i}") == {"w": w, "i": i, "text": "x" * 200} for w in range(8) for i in range(40))
    shared.close()
    second.close()


def test_concurrent_writers_from_processes(tmp_path):
    path = tmp_path / "c.sqlite"
    code = textwrap.dedent("""
        import sys
        from radpriv.llm.cache import AnswerCache
        c = AnswerCache(sys.argv[1])
        for i in range(60):
            c.put(f"{sys.argv[2]}-{i}", {"i": i})
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), str(w)]) for w in range(3)]
    assert [p.wait() for p in procs] == [0, 0, 0]
    with AnswerCache(path) as c:
        assert len(c) == 180 and c.get("2-59") == {"i": 59}


def test_kill_9_mid_run_leaves_only_complete_rows(tmp_path):
    """A worker killed mid-run: every row it committed is readable and whole; a rerun completes the rest."""
    path = tmp_path / "c.sqlite"
    code = textwrap.dedent("""
        import sys
        from radpriv.llm.cache import AnswerCache
        c = AnswerCache(sys.argv[1])
        for i in range(100000):
            c.put(f"k{i}", {"i": i, "answer": {"label": "present", "text": "y" * (i % 500)}})
            print(i, flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    last = -1
    for line in proc.stdout:
        last = int(line)
        if last >= 50:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    with AnswerCache(path) as c:
        n = len(c)
        assert n >= last + 1  # everything reported as written is there
        for i in range(n):
            assert c.get(f"k{i}") == {"i": i, "answer": {"label": "present", "text": "y" * (i % 500)}}
        assert c.get(f"k{n}") is None  # contiguous: nothing half-written beyond
        # resume: fill in the rest, identical to an uninterrupted run
        for i in range(n, n + 20):
            if c.get(f"k{i}") is None:
                c.put(f"k{i}", {"i": i, "answer": {"label": "present", "text": "y" * (i % 500)}})
        assert len(c) == n + 20


def test_damaged_file_gives_a_clear_error(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(CacheError) as err:
        AnswerCache(bad)
    assert str(bad) in str(err.value) and "delete it" in str(err.value)


def test_pickles_by_path(tmp_path):
    c = AnswerCache(tmp_path / "c.sqlite")
    c.put("k", {"v": 1})
    c2 = pickle.loads(pickle.dumps(c))
    assert c2.path == c.path and c2.get("k") == {"v": 1}
    c.close()
    c2.close()


def test_values_round_trip_as_json(tmp_path):
    value = {"labels": {"effusion": "uncertain"}, "scores": [0.25, 0.5], "raw": "{\"a\": 1}", "unicode": "Ödem ✓",
             "n": None, "ok": True}
    with AnswerCache(tmp_path / "c.sqlite") as c:
        c.put("k", value)
        assert c.get("k") == value
        assert json.loads(json.dumps(c.get("k"))) == value


from hypothesis import given, settings, strategies as st  # noqa: E402

_json = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.text(max_size=8)
                     | st.floats(allow_nan=False, allow_infinity=False),
                     lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=5), inner, max_size=4),
                     max_leaves=12)


def _reorder(obj):
    if isinstance(obj, dict):
        return {k: _reorder(obj[k]) for k in reversed(list(obj))}
    if isinstance(obj, list):
        return [_reorder(v) for v in obj]
    return obj


@settings(max_examples=60, deadline=None)
@given(prompt=st.text(max_size=30), schema=_json, params=st.dictionaries(st.text(max_size=5), _json, max_size=4))
def test_key_ignores_dict_order_and_survives_json_round_trip(prompt, schema, params):
    k = cache_key("m", "b", prompt, schema, params)
    assert k == cache_key("m", "b", prompt, _reorder(schema), _reorder(params))
    assert k == cache_key("m", "b", prompt, json.loads(json.dumps(schema)), json.loads(json.dumps(params)))
