"""``reports/index.html``, the companion's front page, written by the runner after every notebook.

Per study: its question, status, run time, a headline table (this run's figures beside the paper's published
ones, labelled as different data and models), one figure and links to the reader and code versions of its
report; then the timing table (measured here beside the published reference budgets). Everything is read from
the reports folder: ``<stem>.run.json`` (the run record), ``_results/<stem>.json`` (what the notebook saved with
``radpriv.run.save_results``), ``_executed/<stem>.ipynb`` (the figure) and ``timings.json``. A study that failed
or has not run shows its status, never a number. Plain HTML with inline CSS; the only other files it uses are
the reports and ``figures/<stem>.png`` beside it.

The figure is the first PNG output of the executed notebook's cell tagged ``front-page``, else its first PNG.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from radpriv.papers import published

#: cell tag that picks a notebook's front-page figure (else its first figure)
FIGURE_TAG = "front-page"
FIGURES_DIR = "figures"
#: at most this many of our rows per headline table (the report has the rest)
MAX_ROWS = 12


def fmt_duration(seconds: float | None) -> str:
    """``m:ss`` (``h:mm:ss`` from an hour on); ``–`` for no value."""
    if seconds is None:
        return "–"
    s = int(round(max(0.0, float(seconds))))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def fmt_gb(value: float | None) -> str:
    return "–" if value is None else f"{float(value):.1f} GB"


def utc_label(iso: str | None) -> str:
    """``2026-12-02 14:05 UTC`` from an ISO timestamp (the text itself when it does not parse)."""
    if not iso:
        return "–"
    try:
        t = _dt.datetime.fromisoformat(str(iso))
    except ValueError:
        return str(iso)
    if t.tzinfo is not None:
        t = t.astimezone(_dt.timezone.utc)
    return t.strftime("%Y-%m-%d %H:%M UTC")


# ---------------------------------------------------------------------------------------------
# headline rows: {"system", "data", "metric", "value", "low", "high"} (low/high: a 95 % CI or None)
# ---------------------------------------------------------------------------------------------
def _num(value: Any) -> float | None:
    """A number from a saved value (``"inf"`` as saved by save_results; None and text that is no number: None)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def _name(value: Any) -> str:
    """A dataset as a reader knows it: a bundled name as is, a user's file by its name without folders."""
    text = str(value)
    return Path(text).stem if ("/" in text or "\\" in text or text.endswith((".yaml", ".yml", ".csv"))) else text


def _row(system, data, metric, value, low=None, high=None) -> dict:
    return {"system": str(system), "data": str(data), "metric": metric, "value": _num(value), "low": _num(low),
            "high": _num(high)}


def _epsilon(value: Any) -> str:
    eps = _num(value)
    return "non-private" if eps is None or math.isinf(eps) else f"ε = {eps:g}"


def _overview_rows(res: Mapping, params: Mapping) -> list[dict]:
    return [_row("rule baseline (NegEx/ConText)", f"{_name(b['dataset'])}, {b['n']} reports", "macro F1",
                 b["value"], b.get("ci_low"), b.get("ci_high")) for b in res["baseline"] if b["metric"] == "macro_f1"]


def _study1_rows(res: Mapping, params: Mapping) -> list[dict]:
    data = f"{_name(params.get('manifest', 'this run'))}, {len(res['reference'])} reports"
    return [_row(t["system"], data, "macro F1", t["macro_f1"], t.get("macro_f1_low"), t.get("macro_f1_high"))
            for t in res["table"]]


def _study2_rows(res: Mapping, params: Mapping) -> list[dict]:
    regions = " + ".join(_name(r) for r in (params.get("manifests") or {})) or "all"
    rows = [_row(a["system"], f"{regions} reports, {a['n_labels']} labels", "label accuracy",
                 a["label_accuracy"], a.get("ci_low"), a.get("ci_high"))
            for a in res["label_accuracy"] if a["region"] == "overall"]
    down = res.get("downstream") or {}
    for a in down.get("macro_auc") or ():
        if str(a["label_set"]).startswith("llm_"):
            rows.append(_row(f"{a['experiment']} ({a['label_set'][len('llm_'):]} LLM labels)",
                             f"{params.get('downstream_region') or 'downstream'} test split", "macro AUC",
                             a["macro_auc"], a.get("ci_low"), a.get("ci_high")))
    return rows


