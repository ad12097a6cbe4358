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
    splits: {seed: 0, fractions: [0.6, 0.2, 0.2]}   # zeros allowed: [0.8, 0, 0.2]; `splits: none` = all test
    generator: {corpus: cmr, seed: 0, n: 180}   # synthetic corpora only: file is generated on first use
    rules: my_rules.yaml             # optional: your own rule-baseline rules (see radpriv.baselines.rules)

Manifests are validated by :class:`Manifest` (pydantic; unknown keys are refused at every level, with a
"did you mean" suggestion). ``radpriv data check M`` loads a manifest and its data and prints what it found.

``load_dataset`` returns a :class:`Dataset` whose ``frame`` follows the project convention:
``report_id, text, split``, one State column per finding (multi-label) or ``label`` (single-label),
optional ``reader``, then kept columns. Every problem raises :class:`DataError` naming the file,
the row and the field, and what to do; no row is ever dropped silently.
"""

from __future__ import annotations

import difflib
import gzip
import hashlib
import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import pandas as pd
import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from radpriv import paths
from radpriv.data.errors import DataError
from radpriv.data.mimic import read_reports
from radpriv.hashing import file_sha256
from radpriv.schemas import Schema, State, load_schema


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

    @property
    def rules(self) -> Path | None:
        """The manifest's own rules file for the rule baseline (``rules:``), resolved; None: bundled rules."""
        r = self.manifest.get("rules")
        return _expand(r, self.manifest_path) if r else None

    @property
    def evaluation_only(self) -> bool:
        """True when the dataset has no train reports (e.g. ``splits: none``): usable for evaluation only."""
        return not bool((self.frame["split"] == "train").any())

    def split(self, name: str) -> pd.DataFrame:
        return self.frame[self.frame["split"] == name].reset_index(drop=True)

    def training_examples(self, schema: Schema | None = None) -> pd.DataFrame:
        """The labelled training reports that few-shot examples are drawn from (never another split). With
        ``schema``, the reports must be labelled with that schema (same findings): examples from another
        manifest. Raises :class:`DataError` saying what to name instead."""
        where = self.manifest_path or self.name
        if schema is not None and list(schema.ids) != list(self.schema.ids):
            raise DataError(where, f"its reports are labelled with schema {self.schema.name}, the reports to label "
                            f"with {schema.name}", field="schema",
                            hint=f"draw examples from a labelled manifest of schema {schema.name}")
        if self.evaluation_only:
            raise DataError(where, f"no training split to draw examples from (splits: "
                            f"{sorted(self.frame['split'].unique())})", field="split",
                            hint="name another manifest with a train split as the examples' source "
                                 "(--examples-from / examples_from)")
        return self.split("train")

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


# --------------------------------------------------------------------------------------------- the manifest model


