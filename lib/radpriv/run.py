"""Execute notebooks with papermill, render HTML reports, and record provenance.

Command line (what ``make reports`` calls)::

    python -m radpriv.run --profile default --all
    python -m radpriv.run --profile smoke 00_data_overview
    python -m radpriv.run 01_cmr_llm_benchmark --params my_params.yaml   # your data / models

For each notebook ``notebooks/<stem>.ipynb`` the parameters come from
``notebooks/params/<stem>.<profile>.yaml`` (lists and dicts go through YAML, never ``-p``), then from
``--params FILE`` on top. Output:

- ``reports/<stem>.html``          the reader's report (no code cells)
- ``reports/code/<stem>.html``     the reviewer's report (with code)
- ``reports/_executed/<stem>.ipynb`` the executed notebook
- ``reports/<stem>.run.json``      profile, parameters, status, wall time, seconds of each code cell
- ``reports/timings.json``         the latest run of every notebook and profile (smoke/default/full side by side)
- ``reports/index.html``           the front page (:mod:`radpriv.frontpage`): per study its question, status, run
                                   time, headline figures beside the published ones, one figure and links to
                                   both reports; a timing table beside the published budgets
                                   (``notebooks/params/timings.yaml``)

While a notebook runs, one line per completed code cell goes to the runner's stderr (never into a report):
``cell n of m``, elapsed time and the time expected from the last run of the same notebook and profile (else
the reference budget). ``--quiet`` or ``RADPRIV_PROGRESS=0`` turns it off.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import hashlib
import html
import json
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import yaml

from radpriv import frontpage, paths
from radpriv.frontpage import fmt_duration, fmt_gb
from radpriv.hashing import file_sha256
from radpriv.kernel import PEAK_ENV

KERNEL_NAME = "radpriv"
PROFILES = ("smoke", "default", "full")
#: Notebooks in report order; `--all` runs those that exist.
NOTEBOOK_ORDER = (
    "00_data_overview",
    "01_cmr_llm_benchmark",
    "02_label_extraction",
    "03_dp_lora",
    "04_privacy_audit",
)
#: Packages whose versions every report states.
KEY_PACKAGES = (
    "radpriv", "torch", "transformers", "peft", "opacus", "dp-accounting", "llama_cpp_python",
    "numpy", "pandas", "scipy", "scikit-learn", "statsmodels", "seaborn", "matplotlib", "papermill",
)

_T0 = time.time()


# ---------------------------------------------------------------------------------------------
# provenance
# ---------------------------------------------------------------------------------------------
def package_versions(names: Iterable[str] = KEY_PACKAGES) -> dict[str, str]:
    out = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = "not installed"
    return out


def _dataset_row(ds: Any) -> dict:
    if hasattr(ds, "describe"):
        d = dict(ds.describe())
    else:
        d = {"name": getattr(ds, "name", str(ds)), "sha256": getattr(ds, "sha256", "")}
    if hasattr(ds, "frame"):
        d.setdefault("rows", len(ds.frame))
    return d


def _model_row(m: Any) -> dict:
    """A model as (name, kind, id/sha256, path/endpoint); accepts a ModelSpec, a path, or a dict."""
    if isinstance(m, Mapping):
        return dict(m)
    if isinstance(m, (str, Path)) and Path(m).exists():
        p = Path(m)
        sha = file_sha256(p) if p.is_file() else ""
        return {"name": p.name, "path": str(p), "sha256": sha}
    row = {}
    for attr in ("name", "kind", "sha256", "model_id", "path", "endpoint", "served_model"):
        v = getattr(m, attr, None)
        if v:
            row[attr] = str(v)
    return row or {"name": str(m)}


def provenance(params: Mapping[str, Any] | None = None, datasets: Iterable[Any] = (),
               models: Iterable[Any] = (), extra: Mapping[str, Any] | None = None) -> dict:
    """Everything needed to reproduce a result: parameters, versions, data and model hashes, time."""
    return {
        "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": round(time.time() - _T0, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "parameters": dict(params or {}),
        "packages": package_versions(),
        "datasets": [_dataset_row(d) for d in datasets],
        "models": [_model_row(m) for m in models],
        "network": network_record(),
        **(dict(extra) if extra else {}),
    }


def network_record() -> dict:
    """What the network guard of this process allowed and saw (the report states it)."""
    from radpriv import netguard

    g = netguard.process_guard()
    if g is None:
        return {"guard": "not installed in this process" + (" (a guard block is active)" if netguard.active() else "")}
    return {"guard": "on (loopback only" + (f" + {', '.join(sorted(g.allow))}" if g.allow else "") + ")",
            "non_loopback_attempts": len(g.non_loopback), "refused": len(g.refused),
            "left_the_machine": len(g.left_machine)}


def _table(rows: list[dict]) -> str:
    if not rows:
        return "<p><i>none</i></p>"
    cols: list[str] = []
    for r in rows:
        cols += [c for c in r if c not in cols]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td><code>{html.escape(str(r.get(c, '')))}</code></td>" for c in cols) + "</tr>"
        for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def provenance_html(prov: Mapping[str, Any]) -> str:
    params = [{"parameter": k, "value": json.dumps(v, default=str)} for k, v in prov["parameters"].items()]
    pkgs = [{"package": k, "version": v} for k, v in prov["packages"].items()]
    return (
        "<h3>Provenance</h3>"
        f"<p>Generated {html.escape(prov['generated'])} · wall time {prov['wall_time_s']} s · "
        f"Python {html.escape(prov['python'])} on {html.escape(prov['platform'])} "
        f"({prov['cpu_count']} CPUs)</p>"
        "<h4>Parameters</h4>" + _table(params)
        + "<h4>Data</h4>" + _table(prov["datasets"])
        + "<h4>Models</h4>" + _table(prov["models"])
        + "<h4>Network</h4>" + _table([{"network guard": k, "": v} for k, v in prov.get("network", {}).items()])
        + "<h4>Package versions</h4>" + _table(pkgs)
    )


def show_provenance(params: Mapping[str, Any] | None = None, datasets: Iterable[Any] = (),
                    models: Iterable[Any] = (), extra: Mapping[str, Any] | None = None,
                    save_to: str | Path | None = None) -> dict:
    """Display the provenance block in a notebook (and optionally save it as JSON)."""
    prov = provenance(params, datasets, models, extra)
    try:
        from IPython.display import HTML, display

        display(HTML(provenance_html(prov)))
    except ImportError:  # pragma: no cover - outside IPython
        print(json.dumps(prov, indent=2, default=str))
    if save_to:
        Path(save_to).write_text(json.dumps(prov, indent=2, default=str), encoding="utf-8")
    return prov


# ---------------------------------------------------------------------------------------------
# execution + rendering
# ---------------------------------------------------------------------------------------------
class ParamError(ValueError):
    """A run parameter that the notebook does not have, or of the wrong type."""


#: parameters whose string values may be paths of the user's files (resolved against the current directory)
PATH_PARAMS = ("manifest", "manifests", "schema", "rules", "encoder", "image_manifest", "models", "lm_model",
               "teacher_model", "examples_from", "resnet_weights")
_PATH_SUFFIXES = (".yaml", ".yml", ".csv", ".tsv", ".gguf", ".json")


def notebook_parameters(stem: str) -> dict[str, Any]:
    """The notebook's parameters and their defaults: the assignments of its cell tagged ``parameters``."""
    import ast

    import nbformat

    nb = nbformat.read(str(paths.NOTEBOOKS / f"{stem}.ipynb"), as_version=4)
    out: dict[str, Any] = {}
    for cell in nb.cells:
        if cell.cell_type != "code" or "parameters" not in cell.get("metadata", {}).get("tags", []):
            continue
        for node in ast.parse(cell.source).body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                try:
                    out[node.targets[0].id] = ast.literal_eval(node.value)
                except ValueError:
                    out[node.targets[0].id] = ast.get_source_segment(cell.source, node.value)
    return out