#: Study 3's training modes as a reader knows them
MODE_NAMES = {"full": "full fine-tuning", "lora": "LoRA", "dp-lora": "DP-LoRA", "dp-full": "DP full fine-tuning",
              "head": "linear head", "dp-head": "DP linear head", "tfidf-logreg": "TF-IDF + logistic regression",
              "dp-tfidf-linear": "DP TF-IDF linear model"}


def _study3_rows(res: Mapping, params: Mapping) -> list[dict]:
    rows = []
    for s in res["summary"]:
        data, _, mode = str(s["mode"]).rpartition(" · ")  # the notebook names runs "<dataset> · <mode>"
        init = " (public init)" if s.get("init") == "public" else ""
        rows.append(_row(f"{MODE_NAMES.get(mode, mode)}{init}, {_epsilon(s['epsilon'])}", _name(data) or "this run",
                         "weighted F1", s["weighted_f1"], s.get("weighted_f1_lo"), s.get("weighted_f1_hi")))
    return rows


def _audit_rows(res: Mapping, params: Mapping) -> list[dict]:
    mia = res["mia"]
    n = len(mia["member"])
    rows = []
    for c in res["eps_comparison"]:
        match = [m for m in mia["table"] if m["model"] == c["model"] and m["attack"] == c["attack"]]
        low, high = (match[0].get("auc_low"), match[0].get("auc_high")) if match else (None, None)
        rows.append(_row(f"{c['model']}, {c['attack']} attack", f"{n} audit reports", "membership-inference AUC",
                         c["AUC"], low, high))
    return rows


def _cmr_paper(p: Mapping) -> list[dict]:
    return [_row(r["system"], p["data"], "macro F1", r["f1"]) for r in p["rows"]]


def _label_paper(p: Mapping) -> list[dict]:
    regions = ", ".join(r["region"] for r in p["label_accuracy"] if r["region"] != "overall")
    rows = [_row("GPT-4o", f"clinical {regions} reports", "label accuracy", r["accuracy"] / 100)
            for r in p["label_accuracy"] if r["region"] == "overall"]
    rows += [_row(f"ResNet-50, {r['labels']} labels", f"{r['region']} radiographs", "macro AUC", r["macro_auc"])
             for r in p["downstream"]]
    return rows


def _dp_paper(p: Mapping) -> list[dict]:
    return [_row(r["mode"] if "non-private" in r["mode"] else f"{r['mode']}, {_epsilon(r['epsilon'])}", r["dataset"],
                 "weighted F1", r["weighted_f1"]) for r in p["rows"]]


@dataclass(frozen=True)
class Study:
    """What the front page shows of one notebook."""
    stem: str
    kicker: str
    title: str
    question: str
    make_target: str
    rows: Callable[[Mapping, Mapping], list[dict]]   # (saved results, run parameters) -> our headline rows
    paper: str | None = None                          # key of papers.yaml
    paper_rows: Callable[[Mapping], list[dict]] | None = None
    note: str = ""                                    # how to read the headline