def _scalar_to_str(v: Any) -> Any:
    """YAML reads a column named 2020 as a number: take it as the text it was written as."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v)
    return v


def _text_or_empty(v: Any) -> Any:
    return "" if v is None else _scalar_to_str(v)


Name = Annotated[str, BeforeValidator(_scalar_to_str), Field(min_length=1)]
Text = Annotated[str, BeforeValidator(_text_or_empty)]
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Int = Annotated[int, Field(strict=True)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileSpec(_Strict):
    """One entry of ``files``: the report file first, then optional label files joined on the id."""

    path: Name
    sha256: str | None = None
    role: Literal["reports", "labels"] = "reports"
    format: Literal["csv", "mimic_reports"] = "csv"

    @field_validator("sha256", mode="before")
    @classmethod
    def _sha(cls, v: Any) -> Any:
        if v is None or v == "":
            return None
        if not isinstance(v, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", v.strip()):
            raise ValueError(f"must be 64 hexadecimal digits (what `sha256sum FILE` prints), got {str(v)[:80]!r}; "
                             "or leave the line out")
        return v.strip().lower()


def _as_list(v: Any) -> Any:
    return [v] if isinstance(v, (str, int, float)) and not isinstance(v, bool) else v


def _auto_or_list(v: Any) -> Any:
    if v is None or (isinstance(v, str) and v.strip().lower() == "auto"):
        return None
    if isinstance(v, str):
        raise ValueError(f"must be `auto` (every column not named elsewhere is a label) or a list of column names, "
                         f"got {v!r}")
    return v


class Columns(_Strict):
    """``columns``: which CSV column holds what."""

    id: Name
    text: Annotated[list[Name], BeforeValidator(_as_list), Field(min_length=1)]
    split: Name | None = None
    label: Name | None = None
    reader: Name | None = None
    labels: Annotated[list[Name] | None, BeforeValidator(_auto_or_list)] = None  # None: auto
    keep: Annotated[list[Name], BeforeValidator(lambda v: [] if v is None else _as_list(v))] = []
    join: Name | None = None


def _check_fractions(v: list[float]) -> list[float]:
    from radpriv.data.splits import check_fractions

    return list(check_fractions(v))


class Splits(_Strict):
    """``splits``: how reports are assigned when there is no split column."""

    seed: Int = 0
    fractions: list[Number] = [0.6, 0.2, 0.2]

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        return _check_fractions(v)


class Generator(_Strict):
    """``generator``: embedded synthetic corpora only; the first file is generated when missing."""

    corpus: Name
    seed: Int = 0
    n: Annotated[int, Field(strict=True, ge=10)] | None = None


def _str_keys(v: Any) -> Any:
    if not isinstance(v, dict):
        return v
    out = {}
    for k, val in v.items():
        k = "" if k is None else (str(k).lower() if isinstance(k, bool) else str(k))
        out[k.strip()] = val
    return out


class Manifest(_Strict):
    """A data manifest (see the module docstring and data_manifests/byo_csv.yaml)."""

    name: Name
    title: Text = ""
    description: Text = ""
    access: Literal["open", "credentialed", "local"] | None = None
    license: Text = ""
    citation: Text = ""
    url: Text = ""
    schema_: Name = Field(alias="schema")
    generator: Generator | None = None
    files: list[FileSpec] = Field(min_length=1)
    columns: Columns
    label_map: Annotated[dict[Name, Name], BeforeValidator(lambda v: {} if v is None else _str_keys(v))] = {}
    value_map: Annotated[dict[str, Name], BeforeValidator(lambda v: {} if v is None else _str_keys(v))] = {}
    splits: Splits | None = None
    rules: Text | None = None   # a rules file of the user's for the rule baseline (relative to the manifest)

    @field_validator("value_map")
    @classmethod
    def _states(cls, v: dict[str, str]) -> dict[str, str]:
        out = {}
        for k, val in v.items():
            try:
                out[k] = State.parse(val).value
            except ValueError:
                raise ValueError(f"{k!r} maps to {val!r}, which is not a label state; map each cell value to one of "
                                 f"{', '.join(s.value for s in State)}") from None
        return out

    @field_validator("splits", mode="before")
    @classmethod
    def _splits_none(cls, v: Any) -> Any:
        if isinstance(v, str):
            if v.strip().lower() == "none":  # evaluation-only: every report is a test report
                return {"fractions": [0, 0, 1]}
            raise ValueError(f"must be `none` (every report is a test report) or a mapping {{seed, fractions}}, "
                             f"got {v!r}")
        return v


_MODEL_AT: dict[tuple, type[BaseModel]] = {(): Manifest, ("files", "*"): FileSpec, ("columns",): Columns,
                                           ("splits",): Splits, ("generator",): Generator}
_FORMAT_HINT = "see data_manifests/byo_csv.yaml for the format"


def _keys(model: type[BaseModel]) -> list[str]:
    return [f.alias or n for n, f in model.model_fields.items()]


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "[key]":
            out += " (key)"
        else:
            out += f".{part}" if out else str(part)
    return out


def _yaml_kind(v: Any) -> str:
    kind = {bool: "true/false", int: "a number", float: "a number", str: "text", list: "a list",
            dict: "a mapping", type(None): "nothing"}.get(type(v), type(v).__name__)
    if v is None:
        return kind
    r = repr(v)
    return f"{kind} {r if len(r) <= 60 else r[:57] + '...'}"


def _pydantic_problem(e: dict) -> tuple[str | None, str, str]:
    """(field, message, hint) for one pydantic error."""
    loc, typ = tuple(e["loc"]), e["type"]
    where = _dotted(loc) or None
    if typ == "extra_forbidden":
        model = _MODEL_AT.get(tuple("*" if isinstance(x, int) else x for x in loc[:-1]))
        valid = _keys(model) if model else []
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.6)
        did = f"; did you mean {close[0]!r}?" if close else "; remove it or fix its spelling"
        return where, f"unknown key{did} (valid keys: {', '.join(valid)})", ""
    if typ == "missing":
        return where, "missing required key", _FORMAT_HINT
    if loc == ("files",) and typ == "too_short":
        return where, "must list at least one file", "files:\n  - path: /path/to/reports.csv"
    msg = str(e["msg"])
    if msg.startswith("Value error, "):
        return where, msg[len("Value error, "):], ""
    msg = msg[:1].lower() + msg[1:]
    return where, f"{msg} (got {_yaml_kind(e.get('input'))})", _FORMAT_HINT


def _many(file: str | Path, problems: list[tuple[str | None, str, str]], row: int | None = None) -> DataError:
    """One DataError for a list of (field, message, hint): the first problem, with all of them in ``problems``."""
    errs = [DataError(file, msg, row=row, field=f, hint=h) for f, msg, h in problems]
    if len(errs) == 1:
        return errs[0]
    f, msg, h = problems[0]
    k = len(errs) - 1
    more = f"{k} more problem{'s' if k > 1 else ''}: `radpriv data check {file}` lists them all"
    return DataError(file, msg, row=row, field=f, hint=f"{h}; {more}" if h else more,
                     problems=[str(e) for e in errs])


def validate_manifest(doc: dict, path: str | Path = "<manifest>") -> Manifest:
    """Validate a manifest mapping; every problem raises :class:`DataError` (all of them in ``.problems``)."""
    try:
        m = Manifest.model_validate(doc)
    except ValidationError as exc:
        raise _many(path, [_pydantic_problem(e) for e in exc.errors()]) from None
    problems: list[tuple[str | None, str, str]] = []
    for i, f in enumerate(m.files):
        if i == 0 and f.role != "reports":
            problems.append(("files[0].role", "the first file must hold the reports",
                             "list the report file first and the labels file (role: labels) after it"))
        elif i > 0 and f.role != "labels":
            problems.append((f"files[{i}].role", "only the first file holds reports; every further file must be a "
                             "labels file joined on the id column", "add `role: labels`, or merge the report files"))
    if isinstance(doc.get("splits"), str) and m.columns.split:
        problems.append(("splits", "`splits: none` and columns.split both given",
                         "remove one: the split column decides, or `splits: none` makes every report a test report"))
    if problems:
        raise _many(path, problems)
    return m


def available_manifests() -> list[str]:
    return sorted(p.stem for p in paths.MANIFESTS.glob("*.yaml"))


def _read_manifest(name_or_path: str | Path) -> tuple[dict, Manifest, Path]:
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
        raise DataError(p, "a manifest must be a mapping (name, schema, files, columns, ...)", hint=_FORMAT_HINT)
    return doc, validate_manifest(doc, p), p


def load_manifest(name_or_path: str | Path) -> tuple[dict, Path]:
    """The manifest mapping (validated) and its path."""
    doc, _, p = _read_manifest(name_or_path)
    return doc, p


def read_csv(path: Path) -> pd.DataFrame:
    """A CSV (``.tsv``: tab-separated; ``.gz``: gzip-compressed) as text columns, blank cells kept as ``""``.

    A file that is not UTF-8 or does not parse raises :class:`DataError` naming the offending line.
    """
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(path, f"bytes that are not valid UTF-8 at byte offset {exc.start} (line {line}, "
                        f"data row {line - 1})", row=line - 1,
                        hint="re-export the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None
    sep = "\t" if ".tsv" in path.suffixes[-2:] else ","
    try:
        return pd.read_csv(io.BytesIO(raw), sep=sep, dtype=str, keep_default_na=False, encoding="utf-8")
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(path, f"cannot parse as CSV: {exc}") from None


def _resolve_files(m: Manifest, mpath: Path | None, data_root: str | Path | None, verify: bool) -> list[dict]:
    out = []
    for i, spec in enumerate(m.files):
        path = Path(data_root) / Path(spec.path).name if data_root else _expand(spec.path, mpath)
        gen = m.generator
        if not path.exists() and gen and i == 0:
            from radpriv.data.synthetic import CORPORA, write_corpus

            if gen.corpus not in CORPORA:
                raise DataError(mpath, f"unknown synthetic corpus {gen.corpus!r}", field="generator.corpus",
                                hint=f"choose from {', '.join(CORPORA)}")
            write_corpus(gen.corpus, path, seed=gen.seed, n=gen.n)
        if not path.exists():
            hint = ("this dataset is credentialed/local: set the path in the manifest or its environment variable"
                    if m.access in ("credentialed", "local") else "check the path or download the data")
            raise DataError(path, f"file not found (manifest {mpath})", field=f"files[{i}].path", hint=hint)
        actual = file_sha256(path) if path.is_file() else ""
        if verify and spec.sha256 and actual != spec.sha256:
            raise DataError(path, f"sha256 mismatch: expected {spec.sha256}, got {actual}", field=f"files[{i}].sha256",
                            hint="the file changed or is not the one the manifest describes; restore it, "
                                 "or update sha256 in the manifest if the change is intended")
        out.append({"path": str(path), "sha256": actual, "role": spec.role, "format": spec.format})
    return out


def _quoted(values, limit: int = 8) -> str:
    vals = list(values)
    out = ", ".join(repr(v) for v in vals[:limit])
    return out + (f", ... ({len(vals)} in all)" if len(vals) > limit else "")


def _bad_summary(bad: list) -> str:
    """'3 rows in all: '2' (2), 'x' (1)' for a list of bad raw values."""
    counts = pd.Series([str(v) for v in bad]).value_counts()
    vals = ", ".join(f"{v!r} ({c})" for v, c in list(counts.items())[:6]) + (", ..." if len(counts) > 6 else "")
    return f"{len(bad)} row{'s' if len(bad) > 1 else ''} of this column in all: {vals}"


def _states(series: pd.Series, value_map: dict, path: Path, col: str,
            ids: pd.Series) -> tuple[list[str], tuple[str | None, str, str] | None, int | None]:
    """The states of one label column, or the first problem (field, message, hint) and its row."""
    vm = {str(k).strip(): v for k, v in (value_map or {}).items()}
    out: list[str] = []
    bad: list[tuple[int, Any]] = []
    for i, raw in enumerate(series):
        key = str(raw).strip()
        try:
            out.append(State.parse(vm[key] if key in vm else key).value)
        except ValueError:
            bad.append((i, raw))
    if not bad:
        return out, None, None
    i, raw = bad[0]
    allowed = (f"value_map keys {_quoted(sorted(vm))} or " if vm else "") + \
        "a label state (present/absent/uncertain/not_mentioned, true/false, yes/no, 1/0/-1, blank)"
    hint = f"{_bad_summary([b for _, b in bad])}; allowed: {allowed}; extend value_map in the manifest"
    return out, (col, f"label value {raw!r} (report {ids.iloc[i]}) is outside value_map and the label states",
                 hint), i + 1


def _close(name: str, options) -> str:
    close = difflib.get_close_matches(str(name), [str(o) for o in options], n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}? " if close else ""


def load_dataset(manifest: str | Path, data_root: str | Path | None = None, verify: bool = True) -> Dataset:
    """Load and validate a dataset described by a manifest (bundled name or path)."""
    doc, m, mpath = _read_manifest(manifest)
    try:
        schema = load_schema(_expand(m.schema_, mpath) if m.schema_.endswith((".yaml", ".yml")) else m.schema_)
    except (FileNotFoundError, ValueError) as exc:
        raise DataError(mpath, str(exc), field="schema") from None
    cols = m.columns
    label_map = dict(m.label_map)
    problems = []
    for k, v in label_map.items():
        try:
            schema.resolve(v)
        except KeyError:
            problems.append((f"label_map.{k}", f"{v!r} is not a finding of schema {schema.name}",
                             f"{_close(v, schema.ids)}map {k!r} to one of: {', '.join(schema.ids)}"))
    if schema.task == "single" and not cols.label:
        problems.append(("columns.label", f"schema {schema.name} is single-label: name the category column",
                         "columns:\n  label: <the column with one category per report>"))
    if schema.task != "single" and cols.label:
        problems.append(("columns.label", f"schema {schema.name} is multi-label: columns.label is for single-label "
                         "schemas", "use columns.labels (auto, or a list of label columns) instead"))
    if problems:
        raise _many(mpath, problems)

    files = _resolve_files(m, mpath, data_root, verify)
    main = files[0]
    if main["format"] == "mimic_reports":
        df = read_reports(Path(main["path"]))
    else:
        df = read_csv(Path(main["path"]))
    src = Path(main["path"])
    id_col = cols.id
    for lf in files[1:]:
        lab = read_csv(Path(lf["path"]))
        key = cols.join or id_col
        for frame, f in ((df, src), (lab, Path(lf["path"]))):
            if key not in frame.columns:
                raise DataError(f, "join column missing", row=None, field=key,
                                hint=f"{_close(key, frame.columns)}columns present: "
                                     f"{', '.join(map(str, frame.columns[:20]))}; fix columns.join/columns.id in {mpath}")
        df = df.merge(lab, on=key, how="left", suffixes=("", "__labels"), indicator=True)
        missing = df.index[df["_merge"] != "both"].tolist()
        if missing:
            raise DataError(lf["path"], f"{len(missing)} reports have no label row, e.g. id "
                            f"{df.at[missing[0], id_col]}", row=missing[0] + 1, field=key,
                            hint="every report needs a label row; remove it from the report file or add labels")
        df = df.drop(columns="_merge")

    # every column the manifest names must be in the data: report all that are not
    text_cols = list(cols.text)
    named = [("columns.id", id_col)] + [("columns.text", c) for c in text_cols]
    named += [(f"columns.{k}", getattr(cols, k)) for k in ("split", "label", "reader") if getattr(cols, k)]
    named += [("columns.labels", c) for c in (cols.labels or [])] + [("columns.keep", c) for c in cols.keep]
    present = ", ".join(map(str, df.columns[:25])) + (", ..." if len(df.columns) > 25 else "")
    problems = [(c, f"missing column (named by {key} in {mpath.name})",
                 f"{_close(c, df.columns)}columns present: {present}; fix `columns` in {mpath}")
                for key, c in named if c not in df.columns]
    if problems:
        raise _many(src, problems)

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

    value_map = dict(m.value_map)
    keep = list(cols.keep)
    if schema.task == "single":
        lc = cols.label
        vals, bad = [], []
        for i, v in enumerate(df[lc]):
            try:
                vals.append(schema.resolve(str(v).strip(), label_map))
            except KeyError:
                bad.append((i, v))
        if bad:
            i, v = bad[0]
            raise DataError(src, f"label {v!r} (report {ids.iloc[i]}) is not a category of schema {schema.name}",
                            row=i + 1, field=lc, hint=f"{_bad_summary([b for _, b in bad])}; categories: "
                            f"{', '.join(schema.ids)}; map your names with label_map in the manifest")
        out["label"] = vals
    else:
        reserved = {id_col, *text_cols, *(c for c in (cols.split, cols.reader, cols.join) if c), *keep}
        label_cols = ([c for c in df.columns if c not in reserved and not str(c).endswith("__labels")]
                      if cols.labels is None else list(cols.labels))
        mapped: dict[str, str] = {}
        problems = []
        for c in label_cols:
            try:
                fid = schema.resolve(str(c), label_map)
            except KeyError:
                problems.append((c, f"column {c!r} is not a finding of schema {schema.name}",
                                 f"{_close(c, schema.labels + schema.ids)}map it with label_map, list it under "
                                 "columns.keep, or drop it"))
                continue
            if fid in mapped.values():
                other = next(k for k, v in mapped.items() if v == fid)
                problems.append((c, f"columns {other!r} and {c!r} both map to finding {fid!r}",
                                 "keep one of them (list the other under columns.keep) or fix label_map"))
                continue
            mapped[c] = fid
        if problems:
            raise _many(src, problems)
        rows: list[int | None] = []
        for c, fid in mapped.items():
            states, problem, row = _states(df[c], value_map, src, c, ids)
            if problem:
                problems.append(problem)
                rows.append(row)
            else:
                out[fid] = states
        if problems:
            err = _many(src, problems, row=rows[0])
            if len(problems) > 1:  # each problem names its own row
                err.problems = [str(DataError(src, msg, row=r, field=f, hint=h))
                                for (f, msg, h), r in zip(problems, rows)]
            raise err
        for fid in schema.ids:  # findings the dataset does not annotate
            if fid not in out.columns:
                out[fid] = State.NOT_MENTIONED.value
        out = out[["report_id", "text", *schema.ids]]

    if cols.split:
        sp = df[cols.split].astype(str).str.strip().str.lower().replace({"val": "validation", "valid": "validation",
                                                                        "dev": "validation"})
        bad = sp[~sp.isin(["train", "validation", "test"])]
        if len(bad):
            i = bad.index[0]
            raise DataError(src, f"split value {df.at[i, cols.split]!r} is not train/validation/test", row=i + 1,
                            field=cols.split, hint=f"{_bad_summary(list(df.loc[bad.index, cols.split]))}; "
                            "use train, validation (val, dev) or test")
        out.insert(2, "split", sp.to_numpy())
    else:
        from radpriv.data.splits import assign_splits

        sconf = m.splits or Splits()
        if schema.task == "single":
            strat = out["label"].to_numpy()
        else:
            strat = (out[schema.ids].isin(["present", "uncertain"])).astype(int).to_numpy()
        out.insert(2, "split", assign_splits(strat, seed=sconf.seed, fractions=tuple(sconf.fractions)))
    if cols.reader:
        rv, bad = [], []
        for i, v in enumerate(df[cols.reader]):
            v = str(v).strip()
            if not v:
                rv.append("")
                continue
            try:
                rv.append(schema.resolve(v, label_map))
            except KeyError:
                bad.append((i, v))
        if bad:
            i, v = bad[0]
            raise DataError(src, f"reader label {v!r} (report {ids.iloc[i]}) is not a category of schema "
                            f"{schema.name}", row=i + 1, field=cols.reader,
                            hint=f"{_bad_summary([b for _, b in bad])}; categories: {', '.join(schema.ids)}; "
                                 "map your names with label_map, or leave the cell blank")
        out["reader"] = rv
    for c in keep:
        out[c] = df[c].to_numpy()
    combined = (hashlib.sha256("".join(f["sha256"] for f in files).encode()).hexdigest() if len(files) > 1
                else files[0]["sha256"])
    return Dataset(name=m.name, schema=schema, frame=out, manifest=doc, manifest_path=mpath, files=files,
                   sha256=combined)


# --------------------------------------------------------------------------------------------- data check

STATES = tuple(s.value for s in State)


def check_report(ds: Dataset) -> list[str]:
    """What ``radpriv data check`` prints: rows, schema, splits, label counts, files and digests."""
    f = ds.frame
    lines = [f"manifest: {ds.manifest_path}", f"name: {ds.name}", f"schema: {ds.schema.name}",
             f"task: {ds.schema.task}", f"rows: {len(f)}",
             f"evaluation_only: {'yes (no train reports)' if ds.evaluation_only else 'no'}", "splits:"]
    counts = f["split"].value_counts()
    lines += [f"  {s:<12}{int(counts.get(s, 0)):>8}" for s in ("train", "validation", "test")]
    if ds.schema.task == "single":
        lines.append("labels (reports per category):")
        vc = f["label"].value_counts()
        w = max(len("category"), *(len(i) for i in ds.schema.ids))
        lines.append(f"  {'category':<{w}}  {'reports':>8}")
        lines += [f"  {c:<{w}}  {int(vc.get(c, 0)):>8}" for c in ds.schema.ids]
        if "reader" in f.columns:
            lines.append(f"reader labels: {int((f['reader'] != '').sum())} of {len(f)} reports")
    else:
        lines.append("labels (reports per state):")
        w = max(len("finding"), *(len(i) for i in ds.schema.ids))
        lines.append(f"  {'finding':<{w}}" + "".join(f"  {s:>13}" for s in STATES))
        for fid in ds.schema.ids:
            vc = f[fid].value_counts()
            lines.append(f"  {fid:<{w}}" + "".join(f"  {int(vc.get(s, 0)):>13}" for s in STATES))
    lines.append("files:")
    lines += [f"  {fl['role']:<8} {fl['path']}  sha256 {fl['sha256']}" for fl in ds.files]
    lines.append(f"dataset sha256: {ds.sha256}")
    return lines
