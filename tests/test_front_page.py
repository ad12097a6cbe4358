"""The front page (``reports/index.html``, radpriv.frontpage), built from real runs and checked in a real browser.

Five small notebooks named like the studies are executed with the runner (papermill, the radpriv kernel): each
saves results of the shape its study saves (``radpriv.run.save_results``) and draws a figure with the library's
``plots.show``; the audit's notebook fails. The page is checked as HTML (a section per study with its question,
headline rows of ours and of the paper, status, run time, links that resolve, no machine paths, no stderr, every
value escaped) and as a screenshot taken by headless Chromium from ``file://`` (no network).
"""

import json
import os
import re
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

from radpriv import frontpage, paths, run
from radpriv.papers import published

SYSTEM = "model <b>& co</b>"  # a name with markup: shown as text, never as HTML


def _reference(n: int) -> list[dict]:
    labels = ["normal", "ischemic", "dilated_cardiomyopathy", "myocarditis"]
    return [{"report_id": f"cmr-{i:05d}", "label": labels[i % 4]} for i in range(n)]


RESULTS = {
    "00_data_overview": {
        "baseline": [{"dataset": d, "metric": m, "value": v, "ci_low": lo, "ci_high": hi, "n": n}
                     for d, n, v, lo, hi in (("synthetic_cmr", 60, 1.0, 1.0, 1.0),
                                             ("synthetic_clavicle", 63, 0.9411, 0.8777, 0.9666),
                                             ("synthetic_elbow", 62, 0.9718, 0.9112, 0.9851))
                     for m in ("macro_f1", "weighted_f1")],
        "split_counts": {"synthetic_cmr": {"train": 180, "validation": 60, "test": 60}}},
    "01_cmr_llm_benchmark": {
        "reference": _reference(120), "class_set": ["dilated_cardiomyopathy", "ischemic", "myocarditis", "normal"],
        "table": [{"system": s, "accuracy": a, "macro_f1": f, "macro_f1_low": lo, "macro_f1_high": hi}
                  for s, a, f, lo, hi in (("rule baseline", 0.967, 0.962, 0.921, 0.991),
                                          ("qwen2.5-coder-1.5b", 0.983, 0.981, 0.955, 1.0),
                                          ("qwen2.5-coder-0.5b", 0.758, 0.731, 0.652, 0.802),
                                          (SYSTEM, 0.225, 0.118, 0.082, 0.161))]},
    "02_label_extraction": {
        "label_accuracy": [{"system": s, "region": r, "label_accuracy": v, "ci_low": v - 0.03, "ci_high": v + 0.02,
                            "n_labels": n}
                           for s, base in (("rule baseline", 0.97), ("qwen2.5-coder-1.5b", 0.81))
                           for r, v, n in (("clavicle", base, 96), ("elbow", base - 0.01, 120),
                                           ("overall", base - 0.005, 324))],
        "downstream": {"macro_auc": [{"experiment": "image", "label_set": s, "macro_auc": v, "ci_low": v - 0.08,
                                      "ci_high": v + 0.07}
                                     for s, v in (("llm_inclusive", 0.74), ("llm_exclusive", 0.71),
                                                  ("truth_inclusive", 0.79))]}},
    "03_dp_lora": {
        "summary": [{"mode": f"synthetic_cxr · {m}", "init": i, "epsilon": e, "seeds": 1, "weighted_f1": f,
                     "weighted_f1_lo": f - 0.04, "weighted_f1_hi": f + 0.03}
                    for m, i, e, f in (("full", "none", "inf", 0.962), ("lora", "none", "inf", 0.811),
                                       ("dp-lora", "public", 10.0, 0.702), ("dp-lora", "public", 1.0, 0.611),
                                       ("dp-head", "none", 10.0, 0.655), ("dp-head", "public", 1.0, 0.598))]},
}
PARAMS = {"01_cmr_llm_benchmark": {"manifest": "synthetic_cmr"},
          "02_label_extraction": {"manifests": {"clavicle": "synthetic_clavicle", "elbow": "synthetic_elbow"},
                                  "downstream_region": "elbow"},
          "03_dp_lora": {"manifests": ["synthetic_cxr"]}}
FAILS = "04_privacy_audit"