# (declarations: the five entries share one shape by design)
STUDIES = {s.stem: s for s in (
    Study("00_data_overview", "Overview", "The embedded corpora and a rule-based labeler",
          "What do the embedded corpora look like, and how good is a rule-based (NegEx/ConText) labeler?",
          "overview", _overview_rows,
          note="Synthetic reports generated by the project; the rule baseline is the yardstick the LLMs of "
               "Studies 1 and 2 are compared with. No published counterpart."),
    Study("01_cmr_llm_benchmark", "Study 1", "Local LLMs classify cardiac MRI reports",
          "Can several local open LLMs classify cardiac MRI reports into diagnostic categories?",
          "study1", _study1_rows, "cmr_llm_benchmark", _cmr_paper,
          note="Macro F1: the mean over diagnostic categories of the balance of precision and recall (1 = perfect)."),
    Study("02_label_extraction", "Study 2", "LLM label extraction with uncertainty",
          "Can an LLM fill a finding template with true/false/uncertain, and does inclusive vs exclusive "
          "uncertainty mapping change downstream models?",
          "study2", _study2_rows, "label_extraction", _label_paper,
          note="Label accuracy: share of findings labelled like the reference. Macro AUC of the downstream "
               "classifier: 0.5 is chance, 1 is perfect."),
    Study("03_dp_lora", "Study 3", "Differentially private fine-tuning (DP-SGD + LoRA)",
          "What does DP-SGD + LoRA fine-tuning cost in utility across a privacy grid?",
          "study3", _study3_rows, "dp_lora", _dp_paper,
          note="ε is the privacy budget: smaller means stronger privacy. Weighted F1 over the findings (1 = perfect)."),
    Study("04_privacy_audit", "Audit", "What differential privacy protects against",
          "What does differential privacy buy against memorization and membership inference?",
          "audit", _audit_rows,
          note="Membership-inference AUC: how well an attacker tells reports used in training from others "
               "(0.5 = guessing). The audit is the companion's own; no published counterpart."),
)}


def _paper_rows(study: Study) -> tuple[list[dict], dict]:
    if not study.paper or study.paper_rows is None:
        return [], {}
    paper = published(study.paper)
    return study.paper_rows(paper), paper


# ---------------------------------------------------------------------------------------------
# reading the reports folder
# ---------------------------------------------------------------------------------------------
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _executed_at(rec: Mapping) -> float | None:
    """When the execution behind a record started (a re-rendered run: the original execution), as a timestamp."""
    started = (rec.get("reused_from") or {}).get("started") or rec.get("started")
    try:
        return _dt.datetime.fromisoformat(str(started)).timestamp()
    except (TypeError, ValueError):
        return None


def _headline(out_dir: Path, study: Study, rec: Mapping) -> list[dict] | None:
    """Our headline rows from the results the run saved (None: none saved by this run, or not readable)."""
    path = out_dir / "_results" / f"{study.stem}.json"
    res = _read_json(path)
    t0 = _executed_at(rec)
    if not isinstance(res, dict) or (t0 is not None and path.stat().st_mtime < t0 - 1):  # an earlier run's
        return None
    try:
        rows = study.rows(res, rec.get("parameters") or {})
    except (KeyError, TypeError, ValueError, AttributeError):  # results of another shape: no headline
        return None
    return [r for r in rows if r["value"] is not None] or None


def _figure(out_dir: Path, stem: str) -> str | None:
    """Write the notebook's front-page figure to ``figures/<stem>.png``; its path relative to ``out_dir``."""
    nb = _read_json(out_dir / "_executed" / f"{stem}.ipynb")
    if not isinstance(nb, dict):
        return None
    cells = [c for c in nb.get("cells", []) if isinstance(c, dict)]
    tagged = [c for c in cells if FIGURE_TAG in (c.get("metadata") or {}).get("tags", [])]
    for cell in tagged + cells:
        for out in cell.get("outputs") or ():
            png = (out.get("data") or {}).get("image/png") if isinstance(out, dict) else None
            if png:
                target = out_dir / FIGURES_DIR / f"{stem}.png"
                target.parent.mkdir(exist_ok=True)
                target.write_bytes(base64.b64decode("".join(png) if isinstance(png, list) else png))
                return f"{FIGURES_DIR}/{stem}.png"
    return None


def _link(out_dir: Path, rel: Any) -> str | None:
    """A record's report path, if that file is there."""
    return str(rel) if rel and (out_dir / str(rel)).is_file() else None


# ---------------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------------
esc = html.escape
STATUS_TEXT = {"ok": "done", "failed": "failed", "missing": "not run yet"}

