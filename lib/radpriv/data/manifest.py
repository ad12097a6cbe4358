"""Data manifests and validated loading.

A manifest (``data_manifests/<name>.yaml``) says where a dataset's files are and how to read them::

    name: my_reports                 # unique name
    title: My hospital's CMR reports
    access: local                    # open | credentialed | local
    license: internal use only
    citation: ""
    schema: cmr                      # a bundled schema name or a path to your own schema YAML
    files:
      - path: ${MY_DATA}/reports.csv # ${VAR} and ~ are expanded; relative paths are relative to the manifest
        sha256: 3f1c...              # optional for your own data; verified when given
      - path: labels.csv             # optional second file joined on the id column
        role: labels
    columns:
      id: ReportID
      text: ReportText               # or a list of columns joined with a blank line
      split: Split                   # optional; otherwise `splits:` below assigns them
      label: Diagnosis               # single-label schemas: the category column
      reader: Cardiologist           # optional human-reader column (single-label)
      labels: auto                   # multi-label: every other column is a label, or a list of columns
      keep: [Age]                    # other columns carried along unvalidated
    label_map: {"Pleural Effusion": pleural_effusion}   # dataset label names -> schema ids
    value_map: {1: present, 0: absent, -1: uncertain, "": not_mentioned}
    splits: {seed: 0, fractions: [0.6, 0.2, 0.2]}
    generator: {corpus: cmr, seed: 0, n: 180}   # synthetic corpora only: file is generated on first use

``load_dataset`` returns a :class:`Dataset` whose ``frame`` follows the project convention:
``report_id, text, split``, one State column per finding (multi-label) or ``label`` (single-label),
optional ``reader``, then kept columns. Every problem raises :class:`DataError` naming the file,
the row and the field, and what to do; no row is ever dropped silently.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from radpriv import paths
from radpriv.schemas import Schema, State, load_schema


class DataError(ValueError):
    """A data or manifest problem, with the file, row and field it concerns."""

    def __init__(self, file: str | Path, message: str, row: int | None = None, field: str | None = None,
                 hint: str = ""):
        where = str(file)
        if row is not None:
            where += f", row {row}"
        if field is not None:
            where += f", field {field!r}"
        super().__init__(f"{where}: {message}" + (f" -- {hint}" if hint else ""))
        self.file, self.row, self.field = str(file), row, field


@dataclass
class Dataset:
    name: str
    schema: Schema
    frame: pd.DataFrame
    manifest: dict
    manifest_path: Path | None
    files: list[dict] = field(default_factory=list)
    sha256: str = ""

    @property
    def label_columns(self) -> list[str]:
        return ["label"] if self.schema.task == "single" else list(self.schema.ids)

    def split(self, name: str) -> pd.DataFrame:
        return self.frame[self.frame["split"] == name].reset_index(drop=True)

    def describe(self) -> dict:
        return {"name": self.name, "schema": self.schema.name, "rows": len(self.frame),
                "access": self.manifest.get("access", ""), "sha256": self.sha256,
                "files": "; ".join(f"{Path(f['path']).name}:{f['sha256'][:12]}" for f in self.files)}


_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand(text: str, manifest_path: Path | None) -> Path:
    def sub(m: re.Match) -> str:
        var, default = m.group(1), m.group(2)
        if var == "RADPRIV_DATA":
            return os.environ.get(var, str(paths.data_dir()))
        if var == "RADPRIV_REPO":
            return os.environ.get(var, str(paths.REPO))
        val = os.environ.get(var, default)
        if val is None:
            raise DataError(manifest_path or "<manifest>", f"environment variable {var} is not set",
                            field="files", hint=f"export {var}=/path/to/the/data (see the manifest's comments)")
        return val

    p = Path(os.path.expanduser(_ENV_RE.sub(sub, str(text))))
    if not p.is_absolute() and manifest_path is not None:
        p = manifest_path.parent / p
    return p


def available_manifests() -> list[str]:
    return sorted(p.stem for p in paths.MANIFESTS.glob("*.yaml"))


def load_manifest(name_or_path: str | Path) -> tuple[dict, Path]:
    p = Path(name_or_path)
    if p.suffix not in (".yaml", ".yml"):
        p = paths.MANIFESTS / f"{name_or_path}.yaml"
        if not p.exists():
            raise DataError(p, f"no manifest named {name_or_path!r}",
                            hint=f"bundled: {', '.join(available_manifests())}; or pass the path of your manifest")
    if not p.exists():
        raise DataError(p, "manifest file does not exist", hint="check the path")
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise DataError(p, f"not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise DataError(p, "a manifest must be a mapping (name, schema, files, columns, ...)")
    for key in ("name", "schema", "files", "columns"):
        if key not in doc:
            raise DataError(p, "missing required key", field=key, hint="see data_manifests/byo_csv.yaml for the format")
    if not isinstance(doc["files"], list) or not doc["files"]:
        raise DataError(p, "must list at least one file", field="files")
    return doc, p


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _read_csv(path: Path) -> pd.DataFrame:
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(path, f"bytes that are not valid UTF-8 at byte offset {exc.start} (line {line}, "
                        f"data row {line - 1})", row=line - 1,
                        hint="re-export the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None
    opts: dict[str, Any] = {"dtype": str, "keep_default_na": False, "encoding": "utf-8"}
    if path.suffix == ".gz":
        opts["compression"] = "gzip"
    sep = "\t" if path.suffix in (".tsv",) else ","
    try:
        return pd.read_csv(path, sep=sep, **opts)
    except pd.errors.ParserError as exc:
        raise DataError(path, f"cannot parse as CSV: {exc}") from None


def _resolve_files(doc: dict, mpath: Path | None, data_root: str | Path | None, verify: bool) -> list[dict]:
    out = []
    for i, spec in enumerate(doc["files"]):
        if "path" not in spec:
            raise DataError(mpath, "file entry has no path", field=f"files[{i}].path")
        path = Path(data_root) / Path(spec["path"]).name if data_root else _expand(spec["path"], mpath)
        gen = doc.get("generator")
        if not path.exists() and gen and i == 0:
            from radpriv.data.synthetic import write_corpus

            write_corpus(gen["corpus"], path, seed=int(gen.get("seed", 0)), n=gen.get("n"))
        if not path.exists():
            hint = ("this dataset is credentialed/local: set the path in the manifest or its environment variable"
                    if doc.get("access") in ("credentialed", "local") else "check the path or download the data")
            raise DataError(path, f"file not found (manifest {mpath})", field=f"files[{i}].path", hint=hint)
        actual = sha256_file(path) if path.is_file() else ""
        expected = str(spec["sha256"]) if spec.get("sha256") is not None else None
        if verify and expected and actual != expected:
            raise DataError(path, f"sha256 mismatch: expected {expected}, got {actual}", field=f"files[{i}].sha256",
                            hint="the file changed or is not the one the manifest describes; restore it, "
                                 "or update sha256 in the manifest if the change is intended")
        out.append({"path": str(path), "sha256": actual, "role": spec.get("role", "reports"),
                    "format": spec.get("format", "csv")})
    return out


def _states(series: pd.Series, value_map: dict, path: Path, fid: str, col: str, ids: pd.Series) -> list[str]:
    vm = {str(k).strip(): v for k, v in (value_map or {}).items()}
    out = []
    for i, raw in enumerate(series):
        key = str(raw).strip()
        try:
            out.append(State.parse(vm[key] if key in vm else key).value)
        except ValueError:
            allowed = ", ".join(sorted(vm)) if vm else "present/absent/uncertain/not_mentioned (or 1/0/-1/blank)"
            raise DataError(path, f"label value {raw!r} (report {ids.iloc[i]}) is outside the schema's states",
                            row=i + 1, field=col, hint=f"allowed: {allowed}; extend value_map in the manifest") from None
    return out


def load_dataset(manifest: str | Path, data_root: str | Path | None = None, verify: bool = True) -> Dataset:
    """Load and validate a dataset described by a manifest (bundled name or path)."""
    doc, mpath = load_manifest(manifest)
    try:
        schema = load_schema(_expand(doc["schema"], mpath) if str(doc["schema"]).endswith((".yaml", ".yml"))
                             else doc["schema"])
    except (FileNotFoundError, ValueError) as exc:
        raise DataError(mpath, str(exc), field="schema") from None
    files = _resolve_files(doc, mpath, data_root, verify)
    cols = doc["columns"]
    main = files[0]
    if main["format"] == "mimic_reports":
        from radpriv.data.mimic import read_reports

        df = read_reports(Path(main["path"]))
    else:
        df = _read_csv(Path(main["path"]))
    src = Path(main["path"])
    id_col = cols.get("id")
    if not id_col:
        raise DataError(mpath, "the id column is not named", field="columns.id")
    for lf in files[1:]:
        if lf["role"] != "labels":
            continue
        lab = _read_csv(Path(lf["path"]))
        key = cols.get("join", id_col)
        for frame, f in ((df, src), (lab, Path(lf["path"]))):
            if key not in frame.columns:
                raise DataError(f, "join column missing", row=None, field=key,
                                hint=f"columns present: {', '.join(map(str, frame.columns[:20]))}")
        df = df.merge(lab, on=key, how="left", suffixes=("", "__labels"), indicator=True)
        missing = df.index[df["_merge"] != "both"].tolist()
        if missing:
            raise DataError(lf["path"], f"{len(missing)} reports have no label row, e.g. id "
                            f"{df.at[missing[0], id_col]}", row=missing[0] + 1, field=key,
                            hint="every report needs a label row; remove it from the report file or add labels")
        df = df.drop(columns="_merge")

    text_cols = cols.get("text")
    text_cols = [text_cols] if isinstance(text_cols, str) else list(text_cols or [])
    needed = [id_col, *text_cols] + [cols[k] for k in ("split", "label", "reader") if cols.get(k)]
    for c in needed:
        if c not in df.columns:
            raise DataError(src, "missing column", field=c,
                            hint=f"columns present: {', '.join(map(str, df.columns[:25]))}; fix `columns` in {mpath}")
    if not text_cols:
        raise DataError(mpath, "the text column is not named", field="columns.text")

    ids = df[id_col].astype(str).str.strip()
    for i, v in enumerate(ids):
        if not v:
            raise DataError(src, "empty id", row=i + 1, field=id_col, hint="every report needs an id")
    dup = ids[ids.duplicated(keep=False)]
    if len(dup):
        first = dup.iloc[0]
        rows = [i + 1 for i in dup.index[dup == first]]
        raise DataError(src, f"duplicate id {first!r} in rows {rows} ({dup.nunique()} duplicated ids in all)",
                        row=rows[1], field=id_col, hint="ids must be unique; de-duplicate the file")
    text = df[text_cols[0]].astype(str)
    for c in text_cols[1:]:
        text = text.str.cat(df[c].astype(str), sep="\n\n")
    for i, t in enumerate(text):
        if not t.strip():
            raise DataError(src, f"empty report text (report {ids.iloc[i]})", row=i + 1, field=",".join(text_cols),
                            hint="fill in the text or remove the row")
    out = pd.DataFrame({"report_id": ids.to_numpy(), "text": text.to_numpy()})

    label_map = doc.get("label_map") or {}
    value_map = doc.get("value_map") or {}
    keep = list(cols.get("keep") or [])
    if schema.task == "single":
        lc = cols.get("label")
        if not lc:
            raise DataError(mpath, "single-label schema needs columns.label", field="columns.label")
        vals = []
        for i, v in enumerate(df[lc]):
            try:
                vals.append(schema.resolve(str(v).strip(), label_map))
            except KeyError:
                raise DataError(src, f"label {v!r} (report {ids.iloc[i]}) is not a category of schema {schema.name}",
                                row=i + 1, field=lc, hint=f"categories: {', '.join(schema.ids)}; "
                                "map your names with label_map in the manifest") from None
        out["label"] = vals
    else:
        spec = cols.get("labels", "auto")
        reserved = {id_col, *text_cols, *(cols.get(k) for k in ("split", "reader", "join") if cols.get(k)), *keep}
        label_cols = ([c for c in df.columns if c not in reserved and not str(c).endswith("__labels")]
                      if spec == "auto" else list(spec))
        mapped: dict[str, str] = {}
        for c in label_cols:
            if c not in df.columns:
                raise DataError(src, "missing label column", field=c, hint=f"fix columns.labels in {mpath}")
            try:
                fid = schema.resolve(str(c), label_map)
            except KeyError:
                raise DataError(src, f"column {c!r} is not a finding of schema {schema.name}", field=c,
                                hint="map it with label_map, list it under columns.keep, or drop it") from None
            if fid in mapped.values():
                raise DataError(src, f"two columns map to finding {fid!r}", field=c)
            mapped[c] = fid
        for c, fid in mapped.items():
            out[fid] = _states(df[c], value_map, src, fid, c, ids)
        for fid in schema.ids:  # findings the dataset does not annotate
            if fid not in out.columns:
                out[fid] = State.NOT_MENTIONED.value
        out = out[["report_id", "text", *schema.ids]]

    if cols.get("split"):
        sp = df[cols["split"]].astype(str).str.strip().str.lower().replace({"val": "validation", "valid": "validation", "dev": "validation"})
        bad = sp[~sp.isin(["train", "validation", "test"])]
        if len(bad):
            i = bad.index[0]
            raise DataError(src, f"split value {df.at[i, cols['split']]!r} is not train/validation/test", row=i + 1,
                            field=cols["split"])
        out.insert(2, "split", sp.to_numpy())
    else:
        from radpriv.data.splits import assign_splits

        sconf = doc.get("splits") or {}
        if schema.task == "single":
            strat = out["label"].to_numpy()
        else:
            strat = (out[schema.ids].isin(["present", "uncertain"])).astype(int).to_numpy()
        out.insert(2, "split", assign_splits(strat, seed=int(sconf.get("seed", 0)),
                                             fractions=tuple(sconf.get("fractions", (0.6, 0.2, 0.2)))))
    if cols.get("reader"):
        rv = []
        for i, v in enumerate(df[cols["reader"]]):
            v = str(v).strip()
            if not v:
                rv.append("")
                continue
            try:
                rv.append(schema.resolve(v, label_map))
            except KeyError:
                raise DataError(src, f"reader label {v!r} is not a category of schema {schema.name}", row=i + 1,
                                field=cols["reader"]) from None
        out["reader"] = rv
    for c in keep:
        if c not in df.columns:
            raise DataError(src, "missing column listed under columns.keep", field=c)
        out[c] = df[c].to_numpy()
    combined = hashlib.sha256("".join(f["sha256"] for f in files).encode()).hexdigest() if len(files) > 1 else files[0]["sha256"]
    return Dataset(name=doc["name"], schema=schema, frame=out, manifest=doc, manifest_path=mpath, files=files,
                   sha256=combined)