def _notebook(nbdir: Path, stem: str, results_file: Path) -> None:
    nb = nbformat.v4.new_notebook()
    values = {"profile": "default", "results_file": "", **PARAMS.get(stem, {})}
    params = nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in values.items()))
    params.metadata["tags"] = ["parameters"]
    body = ("import json, sys\nimport matplotlib.pyplot as plt\nfrom radpriv import run\n"
            "from radpriv.evaluate import plots\n"
            "print('Traceback-looking NOISE on stderr', file=sys.stderr)\n"
            f"run.save_results({stem!r}, json.load(open(results_file)))\n"
            "fig, ax = plt.subplots(figsize=(6, 3))\n"
            "ax.bar(['a', 'b', 'c'], [0.9, 0.6, 0.3], color=['#1f5fa8', '#e07b39', '#3a923a'])\n"
            f"ax.set_title({stem!r})\nplots.show(fig)\n")
    if stem == FAILS:
        body = "raise ValueError('boom at /very/secret/machine/path')"
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {stem}"), params, nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, str(nbdir / f"{stem}.ipynb"))


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """A reports folder from real runs of the five stand-in notebooks (the audit's fails)."""
    root = tmp_path_factory.mktemp("front")
    nbdir, out = root / "notebooks", root / "reports"
    (nbdir / "params").mkdir(parents=True)
    (nbdir / "params" / "timings.yaml").write_text(
        "measured: {date: 2026-12-03, machine: '2 CPU cores, no GPU'}\n"
        "notebooks:\n  01_cmr_llm_benchmark: {default: '12:48'}\n  03_dp_lora: {default: '21:32'}\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(paths, "NOTEBOOKS", nbdir)
        mp.setattr(paths, "PARAMS", nbdir / "params")
        mp.setenv(run.PROGRESS_ENV, "0")
        for stem in run.NOTEBOOK_ORDER:
            results_file = root / f"{stem}.results.json"
            results_file.write_text(json.dumps(RESULTS.get(stem, {})))
            _notebook(nbdir, stem, results_file)
            if stem == FAILS:
                with pytest.raises(RuntimeError, match="failed"):
                    run.execute(stem, out_dir=out, overrides={"results_file": str(results_file)})
            else:
                run.execute(stem, out_dir=out, overrides={"results_file": str(results_file)})
    return {"root": root, "out": out, "page": (out / "index.html").read_text(encoding="utf-8")}


class _Page(HTMLParser):
    """Sections (by id) with their text, table rows (class, (cell text, rowspan)), links and images."""

    def __init__(self):
        super().__init__()
        self.sections, self.ids, self.links, self.images = {}, set(), [], []
        self._section, self._row, self._cell, self._span = None, None, None, 1

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "section" and "study" in (a.get("class") or ""):
            self._section = a["id"]
            self.sections[self._section] = {"text": [], "rows": [], "html_tags": [], "links": [], "images": []}
        if self._section:
            self.sections[self._section]["html_tags"].append(tag)
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])
            if self._section:
                self.sections[self._section]["links"].append(a["href"])
        if tag == "img":
            self.images.append(a["src"])
            if self._section:
                self.sections[self._section]["images"].append(a["src"])
        if tag == "tr" and self._section:
            self._row = (a.get("class") or "", [])
            self.sections[self._section]["rows"].append(self._row)
        if tag in ("td", "th") and self._row is not None:
            self._cell, self._span = [], int(a.get("rowspan") or 1)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row[1].append(("".join(self._cell).strip(), self._span))
            self._cell = None
        if tag == "tr":
            self._row = None
        if tag == "section":
            self._section = None

    def handle_data(self, data):
        if self._section:
            self.sections[self._section]["text"].append(data)
        if self._cell is not None:
            self._cell.append(data)


def _expand(rows: list) -> list[tuple[str, list[str]]]:
    """Rows as full lists of cell texts: a cell spanning rows (rowspan) repeated in each."""
    out, carry = [], {}  # column -> [rows still covered, text]
    for cls, cells in rows:
        full, queue = [], list(cells)
        while queue or carry.get(len(full), [0])[0] > 0:
            col = len(full)
            if carry.get(col, [0])[0] > 0:
                carry[col][0] -= 1
                full.append(carry[col][1])
            else:
                text, span = queue.pop(0)
                full.append(text)
                if span > 1:
                    carry[col] = [span - 1, text]
        out.append((cls, full))
    return out


def _parse(page: str) -> _Page:
    p = _Page()
    p.feed(page)
    for s in p.sections.values():
        s["text"] = " ".join(" ".join(s["text"]).split())
        s["rows"] = _expand(s["rows"])
    return p


