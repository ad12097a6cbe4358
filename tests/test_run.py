"""Provenance, parameter files and report rendering (radpriv.run)."""

import json

import nbformat
import pytest
import yaml

from radpriv import paths, run


def test_provenance_lists_params_versions_data_and_models(tmp_path):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"abc")

    class DS:
        name = "toy"
        sha256 = "f" * 64
        frame = [1, 2, 3]

    prov = run.provenance({"seed": 3, "models": ["a", "b"]}, datasets=[DS()], models=[model])
    assert prov["parameters"] == {"seed": 3, "models": ["a", "b"]}
    assert prov["packages"]["torch"] != "not installed"
    assert prov["datasets"] == [{"name": "toy", "sha256": "f" * 64, "rows": 3}]
    # sha256 of b"abc"
    assert prov["models"][0]["sha256"] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    html = run.provenance_html(prov)
    for needle in ("Parameters", "seed", "toy", "ba7816bf", "torch"):
        assert needle in html


def test_load_params_layers_profile_file_and_overrides(tmp_path):
    extra = tmp_path / "mine.yaml"
    extra.write_text(yaml.safe_dump({"limit": 5, "models": ["x"]}))
    p = run.load_params("no_such_notebook", "smoke", extra, {"seed": 9})
    assert p == {"limit": 5, "models": ["x"], "profile": "smoke", "seed": 9}


def test_load_params_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="profile 'huge'"):
        run.load_params("x", "huge")
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        run.load_params("x", "smoke", tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="bad.yaml: a parameter file must be a mapping"):
        run.load_params("x", "smoke", bad)


def test_unknown_notebook_is_refused_with_known_names(tmp_path):
    with pytest.raises(FileNotFoundError, match="no notebook"):
        run.execute("99_missing", out_dir=tmp_path)


def test_execute_renders_reader_and_reviewer_html_and_index(tmp_path, monkeypatch):
    nbdir = tmp_path / "notebooks"
    (nbdir / "params").mkdir(parents=True)
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("greeting = 'hi'\nprofile = 'default'")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# Toy"), params,
                nbformat.v4.new_code_cell("SECRET_CODE_LINE = 1\nprint(greeting * 2)")]
    nbformat.write(nb, str(nbdir / "toy.ipynb"))
    (nbdir / "params" / "toy.smoke.yaml").write_text("greeting: hello\n")
    monkeypatch.setattr(paths, "NOTEBOOKS", nbdir)
    monkeypatch.setattr(paths, "PARAMS", nbdir / "params")
    out = tmp_path / "reports"
    rec = run.execute("toy", "smoke", out_dir=out)
    assert rec["status"] == "ok"
    reader = (out / "toy.html").read_text()
    reviewer = (out / "code" / "toy.html").read_text()
    assert "hellohello" in reader and "SECRET_CODE_LINE" not in reader
    assert "SECRET_CODE_LINE" in reviewer
    assert 'href="toy.html"' in (out / "index.html").read_text()
    assert json.loads((out / "toy.run.json").read_text())["parameters"]["greeting"] == "hello"


def test_failed_notebook_is_rendered_and_reported(tmp_path, monkeypatch):
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("raise ValueError('boom in cell')")]
    nbformat.write(nb, str(nbdir / "bad.ipynb"))
    monkeypatch.setattr(paths, "NOTEBOOKS", nbdir)
    monkeypatch.setattr(paths, "PARAMS", nbdir / "params")
    with pytest.raises(RuntimeError, match="notebook bad failed"):
        run.execute("bad", "smoke", out_dir=tmp_path / "r")
    assert "boom in cell" in (tmp_path / "r" / "bad.html").read_text()
    assert json.loads((tmp_path / "r" / "bad.run.json").read_text())["status"] == "failed"
