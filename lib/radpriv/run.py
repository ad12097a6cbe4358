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
from typing import Any, Iterable, Mapping

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
        **(dict(extra) if extra else {}),
    }


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
def load_params(stem: str, profile: str = "default", params_file: str | Path | None = None,
                overrides: Mapping[str, Any] | None = None) -> dict:
    if profile not in PROFILES:
        raise ValueError(f"profile {profile!r} is not one of {PROFILES}")
    params: dict[str, Any] = {}
    base = paths.PARAMS / f"{stem}.{profile}.yaml"
    for f in (base, params_file):
        if f is None:
            continue
        f = Path(f)
        if not f.exists():
            if f == base:
                continue
            raise FileNotFoundError(f"parameter file {f} does not exist")
        doc = yaml.safe_load(f.read_text(encoding="utf-8")) or {}
        if not isinstance(doc, dict):
            raise ValueError(f"{f}: a parameter file must be a mapping of name: value, got {type(doc).__name__}")
        params.update(doc)
    params.setdefault("profile", profile)
    params.update(overrides or {})
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
    params = load_params(stem, profile, params_file, overrides)
    executed = out_dir / "_executed" / f"{stem}.ipynb"
    executed.parent.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"notebook": stem, "profile": profile, "parameters": params,
                              "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    t0 = time.time()
    os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars belong in a terminal/lab, not in the HTML report
    try:
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
    args = ap.parse_args(argv)
    stems = list(args.notebooks)
    if args.all:
        stems += [s for s in NOTEBOOK_ORDER if (paths.NOTEBOOKS / f"{s}.ipynb").exists() and s not in stems]
    if not stems:
        ap.error("name at least one notebook or pass --all")
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