_CSS = """
:root{--ink:#1d2330;--muted:#5b6472;--line:#dde1e7;--soft:#f5f7fa;--accent:#1f5fa8;--ok:#1b7f3b;--bad:#b3261e}
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--ink);line-height:1.45;margin:0;
background:#fff}
main{max-width:72em;margin:0 auto;padding:1.5em 1.5em 3em}
h1{font-size:1.7em;margin:.2em 0 .3em}
h2{font-size:1.3em;margin:0}
a{color:var(--accent)}
p.lead{font-size:1.05em;max-width:52em;margin:.4em 0}
p.machine{color:var(--muted);font-size:.9em;margin:.4em 0 1em}
nav.toc{display:flex;flex-wrap:wrap;gap:.5em;margin:1em 0 1.5em}
nav.toc a{text-decoration:none;border:1px solid var(--line);border-radius:2em;padding:.25em .8em;color:var(--ink);
font-size:.92em;background:var(--soft)}
section.study{border:1px solid var(--line);border-radius:10px;padding:1.1em 1.3em 1.2em;margin:0 0 1.4em}
.study header{display:flex;flex-wrap:wrap;align-items:baseline;gap:.4em .8em}
.kicker{text-transform:uppercase;letter-spacing:.06em;font-size:.78em;font-weight:600;color:var(--muted)}
.status{font-size:.8em;font-weight:600;border-radius:1em;padding:.1em .7em;margin-left:auto}
.status.ok{background:#e3f3e8;color:var(--ok)}.status.failed{background:#fbe4e2;color:var(--bad)}
.status.missing{background:#eceff3;color:var(--muted)}
.dot{display:inline-block;width:.6em;height:.6em;border-radius:50%;margin-right:.4em;background:#b8bfc9}
.dot.ok{background:var(--ok)}.dot.failed{background:var(--bad)}
p.question{margin:.5em 0 .2em;font-size:1.02em}
p.meta{color:var(--muted);font-size:.88em;margin:.1em 0 .8em}
.body{display:grid;grid-template-columns:minmax(0,3fr) minmax(0,2fr);gap:1.4em;align-items:start}
.body.single{grid-template-columns:minmax(0,1fr)}
@media (max-width:60em){.body{grid-template-columns:minmax(0,1fr)}}
figure{margin:0}figure img{width:100%;height:auto;border:1px solid var(--line);border-radius:6px;background:#fff}
figcaption{color:var(--muted);font-size:.82em;margin-top:.3em}
table{border-collapse:collapse;width:100%;font-size:.9em}
td,th{padding:.32em .6em;text-align:left;vertical-align:top;border-bottom:1px solid var(--line)}
thead th{background:var(--soft);font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.metric{white-space:nowrap}
tr.group th{background:#fff;font-weight:600;font-size:.92em;padding-top:.7em;border-bottom:2px solid var(--line)}
tr.group.paper th{color:#7a4d00}
tr.paper td{background:#fdf8ee;color:#444}
p.note{color:var(--muted);font-size:.85em;margin:.5em 0 0}
p.empty{color:var(--muted);font-style:italic;margin:.3em 0}
p.links{margin:.9em 0 0;display:flex;gap:.6em;flex-wrap:wrap}
a.button{display:inline-block;text-decoration:none;border-radius:6px;padding:.35em .9em;font-size:.92em;
border:1px solid var(--accent)}
a.button.primary{background:var(--accent);color:#fff}
section.timings{margin-top:2em}
#timings{width:auto}#timings td.none{color:#a0a7b1}#timings td.failed{color:var(--bad)}
#timings tr.total td{font-weight:600;border-top:2px solid #999}
#timings th[scope=row]{font-weight:normal;background:none}
"""


def _value(row: Mapping, paper: bool) -> str:
    v = row["value"]
    if paper:  # the paper's own precision (0.98, 0.885), never more
        return f"{v:.2f}" if round(v, 2) == v else f"{v:g}"
    text = f"{v:.2f}"
    if row["low"] is not None and row["high"] is not None:
        text += f" ({row['low']:.2f}–{row['high']:.2f})"
    return text


