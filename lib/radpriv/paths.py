"""Every path the project uses, as pathlib constants.

Paths are resolved from the package location or from environment variables, never from the
current working directory, so notebooks, tests and the CLI agree wherever they are started.

Environment variables
---------------------
RADPRIV_CACHE   root of all caches (default ``~/.cache/radpriv``): venvs, models, LLM answers,
                generated synthetic corpora.
RADPRIV_MODELS  where fetched model files live (default ``$RADPRIV_CACHE/models``).
RADPRIV_DATA    where generated corpora are written (default ``$RADPRIV_CACHE/data``).
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
#: Repository root when running from a checkout (lib/radpriv -> repo); may not exist when installed.
REPO = PACKAGE.parent.parent

SCHEMAS = PACKAGE / "schemas"
RULES = PACKAGE / "baselines" / "rules"
MANIFESTS = REPO / "data_manifests"
NOTEBOOKS = REPO / "notebooks"
REPORTS = REPO / "reports"
PARAMS = NOTEBOOKS / "params"
MPLSTYLE = PACKAGE / "radpriv.mplstyle"


def cache_dir() -> Path:
    return Path(os.environ.get("RADPRIV_CACHE", Path.home() / ".cache" / "radpriv")).expanduser()


def dp_runs_dir() -> Path:
    """Study 3's finished training runs and public-stage weights, keyed by everything that shapes them."""
    d = cache_dir() / "dp-runs"
    d.mkdir(parents=True, exist_ok=True)
    return d


def models_dir() -> Path:
    return Path(os.environ.get("RADPRIV_MODELS", cache_dir() / "models")).expanduser()


def data_dir() -> Path:
    return Path(os.environ.get("RADPRIV_DATA", cache_dir() / "data")).expanduser()


def llm_cache_path() -> Path:
    return cache_dir() / "llm_cache.sqlite"