def test_every_study_has_its_section_question_status_and_run_time(reports):
    page = _parse(reports["page"])
    assert list(page.sections) == list(run.NOTEBOOK_ORDER)
    for stem, study in frontpage.STUDIES.items():
        text = page.sections[stem]["text"]
        assert study.question in text and study.title in text, stem
        assert "default profile" in text and re.search(r"(ran in|stopped after) \d+:\d\d on 20\d\d-", text), text
        assert ("failed" if stem == FAILS else "done") in text


def test_headline_rows_are_ours_beside_the_papers_labelled(reports):
    page = _parse(reports["page"])
    for stem in ("00_data_overview", "01_cmr_llm_benchmark", "02_label_extraction", "03_dp_lora"):
        rows = page.sections[stem]["rows"]
        groups = [cells[0] for cls, cells in rows if "group" in cls]
        assert groups[0].startswith("This run"), stem
        ours = [cells for cls, cells in rows if cls == "ours"]
        assert ours and all(re.fullmatch(r"\d\.\d\d \(\d\.\d\d–\d\.\d\d\)", c[3]) for c in ours), ours
        paper = [cells for cls, cells in rows if cls == "paper"]
        study = frontpage.STUDIES[stem]
        if study.paper is None:
            assert not paper and len(groups) == 1
            continue
        assert groups[1] == "Published: different data and models, not a like-for-like comparison"
        order = [cls for cls, _ in rows]
        assert order.index("group paper") < min(i for i, c in enumerate(order) if c == "paper")  # under its label
        assert published(study.paper)["citation"].split()[0] in page.sections[stem]["text"]
        assert paper and all(re.fullmatch(r"\d\.\d\d\d?", c[3]) for c in paper)
    s1 = {c[0]: c for cls, c in page.sections["01_cmr_llm_benchmark"]["rows"] if cls in ("ours", "paper")}
    assert s1["qwen2.5-coder-1.5b"][1:] == ["synthetic_cmr, 120 reports", "macro F1", "0.98 (0.95–1.00)"]
    assert s1["Gemma2 (local LLM)"][3] == "0.98" and s1["Board-certified cardiologist"][3] == "0.94"
    s2 = [c for cls, c in page.sections["02_label_extraction"]["rows"] if cls == "ours"]
    assert ["qwen2.5-coder-1.5b", "clavicle + elbow reports, 324 labels", "label accuracy", "0.81 (0.78–0.83)"] in s2
    assert ["image (inclusive LLM labels)", "elbow test split", "macro AUC", "0.74 (0.66–0.81)"] in s2
    s3 = {(cls, c[0], c[1]): c[3] for cls, c in page.sections["03_dp_lora"]["rows"] if cls in ("ours", "paper")}
    assert s3["ours", "DP-LoRA (public init), ε = 10", "synthetic_cxr"] == "0.70 (0.66–0.73)"
    assert s3["ours", "full fine-tuning, non-private", "synthetic_cxr"] == "0.96 (0.92–0.99)"
    assert s3["paper", "DP-LoRA, ε = 10", "MIMIC-CXR"] == "0.885"
    assert s3["paper", "DP-LoRA, ε = 10", "CT-RATE"] == "0.59"


def test_every_value_is_escaped(reports):
    assert SYSTEM not in reports["page"] and "model &lt;b&gt;&amp; co&lt;/b&gt;" in reports["page"]
    rows = _parse(reports["page"]).sections["01_cmr_llm_benchmark"]["rows"]
    assert [SYSTEM, "synthetic_cmr, 120 reports", "macro F1", "0.12 (0.08–0.16)"] in [c for _, c in rows]


def test_a_failed_study_shows_its_status_never_a_number(reports):
    failed = _parse(reports["page"]).sections[FAILS]
    assert "This study did not finish" in failed["text"] and "failed" in failed["text"]
    assert "table" not in failed["html_tags"] and not failed["images"]
    words = failed["text"].split("stopped after")[1].split("UTC", 1)[1]  # after the run time and date
    assert not re.search(r"\d", words), words
    assert failed["links"] == [f"{FAILS}.html", f"code/{FAILS}.html"]  # the report shows where it stopped