def _type_name(v: Any) -> str:
    return {bool: "true/false", int: "a whole number", float: "a number", str: "a string", list: "a list",
            dict: "a mapping"}.get(type(v), type(v).__name__)


def _type_ok(default: Any, value: Any) -> bool:
    if default is None or value is None:
        return True   # None means "not set": either side may be
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, int):
        return isinstance(value, int)
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    if isinstance(default, dict):
        return isinstance(value, dict)
    if isinstance(default, str):
        return isinstance(value, str)
    return True


def validate_params(stem: str, params: Mapping[str, Any], sources: Mapping[str, str] | None = None) -> None:
    """Refuse parameters the notebook does not have and values of the wrong type, naming the source file,
    the parameter, what was expected, and the valid names."""
    import difflib

    known = notebook_parameters(stem)
    sources = sources or {}
    for name, value in params.items():
        where = sources.get(name, "parameters")
        if name == "profile" and name not in known:  # the runner always passes it
            continue
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=1)
            raise ParamError(f"{where}: notebook {stem} has no parameter {name!r}"
                             + (f"; did you mean {close[0]!r}?" if close else "")
                             + f" (its parameters: {', '.join(known)})")
        if not _type_ok(known[name], value):
            example = json.dumps(known[name], default=str)
            raise ParamError(f"{where}: parameter {name!r} of {stem} must be {_type_name(known[name])} (default "
                             f"{example}), got {_type_name(value)} {json.dumps(value, default=str)}")


def _resolve_paths(value: Any, cwd: Path) -> Any:
    if isinstance(value, list):
        return [_resolve_paths(v, cwd) for v in value]
    if isinstance(value, dict):
        return {k: _resolve_paths(v, cwd) for k, v in value.items()}
    if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
        looks_like_path = "/" in value or value.lower().endswith(_PATH_SUFFIXES) or value.startswith("~")
        if looks_like_path:
            return str((cwd / Path(value).expanduser()).resolve())
    if isinstance(value, str) and value.startswith("~"):
        return str(Path(value).expanduser())
    return value