def _spans(items: list[dict], key: str) -> list[int]:
    """Rowspan per row for column ``key``: a run of equal values is one cell (0: covered by the row above)."""
    spans = [0] * len(items)
    start = 0
    for i in range(1, len(items) + 1):
        if i == len(items) or items[i][key] != items[start][key]:
            spans[start] = i - start
            start = i
    return spans


def _headline_table(ours: list[dict], paper_rows: list[dict], paper: Mapping) -> str:
    def rows(items, cls):
        cols = ("system", "data", "metric")
        spans = {k: _spans(items, k) for k in cols}
        out = []
        for i, r in enumerate(items):
            cells = "".join(f'<td class="{k}"' + (f' rowspan="{spans[k][i]}"' if spans[k][i] > 1 else "")
                            + f">{esc(r[k])}</td>" for k in cols if spans[k][i])
            out.append(f'<tr class="{cls}">{cells}<td class="num">{esc(_value(r, cls == "paper"))}</td></tr>')
        return "".join(out)

    more = len(ours) - MAX_ROWS
    body = ('<tr class="group"><th colspan="4">This run: synthetic reports, small local models</th></tr>'
            + rows(ours[:MAX_ROWS], "ours"))
    if more > 0:
        body += f'<tr class="ours"><td colspan="4"><i>{more} more in the report</i></td></tr>'
    if paper_rows:
        body += ('<tr class="group paper"><th colspan="4">Published: different data and models, not a like-for-like '
                 'comparison</th></tr>' + rows(paper_rows, "paper"))
    cite = ""
    if paper_rows:
        about = " ".join(f"{k.capitalize()}: {paper[k]}." for k in ("data", "models") if paper.get(k))
        cite = (f'<p class="note">Published: <i>{esc(" ".join(str(paper["citation"]).split()))}</i> '
                f'{esc(about)}</p>')
    return (f'<table class="headline"><thead><tr><th>System</th><th>Data</th><th>Metric</th>'
            f'<th class="num">Value (95% CI)</th></tr></thead><tbody>{body}</tbody></table>{cite}')


def _status(rec: Mapping | None) -> str:
    return "missing" if rec is None else ("ok" if rec.get("status") == "ok" else "failed")


def _section(out_dir: Path, stem: str, rec: Mapping | None) -> str:
    study = STUDIES.get(stem)
    kicker, title = (study.kicker, study.title) if study else ("Notebook", stem)
    status = _status(rec)
    reader = _link(out_dir, rec.get("html")) if rec else None
    code = _link(out_dir, rec.get("html_code")) if rec else None
    parts = [(f'<section class="study" id="{esc(stem)}"><header><span class="kicker">{esc(kicker)}</span>'
              f'<h2>{esc(title)}</h2><span class="status {status}">{STATUS_TEXT[status]}</span></header>')]
    if study:
        parts.append(f'<p class="question"><b>Question.</b> {esc(study.question)}</p>')
    if rec is None:
        target = f"<code>make {esc(study.make_target)}</code> or " if study else ""
        parts.append(f'<p class="empty">Not run on this machine yet: {target}<code>make reports</code> runs it.</p>')
        return "".join(parts) + "</section>"
    wall = rec.get("wall_time_s")
    origin = rec.get("reused_from") or {}
    meta = [f"{rec.get('profile') or '?'} profile"]
    if status == "failed":
        meta.append(f"stopped after {fmt_duration(wall)} on {utc_label(rec.get('started'))}")
    elif origin:  # inputs unchanged: the earlier execution, rendered again
        meta.append(f"ran in {fmt_duration(origin.get('wall_time_s'))} on {utc_label(origin.get('started'))} "
                    f"(inputs unchanged since; rendered again on {utc_label(rec.get('started'))})")
    else:
        meta.append(f"ran in {fmt_duration(wall)} on {utc_label(rec.get('started'))}")
    if status == "ok" and rec.get("peak_rss_gb") is not None:
        meta.append(f"peak memory {fmt_gb(rec['peak_rss_gb'])}")
    parts.append(f'<p class="meta">{esc(" · ".join(meta))}</p>')
    if status == "failed":
        where = " The report shows the step that failed." if reader else ""
        parts.append(f'<p class="empty">This study did not finish, so it has no results to show.{esc(where)}</p>')
    elif study:
        ours = _headline(out_dir, study, rec)
        paper_rows, paper = _paper_rows(study)
        figure = _figure(out_dir, stem)
        table = (_headline_table(ours, paper_rows, paper) if ours else
                 '<p class="empty">This run saved no headline figures; the report has its results.</p>')
        note = f'<p class="note">{esc(study.note)}</p>' if study.note and ours else ""
        fig = (f'<figure><a href="{esc(reader or figure)}"><img src="{esc(figure)}" alt="{esc(title)}: a figure '
               f'of the report"></a><figcaption>A figure of the report (select it to open the report).</figcaption>'
               f'</figure>' if figure else "")
        parts.append(f'<div class="body{"" if fig else " single"}"><div>{table}{note}</div>{fig}</div>')
    links = []
    if reader:
        links.append(f'<a class="button primary" href="{esc(reader)}">Read the report</a>')
    if code:
        links.append(f'<a class="button" href="{esc(code)}">Report with code</a>')
    if links:
        parts.append(f'<p class="links">{"".join(links)}</p>')
    return "".join(parts) + "</section>"


