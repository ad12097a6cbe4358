"""Progress bars for the loops a person waits for: in a terminal or JupyterLab, never in a rendered report.

Every bar of the library comes from :func:`tqdm` here: tqdm's console bar (``tqdm.auto`` would warn about
missing ipywidgets into the report, with a path of the machine), switched off when ``TQDM_DISABLE`` is set. The
runner sets it in every notebook kernel it starts, so reports carry no bars; it prints one progress line per
finished cell in the terminal instead (:class:`radpriv.run.RunProgress`). An explicit ``disable=False`` does not
override the environment, unlike tqdm's own constructor.
"""

from __future__ import annotations

import os

from tqdm import tqdm as _tqdm


def disabled_by_env() -> bool:
    return os.environ.get("TQDM_DISABLE", "").strip().lower() in ("1", "true", "yes")


def tqdm(iterable=None, *args, disable: bool = False, **kwargs):
    """``tqdm.tqdm`` with ``disable`` also set by ``$TQDM_DISABLE``."""
    return _tqdm(iterable, *args, disable=bool(disable) or disabled_by_env(), **kwargs)
