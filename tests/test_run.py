"""Provenance, parameter files and report rendering (radpriv.run)."""

import json
from pathlib import Path

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
    p = run.load_params("01_cmr_llm_benchmark", "smoke", extra, {"seed": 9})
    assert p == {"limit": 5, "models": ["x"], "n_resamples": 200, "eval_splits": ["test"],
                 "configurations": ["zero-shot"], "profile": "smoke", "seed": 9}


def test_load_params_errors_name_the_file(tmp_path):
    with pytest.raises(run.ParamError, match="profile 'huge'"):
        run.load_params("x", "huge")
    with pytest.raises(run.ParamError, match="nope.yaml does not exist"):
        run.load_params("x", "smoke", tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(run.ParamError, match="bad.yaml: a parameter file must be a mapping"):
        run.load_params("x", "smoke", bad)


def test_unknown_parameter_is_refused_with_the_valid_names(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("manifests: [my.yaml]\n")  # Study 1 takes one `manifest`
    with pytest.raises(run.ParamError) as err:
        run.load_params("01_cmr_llm_benchmark", "default", f)
    msg = str(err.value)
    assert msg.startswith(f"{f}: notebook 01_cmr_llm_benchmark has no parameter 'manifests'; did you mean 'manifest'?")
    assert "(its parameters: manifest, models," in msg
    with pytest.raises(run.ParamError, match="-p regions: notebook 02_label_extraction has no parameter 'regions'"):
        run.load_params("02_label_extraction", "default", overrides={"regions": {}})


def test_wrong_type_is_refused(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("epsilons: 1\n")
    with pytest.raises(run.ParamError, match=r"parameter 'epsilons' of 03_dp_lora must be a list .*got a whole number 1"):
        run.load_params("03_dp_lora", "default", f)
    assert run.load_params("03_dp_lora", "default", overrides={"epsilons": [1, 2.5]})["epsilons"] == [1, 2.5]
    assert run.load_params("03_dp_lora", "default", overrides={"limit": 10})["limit"] == 10  # default None: any


def test_relative_paths_resolve_against_where_the_user_ran(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    f = tmp_path / "sub" / "p.yaml"
    f.write_text("manifest: data/my_manifest.yaml\nmodels: [smollm2-135m, models/mine.gguf]\n")
    monkeypatch.chdir(tmp_path)
    p = run.load_params("01_cmr_llm_benchmark", "default", "sub/p.yaml")
    assert p["manifest"] == str(tmp_path / "data" / "my_manifest.yaml")
    assert p["models"] == ["smollm2-135m", str(tmp_path / "models" / "mine.gguf")]  # names stay names


def test_runner_cli_refuses_bad_parameters_before_running(tmp_path, capsys):
    f = tmp_path / "p.yaml"
    f.write_text("lable_map: {}\n")
    assert run.main(["01_cmr_llm_benchmark", "--params", str(f), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no parameter 'lable_map'" in err and not (tmp_path / "index.html").exists()


def test_readme_parameter_table_matches_every_notebook():
    """The README's table of shared parameter names agrees with each notebook's parameters cell."""
    import re

    text = (paths.REPO / "README.md").read_text()
    table = text[text.index("| parameter | meaning |"):]
    table = table[:table.index("\n\n")]
    rows = [r for r in table.splitlines()[2:] if r.startswith("|")]
    assert rows
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        name = cells[0].strip("`")
        listed = set(re.findall(r"\b0[0-4]\b", cells[-1]))
        for stem in run.NOTEBOOK_ORDER:
            has = name in run.notebook_parameters(stem)
            assert has == (stem[:2] in listed), f"README says {name!r} in {sorted(listed)}; {stem}: {has}"


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
    record = json.loads((out / "toy.run.json").read_text())
    assert record["parameters"]["greeting"] == "hello"
    assert record["profile"] == "smoke" and len(record["cells_s"]) == 2  # code cells; not the injected one


def test_failed_notebook_is_rendered_and_reported(tmp_path, monkeypatch, capsys):
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
    assert "bad (smoke): cell 1 of 1 failed, " in capsys.readouterr().err
    timings = json.loads((tmp_path / "r" / "timings.json").read_text())
    assert timings["bad"]["smoke"]["status"] == "failed" and len(timings["bad"]["smoke"]["cells_s"]) == 1
    assert "failed after" in (tmp_path / "r" / "index.html").read_text()


@pytest.mark.parametrize("stem", run.NOTEBOOK_ORDER)
def test_notebook_defaults_are_the_default_profile(stem):
    """Opening a notebook in `make lab` runs the study the README and `make reports` describe: every value of
    the default profile is the parameters cell's default (profiles that differ say so in their own files)."""
    cell = run.notebook_parameters(stem)
    profile = yaml.safe_load((paths.PARAMS / f"{stem}.default.yaml").read_text()) or {}
    assert profile, f"{stem}.default.yaml is empty"
    for name, value in profile.items():
        assert name in cell, f"{stem}.default.yaml sets {name!r}, which the notebook does not have"
        assert cell[name] == value, f"{stem}: parameters cell {name} = {cell[name]!r}, default profile {value!r}"


def test_notebook_kernels_talk_over_unix_sockets_not_tcp():
    """The runner's kernel manager starts the project kernel on Unix domain sockets in a private directory: its
    five protocol channels (which execute code) are not reachable over TCP, it answers code, and shutdown removes
    the directory. The one TCP listener left is ipykernel's own, on 127.0.0.1 only: the pipe that carries output
    of forked subprocesses to IOPub (authenticated by a random token; not configurable)."""
    import asyncio
    import stat

    import psutil

    run.ensure_kernel(run.KERNEL_NAME)
    km = run._ipc_kernel_manager()(kernel_name=run.KERNEL_NAME)

    async def session():
        await km.start_kernel()
        try:
            kc = km.client()
            kc.start_channels()
            await kc.wait_for_ready(timeout=120)
            seen = []
            reply = await kc.execute_interactive("6 * 7", timeout=60,
                                                 output_hook=lambda m: seen.append(m["content"].get("data")))
            info = km.get_connection_info()
            sockets = [stat.S_ISSOCK(f.stat().st_mode) for f in Path(info["ip"]).parent.iterdir()]
            pid = km.provisioner.process.pid
            tcp = psutil.Process(pid).net_connections(kind="tcp")
            kc.stop_channels()
            return reply, seen, info, sockets, tcp
        finally:
            await km.shutdown_kernel(now=True)

    reply, seen, info, sockets, tcp = asyncio.run(session())
    assert reply["content"]["status"] == "ok" and {"text/plain": "42"} in seen
    assert info["transport"] == "ipc" and Path(info["ip"]).is_absolute() and len(info["ip"]) < 90
    assert sockets == [True] * 5  # shell, iopub, stdin, control, heartbeat: Unix domain sockets
    assert len(tcp) <= 1 and all(c.laddr.ip == "127.0.0.1" and c.status == "LISTEN" and not c.raddr for c in tcp), tcp
    assert not Path(info["ip"]).parent.exists()