def _timing_cell(entry: Mapping[str, Any] | None) -> tuple[str, float | None]:
    """(HTML of one measured cell, seconds counted in the total or None)."""
    if not isinstance(entry, Mapping) or entry.get("wall_time_s") is None:
        return '<td class="num none">–</td>', None
    secs = float(entry["wall_time_s"])
    title = f"{secs:g} s, started {utc_label(entry.get('started'))}"
    if entry.get("cpu_count"):
        title += f", {entry['cpu_count']} CPUs"
    if entry.get("status") != "ok":
        text = f"{entry.get('status') or 'unknown'} after {fmt_duration(secs)}"
        return f'<td class="num failed" title="{esc(title)}">{esc(text)}</td>', None
    return f'<td class="num" title="{esc(title)}">{esc(fmt_duration(secs))}</td>', secs


def _total_cell(values: list[float | None], n_rows: int) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return '<td class="num none">–</td>'
    text = fmt_duration(sum(known)) + ("" if len(known) == n_rows else f" ({len(known)} of {n_rows})")
    return f'<td class="num">{esc(text)}</td>'


def _column_head(key: str) -> str:
    return f'<th class="num">{esc("default, cached" if key == "cached_default" else key)}</th>'


def _timing_section(stems: list[str], timings: Mapping, reference: Mapping | None, columns: Sequence[str]) -> str:
    ref_rows = (reference or {}).get("notebooks") or {}
    sums: list[list[float | None]] = [[] for _ in range(2 * len(columns))]
    trows = []
    for stem in stems:
        cells = []
        per_profile = timings.get(stem) if isinstance(timings.get(stem), dict) else {}
        for j, key in enumerate(columns):
            cell, secs = _timing_cell(per_profile.get(key))
            cells.append(cell)
            sums[j].append(secs)
        for j, key in enumerate(columns, start=len(columns)):
            secs = (ref_rows.get(stem) or {}).get(key)
            cells.append(f'<td class="num{"" if secs is not None else " none"}">{esc(fmt_duration(secs))}</td>')
            sums[j].append(secs)
        trows.append(f'<tr><th scope="row">{esc(stem)}</th>{"".join(cells)}</tr>')
    trows.append('<tr class="total"><td>total</td>' + "".join(_total_cell(c, len(stems)) for c in sums) + "</tr>")
    measured = (reference or {}).get("measured") or {}
    ref_note = (f"Reference budgets (<code>notebooks/params/timings.yaml</code>): "
                f"{esc(measured.get('machine') or '2 CPU cores, no GPU')}, "
                + (f"measured {esc(measured['date'])}" if measured.get("date") else "not measured yet")
                + (f"; {esc(measured['note'])}" if measured.get("note") else "") + ".")
    if reference is None:
        ref_note = "Reference budgets: the budgets file is malformed (see the runner's warning)."
    heads = "".join(_column_head(k) for k in columns)
    return f"""<section class="timings"><h2>Timings</h2>
<p>Wall time per notebook (m:ss), measured on this machine (the latest run of each profile; a failed run shows
how far it got) beside the published reference budgets, measured one job at a time on 2 idle CPU cores.
“default, cached” is the default profile run again with nothing changed: the runner renders the previous
execution again (inputs unchanged: same notebook, parameters, package files and versions).</p>
<table id="timings"><thead>
<tr><th rowspan="2">notebook</th><th colspan="{len(columns)}">measured here</th>
<th colspan="{len(columns)}">reference (2 idle cores)</th></tr>
<tr>{heads}{heads}</tr>
</thead><tbody>{''.join(trows)}</tbody></table>
<p class="note">{ref_note}</p></section>"""


