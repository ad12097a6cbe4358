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
- ``reports/<stem>.run.json``      profile, parameters, status, wall time
- ``reports/index.html``           links to all of them
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

from radpriv import paths

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


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


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
    from radpriv.llm import netguard

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
        try:
            doc = yaml.safe_load(f.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ParamError(f"{f}: not valid YAML ({' '.join(str(exc).split())})") from None
        if not isinstance(doc, dict):
            raise ParamError(f"{f}: a parameter file must be a mapping of name: value, got {type(doc).__name__}")
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
        return Path(ksm.install_kernel_spec(tmp, name, prefix=sys.prefix, replace=True))


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
def _kernel_env(allow_hosts, results_dir: Path | None = None) -> Iterator[None]:
    """Environment the kernel inherits: the notebook's opted-in hosts, where it saves its results (see
    :func:`save_results`), no progress bars in the report."""
    saved = {k: os.environ.get(k) for k in ("RADPRIV_ALLOW_HOSTS", "TQDM_DISABLE", RESULTS_ENV)}
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


def execute(stem: str, profile: str = "default", params_file: str | Path | None = None,
            overrides: Mapping[str, Any] | None = None, out_dir: str | Path | None = None,
            kernel_name: str = KERNEL_NAME) -> dict:
    """Run ``notebooks/<stem>.ipynb`` with papermill and render its HTML reports. Returns the run record."""
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
                              "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    t0 = time.time()
    if kernel_name == KERNEL_NAME:
        ensure_kernel(kernel_name)
    allow = params.get("allow_hosts") or ()
    try:
        with _kernel_env([allow] if isinstance(allow, str) else allow, out_dir / "_results"):
            pm.execute_notebook(str(nb_in), str(executed), parameters=params, kernel_name=kernel_name,
                                language="python", cwd=str(paths.NOTEBOOKS), progress_bar=False,
                                log_output=False)
        record["status"] = "ok"
    except Exception as exc:  # the failed notebook is still rendered so the error is visible
        record["status"] = "failed"
        record["error"] = f"{type(exc).__name__}: {str(exc)[:2000]}"
    record["wall_time_s"] = round(time.time() - t0, 1)
    if executed.exists():
        record["html"] = str(render_html(executed, out_dir / f"{stem}.html").relative_to(out_dir))
        record["html_code"] = str(render_html(executed, out_dir / "code" / f"{stem}.html",
                                              with_code=True).relative_to(out_dir))
    (out_dir / f"{stem}.run.json").write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")
    write_index(out_dir)
    if record["status"] != "ok":
        raise RuntimeError(f"notebook {stem} failed after {record['wall_time_s']} s: {record['error']}\n"
                           f"see {out_dir / (stem + '.html')} for the cell that failed")
    return record


def write_index(out_dir: str | Path | None = None) -> Path:
    out_dir = Path(out_dir or paths.REPORTS)
    rows = []
    for rec_path in sorted(out_dir.glob("*.run.json")):
        rec = json.loads(rec_path.read_text(encoding="utf-8"))
        name = rec["notebook"]
        link = (f'<a href="{html.escape(rec["html"])}">{html.escape(name)}</a>' if rec.get("html")
                else html.escape(name))
        code = f' (<a href="{html.escape(rec["html_code"])}">with code</a>)' if rec.get("html_code") else ""
        rows.append(f"<tr><td>{link}{code}</td><td>{html.escape(rec['profile'])}</td>"
                    f"<td>{html.escape(rec['status'])}</td><td>{rec['wall_time_s']}</td>"
                    f"<td>{html.escape(rec['started'])}</td></tr>")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>radpriv reports</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}td,th{{padding:.3em .8em;text-align:left}}</style>
</head><body><h1>radpriv reports</h1>
<p>Privacy-preserving language models on radiology reports, re-run on this machine. Every report states
its parameters, package versions, data sha256 and model hashes. Reports on the embedded default use
<b>synthetic</b> reports generated by the project.</p>
<table><thead><tr><th>report</th><th>profile</th><th>status</th><th>wall time (s)</th><th>started (UTC)</th></tr></thead>
<tbody>{''.join(rows)}</tbody></table></body></html>"""
    out = out_dir / "index.html"
    out.write_text(page, encoding="utf-8")
    return out


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
    ap.add_argument("--install-kernel", action="store_true", help="install the network-guarded `radpriv` kernel "
                    "spec into this environment and exit")
    args = ap.parse_args(argv)
    if args.install_kernel:
        print(f"kernel spec {KERNEL_NAME}: {ensure_kernel()}")
        return 0
    from radpriv.llm.netguard import install_process_guard

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
            rec = execute(stem, args.profile, args.params, dict(args.overrides), args.out)
            print(f"   ok in {rec['wall_time_s']} s -> reports/{rec['html']}", flush=True)
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
