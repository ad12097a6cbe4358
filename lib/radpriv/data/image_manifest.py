"""Your own radiographs: an image manifest CSV, validated, and the image loader.

A CSV with one row per case (examination) and one column per view holding the image path::

    report_id,split,path_ap,path_lateral,fracture,fracture_radial_head,...
    E0001,train,img/E0001_ap.png,img/E0001_lat.png,true,uncertain,...

- ``report_id`` links the case to its report (and so to the labels an LLM extracted from it);
- ``split`` (train/validation/test) is optional;
- ``path_<view>`` for every view (default views ``ap`` and ``lateral``); relative paths are relative to
  the CSV's folder (or ``root=``); PNG, JPEG, TIFF (8 or 16 bit) and, when ``pydicom`` is installed, DICOM;
- label columns are optional (labels usually come from the reports); when given, every column that is
  not an id/split/path column must name a finding of the schema, and every cell must be a label state
  (true/false/uncertain/present/absent/not_mentioned/1/0/-1/blank).

:func:`read_image_manifest` validates all of it and raises one :class:`~radpriv.data.DataError` naming the
file, row and field of every problem (up to ten shown), e.g. a missing image file or an unknown label.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from radpriv.data.errors import DataError
from radpriv.data.manifest import read_csv
from radpriv.hashing import file_sha256
from radpriv.progress import tqdm
from radpriv.schemas import Schema, State, load_schema

__all__ = ["VIEWS", "ImageManifest", "read_image_manifest", "load_image"]

#: the views of a case, in the order of an image array's view axis
VIEWS = ("ap", "lateral")


# =============================================================================================
# image files
# =============================================================================================
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom"}


def _read_pixels(path: Path) -> np.ndarray:
    """Grayscale float32 pixels of one image file (raw scale)."""
    if path.suffix.lower() in (".dcm", ".dicom"):
        try:
            import pydicom  # optional
        except ImportError:
            raise RuntimeError(f"{path}: DICOM needs the optional package pydicom (pip install pydicom), "
                               "or convert the images to 16-bit PNG") from None
        ds = pydicom.dcmread(str(path))
        arr = ds.pixel_array.astype(np.float32)
        if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
            arr = arr.max() - arr
        return arr
    from PIL import Image

    with Image.open(path) as img:
        if img.mode in ("RGB", "RGBA", "P", "LA", "CMYK"):
            img = img.convert("L")
        arr = np.asarray(img, dtype=np.float32)
    if arr.ndim == 3:
        arr = arr.mean(axis=2)
    return arr


def load_image(path: str | Path, size: int = 224) -> np.ndarray:
    """One radiograph as a ``size`` x ``size`` float32 array in [0, 1].

    Intensities are windowed to the 0.5-99.5 percentiles (robust for 8- and 16-bit images); the image is
    resized keeping its aspect ratio and padded with black to a square.
    """
    from PIL import Image

    path = Path(path)
    arr = _read_pixels(path)
    lo, hi = np.percentile(arr, [0.5, 99.5])
    arr = np.clip((arr - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(arr)
    h, w = arr.shape
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    small = np.asarray(Image.fromarray(arr.astype(np.float32), mode="F").resize((nw, nh), Image.BILINEAR),
                       dtype=np.float32)
    out = np.zeros((size, size), dtype=np.float32)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top:top + nh, left:left + nw] = np.clip(small, 0, 1)
    return out


def _check_image(path: Path, decode: bool) -> str | None:
    """None if the image opens (and decodes when ``decode``), else the reason."""
    if path.suffix.lower() in (".dcm", ".dicom"):
        try:
            _read_pixels(path) if decode else None
            return None
        except Exception as exc:  # noqa: BLE001 - the reason is reported to the user
            return f"unreadable DICOM ({type(exc).__name__}: {exc})"
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            if decode:
                img.load()
            else:
                img.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return f"unreadable image ({type(exc).__name__}: {exc})"
    return None


# =============================================================================================
# image manifest
# =============================================================================================
@dataclass
class ImageManifest:
    """A validated image manifest: ``frame`` has ``report_id``, ``split`` (if given), one absolute path
    column per view (``path_<view>``) and, when the CSV carries labels, one State column per finding."""

    path: Path
    schema: Schema
    views: tuple[str, ...]
    frame: pd.DataFrame
    label_columns: list[str]
    sha256: str

    def view_column(self, view: str) -> str:
        return f"path_{view}"

    def has_labels(self) -> bool:
        return bool(self.label_columns)

    def load(self, size: int = 224, progress: bool = True) -> np.ndarray:
        """All images as float32 ``[cases, views, size, size]`` (in memory; for very large sets iterate
        :meth:`load_case` from a torch Dataset instead)."""
        out = np.zeros((len(self.frame), len(self.views), size, size), dtype=np.float32)
        for i in tqdm(range(len(self.frame)), desc=f"loading {self.path.name}", disable=not progress):
            out[i] = self.load_case(i, size)
        return out

    def load_case(self, i: int, size: int = 224) -> np.ndarray:
        row = self.frame.iloc[i]
        return np.stack([load_image(row[self.view_column(v)], size) for v in self.views])


def read_image_manifest(csv_path: str | Path, schema: Schema | str, views: Sequence[str] = VIEWS,
                        view_columns: Mapping[str, str] | None = None, id_column: str = "report_id",
                        root: str | Path | None = None, labels: str | Sequence[str] | None = "auto",
                        ignore_columns: Sequence[str] = (), check_images: str | bool = "open",
                        label_map: Mapping[str, str] | None = None) -> ImageManifest:
    """Read and validate an image manifest CSV (see the module docstring for the format).

    ``view_columns`` maps a view to its CSV column (default ``path_<view>``); ``labels``: ``"auto"`` (every
    other column is a finding), a list of columns, or ``None`` (no labels in the CSV); ``ignore_columns``
    are carried along unvalidated; ``check_images``: ``"open"`` (header check), ``"decode"`` (full decode)
    or ``False``; ``label_map`` maps your column names to finding ids.
    """
    csv_path = Path(csv_path).expanduser()
    schema = load_schema(schema) if isinstance(schema, (str, Path)) else schema
    if not csv_path.is_file():
        raise DataError(csv_path, "image manifest file does not exist",
                        hint="pass the path of a CSV with report_id and one path column per view")
    sha = file_sha256(csv_path)
    df = read_csv(csv_path)
    views = tuple(views)
    vcols = {v: (view_columns or {}).get(v, f"path_{v}") for v in views}
    required = [id_column, *vcols.values()]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(csv_path, f"missing column(s) {missing}", field=missing[0],
                        hint=f"the CSV has {list(df.columns)}; an image manifest needs {required}"
                             " (set view_columns= / id_column= if yours are named differently)")
    base = Path(root).expanduser() if root is not None else csv_path.parent
    reserved = {id_column, "split", *vcols.values(), *ignore_columns}
    if labels == "auto":
        label_cols = [c for c in df.columns if c not in reserved]
    elif labels is None:
        label_cols = []
    else:
        label_cols = list(labels)
        absent = [c for c in label_cols if c not in df.columns]
        if absent:
            raise DataError(csv_path, f"label column(s) {absent} not in the CSV", field=absent[0])

    problems: list[DataError] = []
    finding_of: dict[str, str] = {}
    for c in label_cols:
        try:
            finding_of[c] = schema.resolve(c, label_map)
        except KeyError:
            problems.append(DataError(csv_path, f"column is not a finding of schema {schema.name!r}", field=c,
                                      hint=f"findings: {', '.join(schema.ids)}; map it with label_map= or list it "
                                           "in ignore_columns= if it is not a label"))
    dup_f = pd.Series(list(finding_of.values()))
    for f in dup_f[dup_f.duplicated()].unique():
        cols = [c for c, v in finding_of.items() if v == f]
        problems.append(DataError(csv_path, f"columns {cols} all map to finding {f!r}", field=cols[1]))

    out = pd.DataFrame({"report_id": df[id_column].str.strip()})
    for i, rid in enumerate(out["report_id"]):
        if not rid:
            problems.append(DataError(csv_path, "empty id", row=i + 1, field=id_column))
    dups = out["report_id"][out["report_id"].duplicated() & (out["report_id"] != "")]
    for i in dups.index[:3]:
        problems.append(DataError(csv_path, f"duplicate id {out.at[i, 'report_id']!r}", row=i + 1, field=id_column,
                                  hint="one row per case; list each view in its own path column"))
    if "split" in df.columns:
        out["split"] = df["split"].str.strip().str.lower()
        for i, s in enumerate(out["split"]):
            if s not in ("train", "validation", "test"):
                problems.append(DataError(csv_path, f"split {df.at[i, 'split']!r} is not train/validation/test",
                                          row=i + 1, field="split"))
    decode = check_images == "decode"
    for v, col in vcols.items():
        resolved = []
        for i, cell in enumerate(df[col]):
            cell = cell.strip()
            p = Path(cell).expanduser()
            p = p if p.is_absolute() else base / p
            resolved.append(str(p))
            if not cell:
                problems.append(DataError(csv_path, f"no image path for view {v!r}", row=i + 1, field=col))
            elif not p.is_file():
                problems.append(DataError(csv_path, f"image file {cell!r} does not exist (resolved to {p})",
                                          row=i + 1, field=col, hint="fix the path, or pass root= for relative paths"))
            elif p.suffix.lower() not in _IMAGE_SUFFIXES:
                problems.append(DataError(csv_path, f"{cell!r} has an unsupported image type {p.suffix!r}",
                                          row=i + 1, field=col, hint=f"use one of {sorted(_IMAGE_SUFFIXES)}"))
            elif check_images:
                why = _check_image(p, decode)
                if why:
                    problems.append(DataError(csv_path, f"{why}: {cell!r}", row=i + 1, field=col,
                                              hint="re-export the image as PNG or remove the case"))
        out[f"path_{v}"] = resolved
    for c, fid in finding_of.items():
        states = []
        for i, cell in enumerate(df[c]):
            try:
                states.append(State.parse(cell).value)
            except ValueError:
                states.append(None)
                problems.append(DataError(csv_path, f"label {cell!r} is not a label state", row=i + 1, field=c,
                                          hint="use true/false/uncertain, present/absent/not_mentioned, 1/0/-1 or blank"))
        out[fid] = states
    if problems:
        shown = "\n  ".join(str(p) for p in problems[:10])
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise DataError(csv_path, f"{len(problems)} problem(s) in the image manifest:\n  {shown}{more}",
                        problems=[str(p) for p in problems])
    present_ids = list(finding_of.values())
    if present_ids:
        for fid in schema.ids:  # a finding the CSV does not list is not mentioned
            if fid not in out.columns:
                out[fid] = State.NOT_MENTIONED.value
        out[schema.ids] = pd.DataFrame([{k: v.value for k, v in schema.propagate(r).items()}
                                        for r in out[schema.ids].to_dict("records")], index=out.index)[schema.ids]
    for c in ignore_columns:
        if c in df.columns:
            out[c] = df[c]
    return ImageManifest(path=csv_path, schema=schema, views=views, frame=out,
                         label_columns=list(schema.ids) if present_ids else [], sha256=sha)