def _yaml_mapping(path: Path, error: type[Exception], expected: str) -> dict:
    """A YAML file that must hold a mapping (empty: {}); ``error`` names the file and what is wrong."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(doc, dict):
        raise error(f"{path}: {expected}, got {type(doc).__name__}")
    return doc


def load_params(stem: str, profile: str = "default", params_file: str | Path | None = None,
                overrides: Mapping[str, Any] | None = None, cwd: str | Path | None = None,
                validate: bool = True) -> dict:
    """The profile's parameters, then ``params_file`` on top, then ``overrides``: validated against the
    notebook's parameters cell, with relative paths of the user's (params file and overrides) resolved
    against ``cwd`` (default: the current directory, where the user ran ``make``)."""
    if profile not in PROFILES:
        raise ParamError(f"profile {profile!r} is not one of {', '.join(PROFILES)}")
    cwd = Path(cwd or os.getcwd())
    params: dict[str, Any] = {}
    sources: dict[str, str] = {}
    base = paths.PARAMS / f"{stem}.{profile}.yaml"
    for f in (base, params_file):
        if f is None:
            continue
        f = Path(f) if f == base else (cwd / Path(f).expanduser())
        if not f.exists():
            if f == base:
                continue
            raise ParamError(f"parameter file {f} does not exist; write a YAML mapping of name: value")
        doc = _yaml_mapping(f, ParamError, "a parameter file must be a mapping of name: value")
        if f != base:
            doc = {k: (_resolve_paths(v, cwd) if k in PATH_PARAMS else v) for k, v in doc.items()}
        params.update(doc)
        sources.update({k: str(f) for k in doc})
    params.setdefault("profile", profile)
    for k, v in (overrides or {}).items():
        params[k] = _resolve_paths(v, cwd) if k in PATH_PARAMS else v
        sources[k] = f"-p {k}"
    if validate:
        validate_params(stem, params, sources)
    return params


def render_html(executed: Path, out: Path, with_code: bool = False) -> Path:
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(executed), as_version=4)
    if not with_code:  # the reader's page: results only; warnings and progress (stderr) stay in the reviewer's
        for cell in nb.cells:
            if cell.get("outputs"):
                cell.outputs = [o for o in cell.outputs if not (o.get("output_type") == "stream"
                                                                and o.get("name") == "stderr")]
    exporter = HTMLExporter(template_name="lab")
    exporter.exclude_input = not with_code
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    body, _ = exporter.from_notebook_node(nb)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(body, encoding="utf-8")
    return out


def ensure_kernel(name: str = KERNEL_NAME) -> Path:
    """Install (or repair) the ``radpriv`` kernel spec in this environment: ``python -m radpriv.kernel``,
    an IPython kernel that installs the network guard before any notebook code runs."""
    import tempfile

    from jupyter_client.kernelspec import KernelSpecManager

    argv = [sys.executable, "-m", "radpriv.kernel", "-f", "{connection_file}"]
    ksm = KernelSpecManager()
    try:
        spec = ksm.get_kernel_spec(name)
        if spec.argv == argv:
            return Path(spec.resource_dir)
    except Exception:  # not installed yet (jupyter_client raises NoSuchKernel)
        pass
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "kernel.json").write_text(json.dumps({
            "argv": argv, "display_name": "radpriv (Python 3, network-guarded)", "language": "python",
            "metadata": {"debugger": False}}), encoding="utf-8")
        return Path(ksm.install_kernel_spec(tmp, name, prefix=sys.prefix))  # (always replaces an existing spec)


RESULTS_ENV = "RADPRIV_RESULTS_DIR"


def _jsonable(value: Any) -> Any:
    """Plain JSON types from pandas/numpy values (frames as lists of row dicts; NaN as null)."""
    import math

    import numpy as np
    import pandas as pd

    if isinstance(value, pd.DataFrame):
        return [_jsonable(r) for r in value.to_dict(orient="records")]
    if isinstance(value, pd.Series):
        return _jsonable(value.to_dict())
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def save_results(stem: str, results: Mapping[str, Any]) -> Path:
    """Write a notebook's key results *and the inputs they were computed from* (reference labels, each
    system's answers, ...) as ``<out>/_results/<stem>.json``, so a test or a reader can recompute a headline
    figure independently. The runner names the folder (``RADPRIV_RESULTS_DIR``); run interactively the
    results go to ``reports/_results``."""
    out = Path(os.environ.get(RESULTS_ENV) or paths.REPORTS / "_results") / f"{stem}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(_jsonable(dict(results)), indent=1, allow_nan=False), encoding="utf-8")
    return out


def load_results(stem: str, out_dir: str | Path | None = None) -> dict:
    """The results a notebook saved with :func:`save_results` in its last run into ``out_dir``."""
    path = Path(out_dir or paths.REPORTS) / "_results" / f"{stem}.json"
    return json.loads(path.read_text(encoding="utf-8"))


@contextlib.contextmanager
def _kernel_env(allow_hosts, results_dir: Path | None = None, peak_file: Path | None = None) -> Iterator[None]:
    """Environment the kernel inherits: the notebook's opted-in hosts, where it saves its results (see
    :func:`save_results`), no progress bars in the report."""
    saved = {k: os.environ.get(k) for k in ("RADPRIV_ALLOW_HOSTS", "TQDM_DISABLE", RESULTS_ENV, PEAK_ENV)}
    if peak_file is not None:
        os.environ[PEAK_ENV] = str(Path(peak_file).resolve())
    if results_dir is not None:
        os.environ[RESULTS_ENV] = str(Path(results_dir).resolve())  # absolute: the kernel runs in notebooks/
    hosts = [h for h in os.environ.get("RADPRIV_ALLOW_HOSTS", "").replace(",", " ").split()]
    hosts += [str(h) for h in (allow_hosts or ())]
    if hosts:
        os.environ["RADPRIV_ALLOW_HOSTS"] = ",".join(dict.fromkeys(hosts))
    os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars belong in a terminal/lab, not in the HTML report
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ---------------------------------------------------------------------------------------------
# progress in the terminal + timings (never in the reports)
# ---------------------------------------------------------------------------------------------
PROGRESS_ENV = "RADPRIV_PROGRESS"
TIMINGS_FILE = "timings.json"
#: profile keys of notebooks/params/timings.yaml: the three profiles, and `default` re-run with a warm cache
REFERENCE_KEYS = PROFILES + ("cached_default",)
REFERENCE_MEASURED_KEYS = ("date", "machine", "cpu_count", "note")
REFERENCE_LABEL = "reference, 2 idle cores"
ENGINE_NAME = "radpriv-progress"

class TimingsError(ValueError):
    """notebooks/params/timings.yaml (the published reference budgets) is malformed."""


def _parse_seconds(value: Any) -> float | None:
    """A budget as seconds: a number, or ``"m:ss"`` / ``"h:mm:ss"``; None stays None (not measured)."""
    import re

    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    if isinstance(value, str) and re.fullmatch(r"\d+(:[0-5]\d){1,2}", value.strip()):
        secs = 0
        for part in value.strip().split(":"):
            secs = secs * 60 + int(part)
        return float(secs)
    raise ValueError(f"must be seconds (a number >= 0, or \"m:ss\"/\"h:mm:ss\") or null, "
                     f"got {json.dumps(value, default=str)}")


def _timings_models():
    """The pydantic schema of notebooks/params/timings.yaml (built on first use: pydantic stays out of imports)."""
    from typing import Annotated

    from pydantic import BaseModel, BeforeValidator, ConfigDict

    Seconds = Annotated[float | None, BeforeValidator(_parse_seconds)]
    Text = Annotated[str | None, BeforeValidator(lambda v: None if v is None else str(v))]

    # (pydantic schemas of timings.yaml: field lists of the same shape, declarations rather than logic)
    class Budgets(BaseModel):
        model_config = ConfigDict(extra="forbid")
        smoke: Seconds = None
        default: Seconds = None
        full: Seconds = None
        cached_default: Seconds = None

    class Measured(BaseModel):
        model_config = ConfigDict(extra="forbid")
        date: Text = None
        machine: Text = None
        cpu_count: Text = None
        note: Text = None

    class TimingsFile(BaseModel):
        model_config = ConfigDict(extra="forbid")
        measured: Measured = Measured()
        notebooks: dict[str, Budgets] = {}

    assert tuple(Budgets.model_fields) == REFERENCE_KEYS and tuple(Measured.model_fields) == REFERENCE_MEASURED_KEYS
    return TimingsFile


def _timings_problem(path: Path, err: dict) -> str:
    """One pydantic error of timings.yaml as ``<file>: <key path>: <what is wrong>``."""
    loc = [str(x) for x in err["loc"]]
    where = ".".join(loc)
    known = {1: "measured, notebooks", 2: ", ".join(REFERENCE_MEASURED_KEYS), 3: ", ".join(REFERENCE_KEYS)}
    if err["type"] == "extra_forbidden":
        if len(loc) == 1:
            return f"{path}: unknown key {loc[0]!r} (known: {known[1]})"
        what = "unknown profile" if loc[0] == "notebooks" else "unknown key"
        return f"{path}: {where}: {what} (known: {known[len(loc)]})"
    if err["type"] in ("model_type", "dict_type", "model_attributes_type"):
        hint = {("measured",): f"a mapping of {known[2]}",
                ("notebooks",): "a mapping of notebook stem -> budgets per profile"}.get(
            tuple(loc), "a mapping of profile -> seconds, e.g. {smoke: 150, default: null}")
        return f"{path}: {where}: must be {hint}"
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{path}: {where}: {msg}"


def reference_timings(path: str | Path | None = None) -> dict:
    """The published reference wall times (``notebooks/params/timings.yaml``), validated.

    Returns ``{"path", "measured": {date, machine, cpu_count, note}, "notebooks": {stem: {profile: seconds or
    None}}}`` with every notebook of NOTEBOOK_ORDER and every key of REFERENCE_KEYS present (None: not
    measured). A missing default file gives all None; a malformed one raises :class:`TimingsError` naming the
    file and the key."""
    from pydantic import ValidationError

    explicit = path is not None
    path = Path(path) if explicit else paths.PARAMS / "timings.yaml"
    if not path.exists():
        if explicit:
            raise TimingsError(f"{path}: no such file")
        doc: dict = {}
    else:
        doc = _yaml_mapping(path, TimingsError, "must be a mapping with the keys measured and notebooks")
    doc = {k: ({} if v is None else v) for k, v in doc.items()}
    if isinstance(doc.get("notebooks"), dict):
        doc["notebooks"] = {k: ({} if v is None else v) for k, v in doc["notebooks"].items()}
    try:
        parsed = _timings_models().model_validate(doc)
    except ValidationError as exc:
        raise TimingsError(_timings_problem(path, exc.errors()[0])) from None
    known = list(NOTEBOOK_ORDER) + sorted(p.stem for p in paths.NOTEBOOKS.glob("*.ipynb")
                                          if p.stem not in NOTEBOOK_ORDER)
    for stem in parsed.notebooks:
        if stem not in known:
            raise TimingsError(f"{path}: notebooks.{stem}: unknown notebook (known: {', '.join(known)})")
    empty = {k: None for k in REFERENCE_KEYS}
    return {"path": str(path), "measured": parsed.measured.model_dump(),
            "notebooks": {**{s: dict(empty) for s in NOTEBOOK_ORDER},
                          **{s: b.model_dump() for s, b in parsed.notebooks.items()}}}


def _reference_or_warn(path: str | Path | None = None) -> dict | None:
    """The reference budgets, or None after a warning on stderr (a typo in the budgets must not stop a run)."""
    try:
        return reference_timings(path)
    except TimingsError as exc:
        print(f"warning: reference timings ignored: {exc}", file=sys.stderr, flush=True)
        return None


def read_timings(out_dir: str | Path | None = None) -> dict:
    """``<out>/timings.json``: the latest run per notebook and profile ({} if none or unreadable)."""
    path = Path(out_dir or paths.REPORTS) / TIMINGS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _update_timings(out_dir: Path, record: Mapping[str, Any], params_sha: str) -> Path:
    data = read_timings(out_dir)
    entry = {"wall_time_s": record["wall_time_s"], "started": record["started"], "status": record["status"],
             "cpu_count": record.get("cpu_count"), "cells_s": list(record.get("cells_s") or []),
             "peak_rss_gb": record.get("peak_rss_gb"),
             "parameters_sha256": params_sha}
    per_stem = data.get(record["notebook"])
    if not isinstance(per_stem, dict):
        per_stem = data[record["notebook"]] = {}
    per_stem[record["profile"]] = entry
    path = out_dir / TIMINGS_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)
    return path


def _params_sha(params: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()


def expected_time(stem: str, profile: str, out_dir: str | Path | None = None,
                  params: Mapping[str, Any] | None = None, reference: Mapping[str, Any] | None = None) -> dict | None:
    """What a run of ``stem`` with ``profile`` is expected to take: the last successful run of the same
    notebook and profile in ``out_dir`` (its per-cell seconds too), else the published reference budget.
    ``{"total_s", "cells_s" (list or None), "source" (words for the progress line)}``, or None."""
    out_dir = Path(out_dir or paths.REPORTS)
    last = (read_timings(out_dir).get(stem) or {}).get(profile)
    if not isinstance(last, dict):  # a run record from before timings.json existed
        try:
            rec = json.loads((out_dir / f"{stem}.run.json").read_text(encoding="utf-8"))
            last = rec if rec.get("profile") == profile else None
        except (OSError, ValueError):
            last = None
    if isinstance(last, dict) and last.get("status") == "ok" and last.get("wall_time_s") is not None:
        source = "from the last run"
        sha = last.get("parameters_sha256")
        if params is not None and sha and sha != _params_sha(params):
            source += " (other parameters)"
        cells = last.get("cells_s")
        return {"total_s": float(last["wall_time_s"]), "cells_s": cells if isinstance(cells, list) else None,
                "source": source}
    if reference is None:
        reference = _reference_or_warn()
    ref = ((reference or {}).get("notebooks") or {}).get(stem, {}).get(profile)
    if ref is not None:
        return {"total_s": float(ref), "cells_s": None, "source": f"({REFERENCE_LABEL})"}
    return None


def _progress_stream(quiet: bool | None = None):
    """Where progress goes: the runner's stderr, unless ``quiet`` (or, when quiet is None, RADPRIV_PROGRESS=0)."""
    if quiet is None:
        quiet = os.environ.get(PROGRESS_ENV, "1").strip().lower() in ("0", "false", "no", "off")
    return None if quiet else sys.stderr


