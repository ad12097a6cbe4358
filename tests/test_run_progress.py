"""Runner progress in the terminal (never in the reports), per-cell timings, timings.json, the published
reference budgets and the front page's timing table (radpriv.run).

A tiny notebook (3 code cells) is executed for real with papermill three times in one module fixture:
smoke (no earlier run, no reference), default (reference budget only), smoke again (the first run's time).
"""

import contextlib
import io
import json
import re
from html.parser import HTMLParser

import nbformat
import pytest

from radpriv import frontpage, paths, run

REF_DEFAULT_S = 754  # 12:34, the reference budget of the toy notebook's default profile


def _toy_notebook(nbdir):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("profile = 'default'\nn = 1")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# Toy"), params,
                nbformat.v4.new_code_cell("import time\nimport numpy as np\ntime.sleep(0.2)\nx = n * 2\n"
                                          "big = np.ones(50_000_000)  # 400 MB touched: the kernel's peak memory\n"
                                          "del big"),
                nbformat.v4.new_markdown_cell("Between the cells."),
                nbformat.v4.new_code_cell("print('result', x)")]
    nbformat.write(nb, str(nbdir / "toy.ipynb"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three real runs of the toy notebook; their records, stderr and timings.json after each."""
    root = tmp_path_factory.mktemp("progress")
    nbdir = root / "notebooks"
    (nbdir / "params").mkdir(parents=True)
    _toy_notebook(nbdir)
    (nbdir / "params" / "timings.yaml").write_text(
        "measured: {date: 2026-12-03, machine: test}\n"
        f"notebooks:\n  toy: {{smoke: null, default: {REF_DEFAULT_S}}}\n")
    out = root / "reports"
    result = {"out": out}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(paths, "NOTEBOOKS", nbdir)
        mp.setattr(paths, "PARAMS", nbdir / "params")
        mp.delenv(run.PROGRESS_ENV, raising=False)
        for name, profile, reuse in (("first", "smoke", False), ("default", "default", False),
                                     ("second", "smoke", False), ("reused", "smoke", True),
                                     ("changed", "smoke", True)):
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                rec = run.execute("toy", profile, out_dir=out, reuse=reuse,
                                  overrides={"n": 2} if name == "changed" else None)
            result[name] = {"record": rec, "stderr": err.getvalue(),
                            "run_json": json.loads((out / "toy.run.json").read_text()),
                            "timings": json.loads((out / "timings.json").read_text()),
                            "reader": (out / "toy.html").read_text(),
                            "reviewer": (out / "code" / "toy.html").read_text(),
                            "index": (out / "index.html").read_text()}
    return result


def test_progress_lines_go_to_stderr_not_into_the_html(runs):
    first = runs["first"]
    lines = first["stderr"].splitlines()
    for k in (1, 2, 3):
        assert any(f"toy (smoke): cell {k} of 3," in line and "elapsed" in line for line in lines), lines
    assert "cell 4 of" not in first["stderr"]  # papermill's injected-parameters cell is not counted
    assert re.search(r"cell 3 of 3, \d+:\d\d elapsed", first["stderr"])
    assert "no earlier run" in first["stderr"]  # nothing to expect yet: no run, no reference for smoke
    for page in (first["reader"], first["reviewer"]):
        assert "result 2" in page
        assert "cell 1 of" not in page and "expected" not in page


def test_run_record_holds_per_cell_seconds(runs):
    rec = runs["first"]["run_json"]
    assert rec["profile"] == "smoke" and rec["status"] == "ok" and rec["code_cells"] == 3
    assert len(rec["cells_s"]) == 3
    assert all(isinstance(s, (int, float)) and s >= 0 for s in rec["cells_s"])
    assert rec["cells_s"][1] >= 0.2  # the cell that sleeps
    assert sum(rec["cells_s"]) <= rec["wall_time_s"]
    assert rec["cpu_count"] >= 1


def test_timings_json_keeps_profiles_side_by_side(runs):
    timings = runs["default"]["timings"]
    assert set(timings["toy"]) == {"smoke", "default"}
    smoke, default = timings["toy"]["smoke"], timings["toy"]["default"]
    assert smoke["wall_time_s"] == runs["first"]["record"]["wall_time_s"]
    assert default["wall_time_s"] == runs["default"]["record"]["wall_time_s"]
    for entry in (smoke, default):
        assert entry["status"] == "ok" and len(entry["cells_s"]) == 3 and entry["cpu_count"] >= 1
        assert entry["started"]
    # the second smoke run replaces the first one's entry; default stays
    after = runs["second"]["timings"]["toy"]
    assert after["smoke"]["wall_time_s"] == runs["second"]["record"]["wall_time_s"]
    assert after["default"] == default


def test_reference_budget_is_expected_without_an_earlier_run(runs):
    err = runs["default"]["stderr"]
    assert "expected ~12:34 (reference, 2 idle cores)" in err
    assert "toy (default): cell 3 of 3" in err


def test_second_run_expects_the_first_runs_time(runs):
    first = runs["first"]["record"]
    err = runs["second"]["stderr"]
    expected = f"expected ~{frontpage.fmt_duration(first['wall_time_s'])} from the last run"
    lines = [line for line in err.splitlines() if "cell 1 of 3" in line]
    assert lines and expected in lines[0], err
    # what is left after cell 1 is the first run's time of cells 2 and 3
    left = frontpage.fmt_duration(sum(first["cells_s"][1:]))
    assert f"~{left} left" in lines[0]


def test_progress_is_off_with_quiet_or_env(monkeypatch):
    monkeypatch.setenv(run.PROGRESS_ENV, "0")
    assert run._progress_stream() is None
    assert run._progress_stream(quiet=False) is not None
    monkeypatch.delenv(run.PROGRESS_ENV)
    assert run._progress_stream() is not None and run._progress_stream(quiet=True) is None
    silent = run.RunProgress("toy", "smoke", 2, stream=None)
    silent.cell_done(1.0)
    assert silent.cells_s == [1.0]  # timed even when quiet


def test_progress_rewrites_one_line_on_a_tty():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    stream = Tty()
    prog = run.RunProgress("nb", "default", 2, {"total_s": 100, "cells_s": [30, 60], "source": "from the last run"},
                           stream=stream)
    prog.cell_done(29)
    prog.cell_done(61)
    prog.close()
    text = stream.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n") and text.count("\n") == 1
    assert "cell 1 of 2" in text and "~1:00 left" in text and "cell 2 of 2" in text


def test_progress_estimates_from_the_total_when_cells_differ():
    stream = io.StringIO()
    prog = run.RunProgress("nb", "full", 3, {"total_s": 600, "cells_s": [1, 2], "source": "from the last run"},
                           stream=stream, t0=0.0)  # t0=0: elapsed is huge, far past the expectation
    prog.cell_done(1)
    assert "expected ~10:00 from the last run" in stream.getvalue() and "over it" in stream.getvalue()


def test_reference_timings_errors_name_the_file_and_key(tmp_path):
    f = tmp_path / "timings.yaml"
    cases = {
        "notebooks:\n  99_nope: {smoke: 1}\n":
            r"timings.yaml: notebooks.99_nope: unknown notebook \(known: 00_data_overview",
        "notebooks:\n  03_dp_lora: {huge: 1}\n":
            r"timings.yaml: notebooks.03_dp_lora.huge: unknown profile \(known: smoke, default, full, cached_default\)",
        "notebooks:\n  03_dp_lora: {smoke: soon}\n": r"timings.yaml: notebooks.03_dp_lora.smoke: must be seconds",
        "notebooks:\n  03_dp_lora: {smoke: -3}\n": r"timings.yaml: notebooks.03_dp_lora.smoke: must be seconds",
        "budgets: {}\n": r"timings.yaml: unknown key 'budgets' \(known: measured, notebooks\)",
        "measured: {dat: 2026-12-01}\n": r"timings.yaml: measured.dat: unknown key",
        "- 1\n": r"timings.yaml: must be a mapping",
        "notebooks: {03_dp_lora: [1, 2]}\n": r"timings.yaml: notebooks.03_dp_lora: must be a mapping",
    }
    for text, pattern in cases.items():
        f.write_text(text)
        with pytest.raises(run.TimingsError, match=pattern):
            run.reference_timings(f)
    with pytest.raises(run.TimingsError, match="missing.yaml: no such file"):
        run.reference_timings(tmp_path / "missing.yaml")
    f.write_text("notebooks:\n  03_dp_lora: {smoke: '2:30', default: 1620.5, full: '1:02:03'}\n")
    ref = run.reference_timings(f)["notebooks"]
    assert ref["03_dp_lora"] == {"smoke": 150.0, "default": 1620.5, "full": 3723.0, "cached_default": None}
    assert ref["00_data_overview"]["smoke"] is None


def test_the_published_budgets_file_is_valid():
    ref = run.reference_timings()
    assert ref["path"] == str(paths.PARAMS / "timings.yaml") and (paths.PARAMS / "timings.yaml").exists()
    assert set(ref["notebooks"]) == set(run.NOTEBOOK_ORDER)
    assert list(frontpage.STUDIES) == list(run.NOTEBOOK_ORDER)


class _Rows(HTMLParser):
    """Rows of the table with id="timings" as lists of cell texts."""

    def __init__(self):
        super().__init__()
        self.rows, self._in, self._cell = [], False, None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._in = dict(attrs).get("id") == "timings"
        elif self._in and tag == "tr":
            self.rows.append([])
        elif self._in and tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "table":
            self._in = False
        elif self._in and tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def test_index_shows_the_timing_table(tmp_path, monkeypatch):
    params = tmp_path / "params"
    params.mkdir()
    (params / "timings.yaml").write_text(
        "measured: {date: 2026-12-03, machine: '2 CPU cores, no GPU'}\n"
        "notebooks:\n  01_cmr_llm_benchmark: {smoke: 100, default: '20:00', full: '1:02:03', cached_default: 60}\n"
        "  03_dp_lora: {default: 1620}\n")
    monkeypatch.setattr(paths, "PARAMS", params)
    out = tmp_path / "reports"
    out.mkdir()
    timings = {
        "01_cmr_llm_benchmark": {
            "smoke": {"wall_time_s": 95.4, "started": "2026-12-03T10:00:00+00:00", "status": "ok", "cpu_count": 2,
                      "cells_s": [1, 2]},
            "default": {"wall_time_s": 754.2, "started": "2026-12-03T11:00:00+00:00", "status": "ok",
                        "cpu_count": 2, "cells_s": [1, 2]},
            "cached_default": {"wall_time_s": 3.2, "started": "2026-12-03T12:00:00+00:00", "status": "ok",
                               "cpu_count": 2, "cells_s": [1, 2]}},
        "03_dp_lora": {
            "default": {"wall_time_s": 1500, "started": "2026-12-04T09:30:00+00:00", "status": "ok", "cpu_count": 2,
                        "cells_s": []},
            "full": {"wall_time_s": 42, "started": "2026-12-04T08:00:00+00:00", "status": "failed", "cpu_count": 2,
                     "cells_s": []}},
    }
    (out / "timings.json").write_text(json.dumps(timings))
    (out / "01_cmr_llm_benchmark.run.json").write_text(json.dumps({
        "notebook": "01_cmr_llm_benchmark", "profile": "default", "status": "ok", "wall_time_s": 754.2,
        "started": "2026-12-03T11:00:00+00:00", "html": "01_cmr_llm_benchmark.html",
        "html_code": "code/01_cmr_llm_benchmark.html"}))
    (out / "code").mkdir()
    for report in ("01_cmr_llm_benchmark.html", "code/01_cmr_llm_benchmark.html"):  # linked only when there
        (out / report).write_text("<html></html>")
    page = run.write_front_page(out).read_text()

    parser = _Rows()
    parser.feed(page)
    head = parser.rows[1]
    assert head == ["smoke", "default", "full", "default, cached", "smoke", "default", "full", "default, cached"]
    rows = {r[0]: r[1:] for r in parser.rows[2:]}
    assert list(rows) == list(run.NOTEBOOK_ORDER) + ["total"]
    assert rows["01_cmr_llm_benchmark"] == ["1:35", "12:34", "–", "0:03", "1:40", "20:00", "1:02:03", "1:00"]
    assert rows["03_dp_lora"] == ["–", "25:00", "failed after 0:42", "–", "–", "27:00", "–", "–"]
    assert rows["00_data_overview"] == ["–"] * 8
    assert rows["total"][:2] == ["1:35 (1 of 5)", "37:34 (2 of 5)"]
    assert rows["total"][2] == "–"  # a failed run is not a measured time
    assert "Can several local open LLMs classify cardiac MRI reports" in page
    assert 'href="01_cmr_llm_benchmark.html"' in page and 'href="code/01_cmr_llm_benchmark.html"' in page
    assert re.search(r"This machine: \d+ CPU cores", page)
    assert "Latest run: 2026-12-04 09:30 UTC" in page
    assert "measured 2026-12-03" in page and "timings.yaml" in page
    assert "http://" not in page and "https://" not in page and "src=" not in page


def test_run_record_holds_the_kernels_peak_memory(runs):
    """The kernel writes its peak resident memory at exit; the toy notebook touched a 400 MB array."""
    rec = runs["first"]["run_json"]
    assert rec["peak_rss_gb"] is not None
    assert 400e6 / 2**30 <= rec["peak_rss_gb"] < 4.0
    assert runs["first"]["timings"]["toy"]["smoke"]["peak_rss_gb"] == rec["peak_rss_gb"]


def test_unchanged_inputs_render_the_last_run_again(runs):
    """A re-run with the same inputs re-renders the last execution (no kernel); other parameters execute."""
    second, reused, changed = runs["second"]["run_json"], runs["reused"]["run_json"], runs["changed"]["run_json"]
    assert second["inputs_sha256"] and reused["inputs_sha256"] == second["inputs_sha256"]
    assert reused["reused_from"] == {"started": second["started"], "wall_time_s": second["wall_time_s"]}
    assert reused["cells_s"] == second["cells_s"] and "cell 1 of" not in runs["reused"]["stderr"]
    assert "inputs unchanged since the run of" in runs["reused"]["stderr"]
    assert "result 2" in runs["reused"]["reader"]
    timings = runs["reused"]["timings"]["toy"]
    assert timings["smoke"]["wall_time_s"] == second["wall_time_s"]  # the computed run's time is kept
    assert timings["cached_smoke"]["wall_time_s"] == reused["wall_time_s"]
    assert "reused_from" not in changed and changed["inputs_sha256"] != second["inputs_sha256"]
    assert "result 4" in runs["changed"]["reader"] and "cell 3 of 3" in runs["changed"]["stderr"]
    index = (runs["out"] / "index.html").read_text()
    assert "inputs unchanged since" in runs["reused"]["index"]
    assert "inputs unchanged since" not in index  # the latest record ("changed") was executed
    page = run.write_front_page(runs["out"]).read_text()
    assert "toy" in page


def test_inputs_digest_covers_the_package_and_refuses_user_files(tmp_path, monkeypatch):
    nb = tmp_path / "toy.ipynb"
    nb.write_text("{}")
    a = run.inputs_digest(nb, {"n": 1})
    assert a == run.inputs_digest(nb, {"n": 1}) and a != run.inputs_digest(nb, {"n": 2})
    monkeypatch.setenv("RADPRIV_ALLOW_HOSTS", "gpu-box.lan")
    assert run.inputs_digest(nb, {"n": 1}) != a
    mine = tmp_path / "my_manifest.yaml"
    mine.write_text("name: x\n")
    assert run.inputs_digest(nb, {"manifest": str(mine)}) is None  # a user's own files: always executed
    assert run.inputs_digest(nb, {"manifests": {"chest": str(mine)}}) is None
    assert run.inputs_digest(nb, {"manifest": "synthetic_cmr"}) is not None  # bundled names are covered


def test_peak_memory_is_the_processs_own_not_its_parents():
    """A process started by fork + exec inherits its parent's high-water mark into ru_maxrss; the kernel's peak
    is its own (VmHWM): a fresh child of a parent holding 800 MB reports far less, and counts what it touches."""
    import subprocess
    import sys

    import numpy as np

    held = np.ones(100_000_000)  # 800 MB resident in this (parent) process
    code = ("import numpy as np; from radpriv.kernel import peak_rss_bytes; a = peak_rss_bytes(); "
            "b = np.ones(40_000_000); print(a, peak_rss_bytes())")
    before, after = map(int, subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                            check=True).stdout.split())
    assert held.sum() == 1e8
    assert before < 300e6  # the interpreter and numpy, not the parent's 800 MB
    assert after - before >= 300e6  # the child's own 320 MB array counts
