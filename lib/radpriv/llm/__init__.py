"""Local LLM engine: prompts, backends, answer cache, labeling.

- ``prompts``    task instructions, templates and few-shot turns (a shared prefix evaluated once)
- ``backends``   llama.cpp in-process, any OpenAI-compatible server, a Hugging Face folder
- ``cache``      persistent, crash-safe SQLite answer cache
- ``engine``     ``label_frame(...)``: backends, prompts, batch runner (imported on first use)

Models come from :mod:`radpriv.models` (registry, sha256-verified paths); every URL passes
:mod:`radpriv.netguard` first.
"""

from __future__ import annotations

import importlib

from radpriv.llm.cache import AnswerCache, cache_key

# heavier modules owned by the engine: imported when first used
_LAZY = {"label_frame": "radpriv.llm.engine", "LabelRun": "radpriv.llm.engine"}

__all__ = ["AnswerCache", "cache_key", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'radpriv.llm' has no attribute {name!r}")