class RunProgress:
    """Times each code cell of a papermill run and, given a stream, prints one line per completed code cell:
    notebook, ``cell n of m``, elapsed wall time and the expected total (and what is left of it). On a TTY the
    line is rewritten in place; otherwise (CI logs, files) every line is printed. Counts the notebook's own code
    cells (papermill's injected-parameters cell is neither counted nor timed)."""

    def __init__(self, stem: str, profile: str, n_cells: int, expected: Mapping[str, Any] | None = None,
                 stream=None, t0: float | None = None):
        self.stem, self.profile, self.n = stem, profile, n_cells
        self.expected = dict(expected) if expected else None
        self.stream = stream
        self.t0 = time.time() if t0 is None else t0
        self.cells_s: list[float] = []
        self._index: dict[int, int] = {}
        self._started: dict[int, float] = {}
        self._open_line = False
        try:
            self.tty = bool(stream is not None and stream.isatty())
        except (AttributeError, ValueError, OSError):
            self.tty = False

    # -- papermill hooks ----------------------------------------------------------------------
    def attach(self, nb_man) -> None:
        """Wrap ``nb_man.cell_start``/``cell_complete`` (papermill's NotebookExecutionManager)."""
        self._index = {}
        for i, cell in enumerate(nb_man.nb.cells):
            tags = cell.get("metadata", {}).get("tags", [])
            if cell.get("cell_type") == "code" and "injected-parameters" not in tags:
                self._index[i] = len(self._index)
        self.n = len(self._index)
        start, complete = nb_man.cell_start, nb_man.cell_complete

        def cell_start(cell, cell_index=None, **kwargs):
            self._started[cell_index] = time.monotonic()
            return start(cell, cell_index, **kwargs)

        def cell_complete(cell, cell_index=None, **kwargs):
            end = time.monotonic()
            result = complete(cell, cell_index=cell_index, **kwargs)
            if cell_index in self._index and cell_index in self._started:
                failed = (cell.get("metadata", {}).get("papermill") or {}).get("status") == "failed"
                self.cell_done(end - self._started[cell_index], failed=failed)
            return result

        nb_man.cell_start, nb_man.cell_complete = cell_start, cell_complete

    # -- lines --------------------------------------------------------------------------------
    def _expectation(self, elapsed: float, done: int) -> str:
        exp = self.expected
        if not exp:
            return "no earlier run or reference budget to compare"
        text = f"expected ~{fmt_duration(exp['total_s'])} {exp['source']}"
        if done >= self.n:
            return text
        cells = exp.get("cells_s")
        if cells and len(cells) == self.n:  # the same cells last time: what they took
            return text + f", ~{fmt_duration(sum(float(c) for c in cells[done:]))} left"
        left = exp["total_s"] - elapsed
        return text + (f", ~{fmt_duration(left)} left" if left >= 0 else f", {fmt_duration(-left)} over it")

    def start_line(self) -> str:
        return f"{self.stem} ({self.profile}): starting, {self.n} code cells; " + self._expectation(0.0, self.n)

    def line(self, failed: bool = False) -> str:
        done = len(self.cells_s)
        elapsed = time.time() - self.t0
        what = f"cell {done} of {self.n} failed" if failed else f"cell {done} of {self.n}"
        return f"{self.stem} ({self.profile}): {what}, {fmt_duration(elapsed)} elapsed; " + \
            self._expectation(elapsed, done)

    def emit(self, text: str) -> None:
        if self.stream is None:
            return
        try:
            if self.tty:
                import shutil

                width = shutil.get_terminal_size((100, 20)).columns - 1
                self.stream.write("\r" + text[:max(width, 20)] + "\x1b[K")
                self._open_line = True
            else:
                self.stream.write(text + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stderr never stops the run
            self.stream = None

    def cell_done(self, seconds: float, failed: bool = False) -> None:
        self.cells_s.append(round(seconds, 2))
        self.emit(self.line(failed))

    def close(self) -> None:
        """End a line rewritten in place (TTY)."""
        if self._open_line and self.stream is not None:
            try:
                self.stream.write("\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass
        self._open_line = False


def _register_engine() -> str:
    """Register (once) the papermill engine that reports cell progress to a :class:`RunProgress`."""
    global _PROGRESS_ENGINE
    from papermill.engines import NBClientEngine, papermill_engines

    if _PROGRESS_ENGINE is None:
        class ProgressEngine(NBClientEngine):
            """papermill's nbclient engine, with the manager's cell callbacks wrapped by a RunProgress."""

            @classmethod
            def execute_managed_notebook(cls, nb_man, kernel_name, radpriv_progress=None, **kwargs):
                if radpriv_progress is not None:
                    radpriv_progress.attach(nb_man)
                return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

        _PROGRESS_ENGINE = ProgressEngine
    papermill_engines.register(ENGINE_NAME, _PROGRESS_ENGINE)
    return ENGINE_NAME


_PROGRESS_ENGINE = None
_IPC_KERNEL_MANAGER = None


def _ipc_kernel_manager() -> type:
    """The kernel manager of every notebook run: jupyter_client's, talking to the kernel over Unix domain
    sockets in a fresh private directory instead of TCP on 127.0.0.1 (the default), so no other local user or
    program can reach the kernel's ports, and ipykernel has no reason to warn that code and outputs travel
    unencrypted over TCP."""
    global _IPC_KERNEL_MANAGER
    if _IPC_KERNEL_MANAGER is None:
        import tempfile

        from jupyter_client.manager import AsyncKernelManager
        from traitlets import CaselessStrEnum, default

        class IPCKernelManager(AsyncKernelManager):
            transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)

            @default("ip")
            def _ip_default(self) -> str:  # an absolute, short path (socket paths are limited to ~100 bytes)
                if self.transport != "ipc":
                    return super()._ip_default()
                return str(Path(tempfile.mkdtemp(prefix="radpriv-kernel-")) / "k")

            def cleanup_ipc_files(self) -> None:
                super().cleanup_ipc_files()
                if self.transport == "ipc":
                    try:
                        Path(self.ip).parent.rmdir()
                    except OSError:
                        pass

        _IPC_KERNEL_MANAGER = IPCKernelManager
    return _IPC_KERNEL_MANAGER


def _count_code_cells(nb_path: Path) -> int:
    import nbformat

    nb = nbformat.read(str(nb_path), as_version=4)
    return sum(1 for c in nb.cells
               if c.cell_type == "code" and "injected-parameters" not in c.get("metadata", {}).get("tags", []))


def _user_files(value: Any) -> list[str]:
    """Parameter values that name files on disk (a user's manifest, schema, rules, model): their contents,
    and the data they point to, are outside what :func:`inputs_digest` can vouch for."""
    if isinstance(value, Mapping):
        return [f for v in value.values() for f in _user_files(v)]
    if isinstance(value, (list, tuple)):
        return [f for v in value for f in _user_files(v)]
    if isinstance(value, str) and ("/" in value or value.endswith((".yaml", ".yml", ".csv", ".gguf"))):
        return [value] if Path(value).expanduser().exists() else []
    return []


def inputs_digest(nb_in: Path, params: Mapping[str, Any]) -> str | None:
    """sha256 over everything a notebook's results depend on when it runs on bundled data and models: the
    notebook, its resolved parameters, every file of the radpriv package (code, schemas, manifests' pins,
    the model registry with its sha256 pins, phrase banks), the user model registry, the installed
    distributions and their versions, Python and the machine's architecture, whether CUDA is present, and the
    RADPRIV_*/MIMIC_CXR_ROOT settings. None when a parameter names a file on disk (a user's own inputs): such
    runs are always executed."""
    if _user_files(dict(params)):
        return None
    h = hashlib.sha256()

    def add(label: str, data: bytes) -> None:
        h.update(label.encode() + b"\0" + hashlib.sha256(data).digest())

    add("notebook", nb_in.read_bytes())
    add("params", json.dumps(params, sort_keys=True, default=str).encode())
    pkg = Path(__file__).resolve().parent
    for f in sorted(pkg.rglob("*")):
        if f.is_file() and "__pycache__" not in f.parts:
            add(str(f.relative_to(pkg)), f.read_bytes())
    from radpriv.models.registry import user_registry_path

    reg = user_registry_path()
    add("user registry", reg.read_bytes() if reg.exists() else b"")
    dists = sorted(f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions())
    add("distributions", "\n".join(dists).encode())
    env = {k: v for k, v in os.environ.items() if (k.startswith("RADPRIV_") and k not in (PROGRESS_ENV, PEAK_ENV,
           RESULTS_ENV)) or k in ("MIMIC_CXR_ROOT", "CUDA_VISIBLE_DEVICES")}
    add("platform", json.dumps([platform.python_version(), platform.machine(), env], sort_keys=True).encode())
    return h.hexdigest()


def _reusable(out_dir: Path, stem: str, digest: str | None) -> dict | None:
    """The last successful run record of ``stem`` in ``out_dir`` computed from the same inputs, if its
    executed notebook is still there."""
    if digest is None:
        return None
    try:
        rec = json.loads((out_dir / f"{stem}.run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if rec.get("status") != "ok" or rec.get("inputs_sha256") != digest:
        return None
    return rec if (out_dir / "_executed" / f"{stem}.ipynb").exists() else None


def execute(stem: str, profile: str = "default", params_file: str | Path | None = None,
            overrides: Mapping[str, Any] | None = None, out_dir: str | Path | None = None,
            kernel_name: str = KERNEL_NAME, quiet: bool | None = None, reuse: bool = True) -> dict:
    """Run ``notebooks/<stem>.ipynb`` with papermill and render its HTML reports. Returns the run record.

    While it runs, one progress line per completed code cell goes to stderr (never into the reports), with the
    time expected from the last run of the same notebook and profile in ``out_dir``, else from the published
    reference (:func:`reference_timings`); ``quiet=True`` (or, when quiet is None, ``RADPRIV_PROGRESS=0``)
    turns it off. The run record (``<out>/<stem>.run.json``) holds the seconds of each code cell (``cells_s``),
    and ``<out>/timings.json`` keeps the latest run of every notebook and profile side by side.

    ``reuse``: when the last successful run in ``out_dir`` had the same :func:`inputs_digest` (same notebook,
    parameters, package files, installed versions, ...), its executed notebook is rendered again instead of
    being re-executed (the record says ``reused_from``). A run on a user's own files is always executed."""
    import papermill as pm

    out_dir = Path(out_dir or paths.REPORTS)
    nb_in = paths.NOTEBOOKS / f"{stem}.ipynb"
    if not nb_in.exists():
        known = ", ".join(p.stem for p in sorted(paths.NOTEBOOKS.glob("*.ipynb")))
        raise FileNotFoundError(f"no notebook {nb_in}; known notebooks: {known}")
    params = load_params(stem, profile, params_file, overrides)  # refused here, before a kernel starts
    executed = out_dir / "_executed" / f"{stem}.ipynb"
    executed.parent.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"notebook": stem, "profile": profile, "parameters": params,
                              "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                              "cpu_count": os.cpu_count()}
    t0 = time.time()
    digest = inputs_digest(nb_in, params)
    record["inputs_sha256"] = digest
    previous = _reusable(out_dir, stem, digest) if reuse else None
    if previous is not None:
        record.update({k: previous.get(k) for k in ("status", "peak_rss_gb", "code_cells", "cells_s")})
        record["reused_from"] = previous.get("reused_from") or {"started": previous.get("started"),
                                                                "wall_time_s": previous.get("wall_time_s")}
        previous = {**previous, **record["reused_from"]}
        if _progress_stream(quiet) is not None:
            print(f"{stem} ({profile}): inputs unchanged since the run of {previous.get('started')} "
                  f"({fmt_duration(previous.get('wall_time_s'))}): rendering it again (--rerun to execute)",
                  file=sys.stderr, flush=True)
        record["html"] = str(render_html(executed, out_dir / f"{stem}.html").relative_to(out_dir))
        record["html_code"] = str(render_html(executed, out_dir / "code" / f"{stem}.html",
                                              with_code=True).relative_to(out_dir))
        record["wall_time_s"] = round(time.time() - t0, 1)
        (out_dir / f"{stem}.run.json").write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")
        _update_timings(out_dir, {**record, "profile": f"cached_{profile}"}, _params_sha(params))
        write_front_page(out_dir)
        return record
    progress = RunProgress(stem, profile, _count_code_cells(nb_in),
                           expected_time(stem, profile, out_dir, params), _progress_stream(quiet), t0=t0)
    progress.emit(progress.start_line())
    if kernel_name == KERNEL_NAME:
        ensure_kernel(kernel_name)
    allow = params.get("allow_hosts") or ()
    peak_file = executed.with_suffix(".peak.json")
    peak_file.unlink(missing_ok=True)
    try:
        with _kernel_env([allow] if isinstance(allow, str) else allow, out_dir / "_results", peak_file):
            # progress_bar/log_output off: progress goes to the terminal through our engine, never into the HTML
            pm.execute_notebook(str(nb_in), str(executed), parameters=params, kernel_name=kernel_name,
                                language="python", cwd=str(paths.NOTEBOOKS), progress_bar=False,
                                log_output=False, engine_name=_register_engine(), radpriv_progress=progress,
                                kernel_manager_class=_ipc_kernel_manager())
        record["status"] = "ok"
    except Exception as exc:  # the failed notebook is still rendered so the error is visible
        record["status"] = "failed"
        record["error"] = f"{type(exc).__name__}: {str(exc)[:2000]}"
    finally:
        progress.close()
    record["wall_time_s"] = round(time.time() - t0, 1)
    try:  # written by the kernel at exit (radpriv.kernel): the notebook's peak resident memory
        record["peak_rss_gb"] = round(json.loads(peak_file.read_text())["peak_rss_bytes"] / 2**30, 2)
    except (OSError, ValueError, KeyError):
        record["peak_rss_gb"] = None
    record["code_cells"] = progress.n
    record["cells_s"] = progress.cells_s
    if executed.exists():
        record["html"] = str(render_html(executed, out_dir / f"{stem}.html").relative_to(out_dir))
        record["html_code"] = str(render_html(executed, out_dir / "code" / f"{stem}.html",
                                              with_code=True).relative_to(out_dir))
    (out_dir / f"{stem}.run.json").write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")
    _update_timings(out_dir, record, _params_sha(params))
    write_front_page(out_dir)
    if record["status"] != "ok":
        raise RuntimeError(f"notebook {stem} failed after {record['wall_time_s']} s: {record['error']}\n"
                           f"see {out_dir / (stem + '.html')} for the cell that failed")
    return record


def write_front_page(out_dir: str | Path | None = None) -> Path:
    """``<out>/index.html``, the front page (:mod:`radpriv.frontpage`), from the run records, saved results and
    ``timings.json`` in ``out_dir``, the notebooks' parameter defaults and the published reference budgets."""
    out_dir = Path(out_dir or paths.REPORTS)
    defaults = {p.stem: notebook_parameters(p.stem) for p in paths.NOTEBOOKS.glob("*.ipynb")}
    return frontpage.write_index(out_dir, NOTEBOOK_ORDER, read_timings(out_dir), _reference_or_warn(), REFERENCE_KEYS,
                                 defaults)


def _parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"-p expects name=value, got {text!r}")
    k, v = text.split("=", 1)
    return k, yaml.safe_load(v)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m radpriv.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="*", help="notebook stems, e.g. 00_data_overview")
    ap.add_argument("--all", action="store_true", help="run every notebook in report order")
    ap.add_argument("--profile", default="default", choices=PROFILES)
    ap.add_argument("--params", help="YAML file of parameters applied over the profile's file")
    ap.add_argument("-p", dest="overrides", action="append", type=_parse_override, default=[],
                    metavar="NAME=VALUE", help="scalar parameter override (YAML-parsed)")
    ap.add_argument("--out", help="output directory (default: reports/)")
    ap.add_argument("--rerun", action="store_true", help="execute even when the inputs are unchanged since the "
                    "last successful run (default: render that run again)")
    ap.add_argument("-q", "--quiet", action="store_true", default=None,
                    help=f"no per-cell progress lines on stderr (also: {PROGRESS_ENV}=0)")
    ap.add_argument("--install-kernel", action="store_true", help="install the network-guarded `radpriv` kernel "
                    "spec into this environment and exit")
    args = ap.parse_args(argv)
    if args.install_kernel:
        print(f"kernel spec {KERNEL_NAME}: {ensure_kernel()}")
        return 0
    from radpriv.netguard import install_process_guard

    install_process_guard()  # the runner itself sends nothing off the machine either
    stems = list(args.notebooks)
    if args.all:
        stems += [s for s in NOTEBOOK_ORDER if (paths.NOTEBOOKS / f"{s}.ipynb").exists() and s not in stems]
    if not stems:
        ap.error("name at least one notebook or pass --all")
    for stem in stems:  # every run's parameters are checked before the first notebook starts
        try:
            if not (paths.NOTEBOOKS / f"{stem}.ipynb").exists():
                known = ", ".join(p.stem for p in sorted(paths.NOTEBOOKS.glob("*.ipynb")))
                raise ParamError(f"no notebook {stem!r}; known notebooks: {known}")
            load_params(stem, args.profile, args.params, dict(args.overrides))
        except ParamError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    failed = []
    for stem in stems:
        print(f">> {stem} ({args.profile})", flush=True)
        try:
            rec = execute(stem, args.profile, args.params, dict(args.overrides), args.out, quiet=args.quiet,
                          reuse=not args.rerun)
            print(f"   ok in {fmt_duration(rec['wall_time_s'])} (peak memory {fmt_gb(rec.get('peak_rss_gb'))}) -> "
                  f"{Path(args.out or paths.REPORTS) / rec['html']}", flush=True)
        except Exception as exc:
            print(f"   FAILED: {exc}", file=sys.stderr, flush=True)
            failed.append(stem)
    print(f">> index: {Path(args.out or paths.REPORTS) / 'index.html'}")
    if failed:
        print(f">> {len(failed)} notebook(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