def write_index(out_dir: Path, order: Sequence[str], timings: Mapping, reference: Mapping | None,
                columns: Sequence[str], defaults: Mapping[str, Mapping] | None = None) -> Path:
    """Write ``<out_dir>/index.html``: a section per notebook of ``order`` (and any other notebook with a run
    record there), then the timing table: ``timings`` (``timings.json``: stem -> profile -> run) beside the
    ``reference`` budgets (None: the budgets file was malformed), one column per key of ``columns``.
    ``defaults``: each notebook's parameter defaults, under the parameters its run record names."""
    out_dir = Path(out_dir)
    records = {}
    for path in out_dir.glob("*.run.json"):
        rec = _read_json(path)
        if isinstance(rec, dict) and rec.get("notebook"):
            stem = str(rec["notebook"])
            records[stem] = {**rec, "parameters": {**(defaults or {}).get(stem, {}), **(rec.get("parameters") or {})}}

    def order_key(stem: str) -> tuple:
        return (order.index(stem), "") if stem in order else (len(order), stem)

    stems = sorted(set(order) | set(records) | {s for s, v in timings.items() if isinstance(v, dict)},
                   key=order_key)
    shown = [s for s in stems if s in records or s in STUDIES]
    sections = "".join(_section(out_dir, s, records.get(s)) for s in shown)
    toc = "".join(f'<a href="#{esc(s)}"><span class="dot {_status(records.get(s))}"></span>'
                  f'{esc(STUDIES[s].kicker if s in STUDIES else s)}</a>' for s in shown)

    entries = [e for per in timings.values() if isinstance(per, dict) for e in per.values() if isinstance(e, dict)]
    starts = [str(e["started"]) for e in entries if e.get("started")]
    starts += [str(r["started"]) for r in records.values() if r.get("started")]
    cpus = sorted({int(e["cpu_count"]) for e in entries if isinstance(e.get("cpu_count"), int)})
    here = os.cpu_count()
    machine = f"This machine: {here} CPU cores ({platform.system()} {platform.machine()}, Python " \
              f"{platform.python_version()})."
    if cpus and cpus != [here]:
        machine += f" The measured times were taken with {', '.join(map(str, cpus))} CPU cores."
    machine += f" Latest run: {utc_label(max(starts))}." if starts else " No notebook has run here yet."
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>radpriv: companion reports</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{_CSS}</style>
</head><body><main>
<h1>Privacy-preserving language models on radiology reports</h1>
<p class="lead">Three published studies re-run on this machine, with small open models that run offline. The
reports here are <b>synthetic</b>, generated by the project: the figures show how the methods behave, not how a
hospital's reports would score. Published figures appear beside ours for orientation only; they come from
different data and far larger models. Every report states its parameters, package versions and data and model
hashes.</p>
<p class="machine">{esc(machine)}</p>
<nav class="toc">{toc}</nav>
{sections}
{_timing_section(stems, timings, reference, columns)}
</main></body></html>"""
    out = out_dir / "index.html"
    out.write_text(page, encoding="utf-8")
    return out
