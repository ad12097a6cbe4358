"""Test-wide isolation: offline, headless, and a private cache per session.

Fetched model files are found where `make models` put them (RADPRIV_MODELS, resolved before the
cache is redirected); everything else a test writes (LLM answer cache, generated corpora) goes to a
temporary directory so tests never see results from an earlier run.
"""

import os

import pytest

from radpriv import paths

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

# Resolve the model store from the real environment before redirecting the cache.
os.environ["RADPRIV_MODELS"] = str(paths.models_dir())


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    os.environ["RADPRIV_CACHE"] = str(tmp_path_factory.mktemp("radpriv-cache"))
    yield
