"""Published figures of the three studies (``papers.yaml``: citation, data, models and the figures), shown beside
ours and clearly labelled."""

from __future__ import annotations

from functools import lru_cache

import yaml

from radpriv import paths


@lru_cache(maxsize=None)
def _all() -> dict:
    return yaml.safe_load((paths.PACKAGE / "papers.yaml").read_text(encoding="utf-8"))


def published(study: str) -> dict:
    """The published figures of ``cmr_llm_benchmark``, ``label_extraction`` or ``dp_lora``."""
    try:
        return _all()[study]
    except KeyError:
        raise KeyError(f"no published figures for {study!r}; known: {', '.join(_all())}") from None
