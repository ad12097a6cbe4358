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

__version__ = "0.1.0"
