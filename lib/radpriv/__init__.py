"""radpriv: privacy-preserving language models on radiology reports, reproducibly.

The library is small and shallow; a module's name says what lives in it:

- ``paths``      every path the project uses (package data, caches, reports)
- ``schemas``    label schemas (data files) and the one enum of label states
- ``data``       manifests, validated readers, synthetic corpora, splits
- ``baselines``  the rule-based (NegEx/ConText-style) labeler
- ``llm``        local LLM engine: model registry, backends, cache, network guard
- ``evaluate``   metrics, statistical tests, figures
- ``dp``         LoRA + DP-SGD training, privacy accounting
- ``audit``      memorization and membership-inference audits
- ``run``        papermill execution, HTML rendering, provenance
"""

import os as _os

__version__ = "0.1.0"

# OpenMP worker threads (llama.cpp's ggml and torch both use OpenMP) sleep while they wait instead of
# spinning: on a laptop shared with another CPU-heavy job, spinning workers steal the cores the busy
# threads need and two jobs slow each other several-fold (bench/llm_floor.py measures it). Set here,
# before either library is loaded, by every entry point (CLI, runner, notebook kernel); a value the user
# set is kept.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