def test_links_and_images_resolve_to_files(reports):
    page, out = _parse(reports["page"]), reports["out"]
    for stem in run.NOTEBOOK_ORDER:
        assert f"{stem}.html" in page.sections[stem]["links"] and f"code/{stem}.html" in page.sections[stem]["links"]
    for stem in set(run.NOTEBOOK_ORDER) - {FAILS}:
        assert page.sections[stem]["images"] == [f"figures/{stem}.png"]
    for ref in page.links + page.images:
        assert not re.match(r"[a-z]+:|/", ref), ref  # relative: no scheme, no absolute path
        if ref.startswith("#"):
            assert ref[1:] in page.ids
        else:
            assert (out / ref).is_file(), ref
    assert (out / "figures" / "01_cmr_llm_benchmark.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_machine_paths_no_stderr_no_error_text(reports):
    page = reports["page"]
    for needle in (str(reports["root"]), str(paths.REPO), os.path.expanduser("~") + "/", "/tmp/", "/very/secret",
                   "file:", "NOISE", "Traceback", "ValueError", "boom", "stderr", "Warning", "results_file"):
        assert needle not in page, needle
    assert "http://" not in page and "https://" not in page


def test_timing_table_is_kept(reports):
    page = reports["page"]
    assert '<table id="timings">' in page and "12:48" in page and "21:32" in page
    assert "failed after" in page  # the audit's run, in the measured column


def test_missing_and_stale_results_show_no_numbers(reports, tmp_path, monkeypatch):
    """Nothing run: every study says so. A results file older than the run that claims it: not shown."""
    monkeypatch.setattr(paths, "PARAMS", reports["root"] / "notebooks" / "params")
    empty = tmp_path / "empty"
    empty.mkdir()
    page = _parse(run.write_front_page(empty).read_text())
    for stem, study in frontpage.STUDIES.items():
        s = page.sections[stem]
        assert "not run yet" in s["text"] and f"make {study.make_target}" in s["text"]
        assert "table" not in s["html_tags"] and not s["links"]
    stale = tmp_path / "stale"
    shutil.copytree(reports["out"], stale)
    res = stale / "_results" / "01_cmr_llm_benchmark.json"
    os.utime(res, (time.time() - 86400,) * 2)
    s = _parse(run.write_front_page(stale).read_text()).sections["01_cmr_llm_benchmark"]
    assert "saved no headline figures" in s["text"] and "ours" not in [c for c, _ in s["rows"]]


# ---------------------------------------------------------------------------------------------
# a real browser
# ---------------------------------------------------------------------------------------------
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,2000",
                  "--disable-background-networking", "--no-first-run", "--disable-component-update",
                  "--disable-sync", "--disable-default-apps", "--no-default-browser-check", "--no-pings",
                  "--disable-extensions", "--disable-features=Translate,MediaRouter,OptimizationHints",
                  "--host-resolver-rules=MAP * ~NOTFOUND")


def _chromium() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


def test_screenshot_in_headless_chromium(reports, tmp_path, proxy_recorder):
    from PIL import Image, ImageStat

    exe = _chromium()
    if exe is None:
        pytest.skip("no Chromium on this machine (.ci/run installs Debian's chromium package)")
    shot = tmp_path / "front.png"
    cmd = [exe, *CHROMIUM_FLAGS, f"--proxy-server={proxy_recorder.url}", f"--user-data-dir={tmp_path / 'profile'}",
           f"--screenshot={shot}", (reports["out"] / "index.html").as_uri()]
    if shutil.which("unshare") and subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode == 0:
        cmd = ["unshare", "--net", *cmd]  # no network at all for the browser, where the kernel allows it
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)})
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    keep = os.environ.get("RADPRIV_FRONT_PAGE_SHOT")  # to look at it: RADPRIV_FRONT_PAGE_SHOT=/some/file.png
    if keep:
        shutil.copy(shot, keep)
    img = Image.open(shot).convert("RGB")
    assert img.size == (1280, 2000)
    gray = img.convert("L")
    assert ImageStat.Stat(gray).stddev[0] > 20  # not a blank page
    w = img.width
    regions = {"title and introduction": (0, 0, w, 220), "first study": (0, 250, w, 900),
               "second study and its figure": (w // 2, 900, w, 1600), "headline table": (0, 900, w // 2, 1600)}
    for name, box in regions.items():
        stat = ImageStat.Stat(gray.crop(box))
        assert stat.stddev[0] > 8, f"{name} {box} is uniform: {stat.stddev}"
    colours = img.resize((64, 100)).getcolors(64 * 100)
    assert len(colours) > 50  # text, tables, figures: many colours, not a plain error page
    assert proxy_recorder.bytes == 0
