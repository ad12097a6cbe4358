"""Radiographs for the Study 2 downstream models: a user's image manifest, and synthetic radiographs.

Image manifest (your own radiographs)
-------------------------------------
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

Synthetic radiographs (embedded default)
----------------------------------------
Where no radiographs exist, :func:`synthesize_images` draws small radiograph-like images whose visual
features follow each case's ground-truth findings: bones are bright bands with a brighter cortex inside
soft tissue; a fracture is a dark line across the bone at the finding's location; displacement shifts
the fragment beyond the line; joint widening, narrowing, subluxation and dislocation move the distal
bones; swelling widens the soft tissue; a fat-pad sign is a dark triangle (lateral view only, as in real
radiographs); ossicles and loose bodies are small bright dots; hardware is a very bright plate with screws;
and so on (``FEATURES``). Two views per case (``ap``, ``lateral``), random pose, exposure and noise.

An *uncertain* finding (the radiologist hedged) is drawn with probability ``uncertain_visible`` and then
subtly (``uncertain_strength``): what is truly on the image is returned as the ``visible`` label matrix,
the reference against which downstream models are scored. These images are synthetic and say nothing
about real radiographs; they make the inclusive/exclusive experiment runnable end to end.

Everything is deterministic from ``seed`` and the report id; the random pose, anatomy and noise of a case
do not depend on its findings, so rendering a case with and without a finding isolates that finding.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from radpriv.progress import tqdm

from radpriv.data import DataError
from radpriv.schemas import Schema, State, load_schema

__all__ = [
    "VIEWS", "REGIONS", "FEATURES", "ImageManifest", "read_image_manifest", "load_image",
    "SyntheticImages", "synthesize_images", "render_case",
]

VIEWS = ("ap", "lateral")
REGIONS = ("elbow", "clavicle", "thumb")


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
    raw = csv_path.read_bytes()
    sha = hashlib.sha256(raw).hexdigest()
    try:
        df = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except Exception as exc:  # noqa: BLE001
        raise DataError(csv_path, f"not a readable CSV ({type(exc).__name__}: {exc})") from None
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
        err = DataError(csv_path, f"{len(problems)} problem(s) in the image manifest:\n  {shown}{more}")
        err.problems = problems  # type: ignore[attr-defined]
        raise err
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


# =============================================================================================
# synthetic radiographs: scene description
# =============================================================================================
# Canonical coordinates: x to the right, y downwards, the field of view is [-1, 1]^2 before the pose.
# A bone is a capsule (segment p0-p1 with radius r); t in [0, 1] runs from p0 to p1.
# Joints move their distal bones ("moving") along `axis` (widening / narrowing) or perpendicular
# (subluxation / dislocation).

def _layout_elbow(view: str) -> dict:
    if view == "ap":
        bones = {
            "humerus": ((0.0, -1.3), (0.0, -0.22), 0.11), "condyles": ((-0.18, -0.13), (0.17, -0.13), 0.075),
            "medial_epicondyle": ((-0.28, -0.2), (-0.2, -0.15), 0.045), "capitellum": ((0.12, -0.08), (0.12, -0.08), 0.06),
            "radial_head": ((0.07, 0.035), (0.21, 0.035), 0.04), "radius": ((0.14, 0.07), (0.22, 1.3), 0.06),
            "ulna": ((-0.08, 0.03), (-0.13, 1.3), 0.065), "olecranon": ((-0.08, -0.12), (-0.08, 0.0), 0.055),
            "coronoid": ((-0.02, 0.02), (0.02, 0.04), 0.03),
        }
        joints = {"elbow": {"at": (0.0, -0.03), "axis": (0.0, 1.0),
                            "moving": ["radial_head", "radius", "ulna", "olecranon", "coronoid"]}}
        tissue = [((0.0, -1.4), (0.0, -0.1), 0.3), ((0.0, -0.1), (0.05, 1.4), 0.33)]
    else:  # lateral, elbow flexed 90 degrees, forearm to the right
        bones = {
            "humerus": ((0.0, -1.3), (0.0, -0.2), 0.12), "condyles": ((0.02, -0.11), (0.02, -0.11), 0.11),
            "medial_epicondyle": ((-0.06, -0.2), (-0.04, -0.16), 0.04), "capitellum": ((0.08, -0.07), (0.08, -0.07), 0.06),
            "radial_head": ((0.1, 0.0), (0.12, 0.1), 0.045), "radius": ((0.15, 0.06), (1.3, 0.12), 0.055),
            "ulna": ((0.0, 0.1), (1.3, 0.22), 0.06), "olecranon": ((-0.14, -0.02), (0.0, 0.1), 0.06),
            "coronoid": ((0.12, 0.04), (0.17, 0.06), 0.03),
        }
        joints = {"elbow": {"at": (0.02, 0.02), "axis": (1.0, 0.1),
                            "moving": ["radial_head", "radius", "ulna", "olecranon", "coronoid"]}}
        tissue = [((0.0, -1.4), (0.0, 0.0), 0.3), ((-0.05, 0.06), (1.4, 0.18), 0.3)]
    return {"bones": bones, "joints": joints, "tissue": tissue}


def _layout_clavicle(view: str) -> dict:
    dy = 0.0 if view == "ap" else -0.12  # cephalic tilt view projects the clavicle higher
    sq = 1.0 if view == "ap" else 0.75   # ... and foreshortens vertical distances
    bones = {
        "manubrium": ((-1.12, -0.25 * sq + dy), (-1.12, 0.5 * sq + dy), 0.14),
        "clavicle": ((-0.86, 0.0 + dy), (0.72, -0.12 * sq + dy), 0.075),
        "acromion": ((0.92, -0.14 * sq + dy), (1.25, -0.05 * sq + dy), 0.08),
        "coracoid": ((0.5, 0.28 * sq + dy), (0.62, 0.22 * sq + dy), 0.055),
        "scapula": ((0.75, 0.1 * sq + dy), (1.25, 0.9 * sq + dy), 0.2),
        "rib": ((-1.3, 0.55 * sq + dy), (0.5, 0.35 * sq + dy), 0.05),
    }
    joints = {"ac": {"at": (0.82, -0.13 * sq + dy), "axis": (1.0, 0.0), "moving": ["acromion"]},
              "sc": {"at": (-0.957, 0.0 + dy), "axis": (-1.0, 0.0), "moving": ["manubrium"]},
              "cc": {"at": (0.56, 0.1 * sq + dy), "axis": (0.0, 1.0), "moving": ["coracoid"]}}
    tissue = [((-1.4, 0.1 + dy), (1.4, 0.0 + dy), 0.45)]
    return {"bones": bones, "joints": joints, "tissue": tissue}


def _layout_thumb(view: str) -> dict:
    bend = 0.0 if view == "ap" else 0.12  # lateral view: the thumb slightly flexed
    bones = {
        "trapezium": ((0.0, 1.19), (0.05, 1.35), 0.11),
        "metacarpal": ((0.0, 0.95), (0.0, 0.3), 0.085),
        "proximal_phalanx": ((0.0 + bend * 0.2, 0.1), (0.0 + bend, -0.36), 0.075),
        "distal_phalanx": ((0.0 + bend * 1.15, -0.54), (0.0 + bend * 1.8, -0.9), 0.065),
        "sesamoid": ((0.11, 0.24), (0.11, 0.24), 0.035) if view == "ap" else ((-0.1, 0.22), (-0.1, 0.22), 0.035),
        "index_metacarpal": ((0.65, 1.3), (0.5, 0.2), 0.08),
    }
    joints = {"cmc": {"at": (0.0, 1.057), "axis": (0.0, -1.0),
                      "moving": ["metacarpal", "proximal_phalanx", "distal_phalanx", "sesamoid"]},
              "mcp": {"at": (0.0, 0.195), "axis": (0.0, -1.0), "moving": ["proximal_phalanx", "distal_phalanx"]},
              "ip": {"at": (bend * 1.07, -0.455), "axis": (bend * 0.5, -1.0), "moving": ["distal_phalanx"]}}
    tissue = [((0.0, 1.4), (bend * 1.8, -0.95), 0.2), ((0.6, 1.4), (0.45, 0.1), 0.17)]
    return {"bones": bones, "joints": joints, "tissue": tissue}


_LAYOUTS = {"elbow": _layout_elbow, "clavicle": _layout_clavicle, "thumb": _layout_thumb}
#: per region: (centre of the field of view in canonical coordinates, zoom)
_FRAMING = {"elbow": ((0.05, -0.05), 1.4), "clavicle": ((0.05, 0.12), 0.78), "thumb": ((0.1, 0.2), 0.85)}


def _f(kind: str, views: Iterable[str] = VIEWS, **params) -> dict:
    return {"kind": kind, "views": tuple(views), **params}


# Each finding -> the visual features drawn when it is visible. Parents (fracture, joint_effusion,
# joint_abnormality, ...) are drawn by their own generic feature only when no sub-finding is visible.
FEATURES: dict[str, dict[str, list[dict]]] = {
    "elbow": {
        "fracture_radial_head": [_f("fracture", bone="radial_head", t=0.5)],
        "fracture_radial_neck": [_f("fracture", bone="radius", t=0.06)],
        "fracture_olecranon": [_f("fracture", bone="olecranon", t=0.4)],
        "fracture_coronoid": [_f("fracture", bone="coronoid", t=0.5)],
        "fracture_supracondylar": [_f("fracture", bone="humerus", t=0.82)],
        "fracture_lateral_condyle": [_f("fracture", bone="condyles", t=0.75)],
        "fracture_medial_epicondyle": [_f("fracture", bone="medial_epicondyle", t=0.5)],
        "fracture_capitellum": [_f("fracture", bone="capitellum", t=0.5)],
        "fracture": [_f("fracture_any", sites=[("radius", 0.3), ("humerus", 0.7), ("ulna", 0.25), ("condyles", 0.3)])],
        "fracture_displaced": [_f("displace")],
        "fracture_intraarticular": [_f("articular_line", joint="elbow", bones=["condyles", "radial_head", "olecranon"])],
        "joint_effusion": [_f("tissue_blob", joint="elbow", r=0.3, gain=0.09)],
        "fat_pad_anterior": [_f("triangle", views=("lateral",), pts=[(0.13, -0.5), (0.13, -0.2), (0.27, -0.3)], gain=-0.2)],
        "fat_pad_posterior": [_f("triangle", views=("lateral",), pts=[(-0.13, -0.5), (-0.13, -0.22), (-0.25, -0.34)], gain=-0.2)],
        "joint_abnormality": [_f("sclerosis", bone="condyles", side=1.0)],
        "joint_widening": [_f("joint", joint="elbow", along=0.07)],
        "joint_narrowing": [_f("joint", joint="elbow", along=-0.035)],
        "subluxation": [_f("joint", joint="elbow", perp=0.07)],
        "dislocation": [_f("joint", joint="elbow", along=0.12, perp=0.24)],
        "degeneration": [_f("joint", joint="elbow", along=-0.02), _f("osteophytes", joint="elbow", spread=0.2)],
        "radiocapitellar_malalignment": [_f("shift", bones=["radius", "radial_head"], perp_of="elbow", amount=0.09)],
        "soft_tissue_swelling": [_f("swelling", joint="elbow", r=0.2, offset=0.3)],
        "ossicle": [_f("dots", anchor=("condyles", 1.0, 0.14), n=(1, 1), r=(0.026, 0.034), gain=0.5)],
        "loose_body": [_f("dots", anchor=("olecranon", 0.1, -0.12), n=(1, 2), r=(0.02, 0.028), gain=0.45)],
        "exostosis": [_f("spur", bone="humerus", t=0.5, length=0.16, r=0.035)],
        "enthesopathy": [_f("spur", bone="olecranon", t=0.0, length=0.08, r=0.02, axial=True),
                         _f("spur", bone="medial_epicondyle", t=0.0, length=0.07, r=0.018, axial=True)],
        "callus_formation": [_f("callus", bone="radius", t=0.5)],
        "osteosynthesis_material": [_f("plate", bone="ulna", t0=0.25, t1=0.7)],
        "soft_tissue_calcification": [_f("dots", anchor=("medial_epicondyle", 0.0, 0.18), n=(3, 5), r=(0.01, 0.018),
                                         gain=0.4, spread=0.1)],
    },
    "clavicle": {
        "fracture_medial_third": [_f("fracture", bone="clavicle", t=0.17)],
        "fracture_middle_third": [_f("fracture", bone="clavicle", t=0.5)],
        "fracture_lateral_third": [_f("fracture", bone="clavicle", t=0.83)],
        "fracture": [_f("fracture_any", sites=[("clavicle", 0.3), ("clavicle", 0.65)])],
        "fracture_displaced": [_f("displace")],
        "fracture_comminuted": [_f("comminuted")],
        "ac_joint_abnormality": [_f("sclerosis", bone="clavicle", t=1.0, side=0.0, axial=True)],
        "ac_joint_widening": [_f("joint", joint="ac", along=0.08)],
        "ac_joint_narrowing": [_f("joint", joint="ac", along=-0.04)],
        "ac_joint_subluxation": [_f("joint", joint="ac", perp=0.08)],
        "ac_joint_dislocation": [_f("joint", joint="ac", along=0.1, perp=0.22)],
        "ac_joint_degeneration": [_f("joint", joint="ac", along=-0.025), _f("osteophytes", joint="ac", spread=0.12)],
        "sc_joint_abnormality": [_f("sclerosis", bone="clavicle", t=0.0, side=0.0, axial=True)],
        "sc_joint_widening": [_f("joint", joint="sc", along=0.08)],
        "sc_joint_narrowing": [_f("joint", joint="sc", along=-0.04)],
        "sc_joint_subluxation": [_f("joint", joint="sc", perp=0.08)],
        "sc_joint_dislocation": [_f("joint", joint="sc", along=0.1, perp=0.2)],
        "sc_joint_degeneration": [_f("joint", joint="sc", along=-0.025), _f("osteophytes", joint="sc", spread=0.14)],
        "coracoclavicular_widening": [_f("joint", joint="cc", along=0.14)],
        "soft_tissue_swelling": [_f("swelling", anchor=("clavicle", 0.5, 0.0), r=0.25, offset=0.3)],
        "ossicle": [_f("dots", anchor=("acromion", 0.3, -0.15), n=(1, 1), r=(0.022, 0.03), gain=0.5)],
        "exostosis": [_f("spur", bone="clavicle", t=0.35, length=0.15, r=0.035)],
        "osteolysis": [_f("lytic", bone="clavicle", t=0.95, r=0.06)],
        "callus_formation": [_f("callus", bone="clavicle", t=0.5)],
        "osteosynthesis_material": [_f("plate", bone="clavicle", t0=0.3, t1=0.75)],
        "soft_tissue_calcification": [_f("dots", anchor=("acromion", 0.2, 0.2), n=(3, 5), r=(0.01, 0.018),
                                         gain=0.4, spread=0.1)],
    },
    "thumb": {
        "fracture_distal_phalanx": [_f("fracture", bone="distal_phalanx", t=0.55)],
        "fracture_proximal_phalanx": [_f("fracture", bone="proximal_phalanx", t=0.5)],
        "fracture_metacarpal_base": [_f("fracture", bone="metacarpal", t=0.12)],
        "fracture_metacarpal_shaft": [_f("fracture", bone="metacarpal", t=0.55)],
        "fracture_sesamoid": [_f("fracture", bone="sesamoid", t=0.5)],
        "fracture": [_f("fracture_any", sites=[("metacarpal", 0.35), ("proximal_phalanx", 0.25), ("distal_phalanx", 0.3)])],
        "fracture_displaced": [_f("displace")],
        "fracture_intraarticular": [_f("articular_line", joint="mcp", bones=["metacarpal", "proximal_phalanx"])],
        "joint_abnormality": [_f("sclerosis", bone="metacarpal", t=1.0, side=0.0, axial=True)],
        "ip_joint_subluxation": [_f("joint", joint="ip", perp=0.06)],
        "ip_joint_dislocation": [_f("joint", joint="ip", along=0.08, perp=0.16)],
        "mcp_joint_subluxation": [_f("joint", joint="mcp", perp=0.06)],
        "mcp_joint_dislocation": [_f("joint", joint="mcp", along=0.08, perp=0.18)],
        "cmc_joint_subluxation": [_f("joint", joint="cmc", perp=0.07)],
        "joint_widening": [_f("joint", joint="mcp", along=0.07)],
        "joint_narrowing": [_f("joint", joint="mcp", along=-0.03)],
        "degeneration": [_f("joint", joint="cmc", along=-0.02), _f("osteophytes", joint="cmc", spread=0.14)],
        "avulsion_fragment": [_f("avulsion", bone="proximal_phalanx", t=0.05)],
        "soft_tissue_swelling": [_f("swelling", joint="mcp", r=0.16, offset=0.18)],
        "ossicle": [_f("dots", anchor=("metacarpal", 0.0, 0.16), n=(1, 1), r=(0.02, 0.026), gain=0.5)],
        "exostosis": [_f("spur", bone="metacarpal", t=0.5, length=0.13, r=0.03)],
        "callus_formation": [_f("callus", bone="proximal_phalanx", t=0.5)],
        "osteosynthesis_material": [_f("plate", bone="metacarpal", t0=0.25, t1=0.75)],
        "foreign_body": [_f("foreign_body", anchor=("proximal_phalanx", 0.5, 0.13))],
        "soft_tissue_calcification": [_f("dots", anchor=("metacarpal", 0.3, -0.15), n=(3, 5), r=(0.01, 0.016),
                                         gain=0.4, spread=0.08)],
    },
}


# =============================================================================================
# rendering
# =============================================================================================
def _rng(*parts) -> np.random.Generator:
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _sig(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


class _Canvas:
    """Canonical coordinates of every pixel of one view under a pose, plus drawing primitives."""

    def __init__(self, size: int, angle: float, scale: float, shift: tuple[float, float],
                 center: tuple[float, float] = (0.0, 0.0)):
        v = (np.arange(size) + 0.5) / size * 2 - 1
        px, py = np.meshgrid(v, v)
        ca, sa = math.cos(angle), math.sin(angle)
        qx, qy = (px - shift[0]) / scale, (py - shift[1]) / scale
        self.X, self.Y = ca * qx + sa * qy + center[0], -sa * qx + ca * qy + center[1]
        self.pix = 2.0 / size / scale  # one pixel in canonical units
        self.edge = 0.5 * self.pix

    def seg_dist(self, p0, p1) -> np.ndarray:
        p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
        d = p1 - p0
        L2 = float(d @ d)
        if L2 < 1e-12:
            return np.hypot(self.X - p0[0], self.Y - p0[1])
        t = np.clip(((self.X - p0[0]) * d[0] + (self.Y - p0[1]) * d[1]) / L2, 0, 1)
        return np.hypot(self.X - p0[0] - t * d[0], self.Y - p0[1] - t * d[1])

    def capsule(self, p0, p1, r) -> np.ndarray:
        return _sig((r - self.seg_dist(p0, p1)) / self.edge)

    def band(self, c, direction, half_width, half_length) -> np.ndarray:
        """A thin band (line) through c along direction."""
        d = np.asarray(direction, float) / (np.linalg.norm(direction) + 1e-12)
        n = np.array([-d[1], d[0]])
        a = (self.X - c[0]) * d[0] + (self.Y - c[1]) * d[1]
        b = (self.X - c[0]) * n[0] + (self.Y - c[1]) * n[1]
        hw = max(half_width, 0.55 * self.pix)
        return _sig((hw - np.abs(b)) / self.edge) * _sig((half_length - np.abs(a)) / self.edge)

    def triangle(self, pts) -> np.ndarray:
        pts = np.asarray(pts, float)
        inside = np.ones_like(self.X)
        area = (pts[1, 0] - pts[0, 0]) * (pts[2, 1] - pts[0, 1]) - (pts[2, 0] - pts[0, 0]) * (pts[1, 1] - pts[0, 1])
        sgn = 1.0 if area > 0 else -1.0
        for i in range(3):
            a, b = pts[i], pts[(i + 1) % 3]
            e = b - a
            cross = (e[0] * (self.Y - a[1]) - e[1] * (self.X - a[0])) / (np.linalg.norm(e) + 1e-12)
            inside = inside * _sig(sgn * cross / self.edge)
        return inside


@dataclass
class _Bone:
    p0: np.ndarray
    p1: np.ndarray
    r: float

    def point(self, t: float, side: float = 0.0) -> np.ndarray:
        return self.p0 + t * (self.p1 - self.p0) + side * self.normal

    @property
    def axis(self) -> np.ndarray:
        d = self.p1 - self.p0
        n = np.linalg.norm(d)
        return d / n if n > 1e-9 else np.array([1.0, 0.0])

    @property
    def normal(self) -> np.ndarray:
        a = self.axis
        return np.array([-a[1], a[0]])


def _bone_layer(cv: _Canvas, b: _Bone, offset=(0.0, 0.0)) -> np.ndarray:
    o = np.asarray(offset, float)
    full = cv.capsule(b.p0 + o, b.p1 + o, b.r)
    inner = cv.capsule(b.p0 + o, b.p1 + o, b.r * 0.62)
    return 0.42 * full + 0.3 * (full - inner)


def _visible_findings(states: Mapping[str, str], schema: Schema, rng: np.random.Generator, uncertain_visible: float
                      ) -> dict[str, float]:
    """Finding -> drawing strength (0 = not on the image). Present: 1; uncertain: drawn with probability
    ``uncertain_visible``; absent / not mentioned: 0. Parents become visible through a visible child."""
    vis: dict[str, float] = {}
    for f in schema.ids:  # one draw per finding in schema order: stable across runs
        u = rng.random()
        s = State.parse(states.get(f, State.NOT_MENTIONED))
        if s is State.PRESENT:
            vis[f] = 1.0
        elif s is State.UNCERTAIN and u < uncertain_visible:
            vis[f] = -1.0  # marker: visible but subtle
        else:
            vis[f] = 0.0
    for f in schema.ids:
        if vis[f] != 0:
            for anc in schema.ancestors(f):
                if vis[anc] == 0:
                    vis[anc] = vis[f]
    return vis


def render_case(states: Mapping[str, str], region: str, key: str, seed: int = 0, size: int = 96,
                uncertain_visible: float = 0.5, uncertain_strength: float = 0.6, noise: float = 0.03,
                pose_jitter: float = 1.0, schema: Schema | None = None) -> tuple[np.ndarray, dict[str, int]]:
    """Render one case: float32 ``[2, size, size]`` (ap, lateral) and the 0/1 ``visible`` findings.

    ``key`` (the report id) and ``seed`` fix pose, anatomy and noise independently of the findings;
    each finding's own details (exact position, angle) come from its own random stream.
    """
    if region not in _LAYOUTS:
        raise ValueError(f"no synthetic radiograph layout for region {region!r}; known: {', '.join(_LAYOUTS)}")
    schema = schema or load_schema(region)
    unknown = [f for f in schema.ids if f not in FEATURES[region]]
    if unknown:
        raise ValueError(f"schema {schema.name!r} has findings without a synthetic visual feature: {unknown}")
    vis = _visible_findings(states, schema, _rng(seed, key, "visible"), uncertain_visible)
    strength = {f: (uncertain_strength if v < 0 else float(v)) for f, v in vis.items()}
    drawn = _drawable(schema, vis)
    anatomy = _rng(seed, key, "anatomy")
    bone_scale = anatomy.uniform(0.9, 1.1)
    jitter = anatomy.normal(0, 0.015, size=2)
    views = []
    for view in VIEWS:
        pose = _rng(seed, key, "pose", view)
        center, zoom = _FRAMING[region]
        cv = _Canvas(size, angle=pose.uniform(-0.15, 0.15) * pose_jitter,
                     scale=zoom * (1 + pose.uniform(-0.06, 0.06) * pose_jitter),
                     shift=(pose.uniform(-0.06, 0.06) * pose_jitter, pose.uniform(-0.06, 0.06) * pose_jitter),
                     center=center)
        img = _render_view(cv, region, view, schema, drawn, strength, bone_scale, jitter, seed, key)
        # exposure, a smooth background gradient and noise: independent of the findings
        gain, offset = pose.uniform(0.85, 1.15), pose.uniform(-0.04, 0.04)
        gx, gy = pose.normal(0, 0.05, size=2)
        img = img * gain + offset + gx * cv.X + gy * cv.Y
        img = img + _rng(seed, key, "noise", view).normal(0, noise, size=img.shape)
        views.append(np.clip(img, 0, 1).astype(np.float32))
    visible = {f: int(vis[f] != 0) for f in schema.ids}
    return np.stack(views), visible


def _drawable(schema: Schema, vis: Mapping[str, float]) -> list[str]:
    """Visible findings whose own feature is drawn: leaves, and parents with no visible child."""
    out = []
    for f in schema.ids:
        if vis[f] == 0:
            continue
        kids = schema.children(f)
        if kids and any(vis[k] != 0 for k in kids):
            continue
        out.append(f)
    return out


def _render_view(cv: _Canvas, region: str, view: str, schema: Schema, drawn: list[str], strength: Mapping[str, float],
                 bone_scale: float, jitter: np.ndarray, seed: int, key: str) -> np.ndarray:
    layout = _LAYOUTS[region](view)
    bones = {n: _Bone(np.array(p0, float) + jitter, np.array(p1, float) + jitter, r * bone_scale)
             for n, (p0, p1, r) in layout["bones"].items()}
    joints = {n: {**j, "at": np.array(j["at"], float) + jitter, "axis": np.array(j["axis"], float)
                  / np.linalg.norm(j["axis"])} for n, j in layout["joints"].items()}
    feats = [(f, spec, _rng(seed, key, "feature", f, i)) for f in drawn
             for i, spec in enumerate(FEATURES[region][f])]
    feats = [(f, s, r) for f, s, r in feats if view in s["views"]]
    # 1) geometry changes: joints and bone shifts (the sign of a perpendicular move is per case, not per view)
    for f, spec, r in feats:
        k = strength[f]
        mag = 0.5 + 0.5 * k
        if spec["kind"] == "joint":
            j = joints[spec["joint"]]
            perp = np.array([-j["axis"][1], j["axis"][0]])
            sign = 1.0 if _rng(seed, key, "sign", f).random() < 0.5 else -1.0
            move = j["axis"] * spec.get("along", 0.0) * mag + perp * spec.get("perp", 0.0) * mag * sign
            for name in j["moving"]:
                bones[name] = _Bone(bones[name].p0 + move, bones[name].p1 + move, bones[name].r)
        elif spec["kind"] == "shift":
            j = joints[spec["perp_of"]]
            perp = np.array([-j["axis"][1], j["axis"][0]])
            sign = 1.0 if _rng(seed, key, "sign", f).random() < 0.5 else -1.0
            move = perp * spec["amount"] * mag * sign
            for name in spec["bones"]:
                bones[name] = _Bone(bones[name].p0 + move, bones[name].p1 + move, bones[name].r)
    # 2) fracture sites (needed by displacement, comminution, intra-articular lines)
    fractures = []  # (bone name, centre, line direction, strength)
    for f, spec, r in feats:
        k = strength[f]
        if spec["kind"] in ("fracture", "fracture_any"):
            if spec["kind"] == "fracture_any":
                bone, t = spec["sites"][int(r.integers(len(spec["sites"])))]
            else:
                bone, t = spec["bone"], spec["t"]
            b = bones[bone]
            t = float(np.clip(t + r.normal(0, 0.03), 0, 1))
            ang = r.uniform(-0.6, 0.6)
            d = b.normal * math.cos(ang) + b.axis * math.sin(ang)
            fractures.append((bone, b.point(t), d, k))
    want_displace = [strength[f] for f, s, _ in feats if s["kind"] == "displace"]
    want_comminuted = [strength[f] for f, s, _ in feats if s["kind"] == "comminuted"]
    if (want_displace or want_comminuted) and not fractures:  # a displaced/comminuted fracture needs a site
        r = _rng(seed, key, "generic-fracture")
        generic = FEATURES[region]["fracture"][0]["sites"]
        bone, t = generic[int(r.integers(len(generic)))]
        b = bones[bone]
        d = b.normal * math.cos(r.uniform(-0.6, 0.6)) + b.axis * math.sin(r.uniform(-0.6, 0.6))
        fractures.append((bone, b.point(t), d, max(want_displace + want_comminuted)))
    # 3) bone layers, with the displaced fragment moved
    layers = {n: _bone_layer(cv, b) for n, b in bones.items()}
    if want_displace:
        bone, c, d, _ = fractures[0]
        b = bones[bone]
        k = want_displace[0]
        r = _rng(seed, key, "displacement")
        off = b.normal * r.choice([-1.0, 1.0]) * (0.045 + 0.035 * k) * bone_scale + b.axis * r.uniform(0.0, 0.03)
        n = np.array([-d[1], d[0]])
        side = (cv.X - c[0]) * n[0] + (cv.Y - c[1]) * n[1]
        distal = _sig(side * np.sign(n @ (b.p1 - c) + 1e-9) / cv.edge)
        layers[bone] = layers[bone] * (1 - distal) + _bone_layer(cv, b, off) * distal
    # 4) fracture lines (dark), in the broken bone's layer only
    for bone, c, d, k in fractures:
        hl = bones[bone].r * 1.6
        line = cv.band(c, d, 0.022, hl)
        layers[bone] = layers[bone] * (1 - (0.5 + 0.4 * k) * line)
    if want_comminuted:
        bone, c, d, _ = fractures[0]
        b = bones[bone]
        r = _rng(seed, key, "comminuted")
        k = want_comminuted[0]
        for _ in range(2):
            c2 = c + b.axis * r.uniform(-0.08, 0.08)
            ang = r.uniform(-1.0, 1.0)
            d2 = b.normal * math.cos(ang) + b.axis * math.sin(ang)
            layers[bone] = layers[bone] * (1 - (0.5 + 0.4 * k) * cv.band(c2, d2, 0.014, b.r * 1.4))
        for _ in range(2):
            p = c + b.normal * r.choice([-1, 1]) * b.r * 1.5 + b.axis * r.uniform(-0.06, 0.06)
            layers[bone] = layers[bone] + 0.5 * k * cv.capsule(p, p, 0.02)
    # 5) bone-local features
    extra = np.zeros_like(cv.X)   # added attenuation (bone density, hardware)
    soft = np.zeros_like(cv.X)    # soft-tissue density changes (+ swelling, - fat)
    for f, spec, r in feats:
        k = strength[f]
        kind = spec["kind"]
        if kind == "articular_line":
            j = joints[spec["joint"]]
            for bone in spec["bones"][:2]:
                b = bones[bone]
                c = j["at"] + (b.point(0.5) - j["at"]) * 0.35
                d = j["at"] - b.point(0.5)
                layers[bone] = layers[bone] * (1 - (0.5 + 0.4 * k) * cv.band(c + r.normal(0, 0.01, 2), d, 0.015,
                                                                              np.linalg.norm(d) * 0.35))
        elif kind == "sclerosis":
            b = bones[spec["bone"]]
            if spec.get("axial"):
                p = b.point(spec["t"]) + b.axis * (-1 if spec["t"] > 0.5 else 1) * b.r * 0.3
                extra += 0.35 * k * cv.capsule(p, p, b.r * 0.7)
            else:
                p0, p1 = b.point(0.0, b.r * 0.75), b.point(1.0, b.r * 0.75)
                extra += 0.35 * k * cv.capsule(p0, p1, 0.018)
        elif kind == "spur":
            b = bones[spec["bone"]]
            if spec.get("axial"):
                base = b.point(spec["t"]) - b.axis * b.r * 0.8
                tip = base - b.axis * spec["length"]
            else:
                sgn = r.choice([-1.0, 1.0])
                base = b.point(spec["t"] + r.normal(0, 0.03), sgn * b.r * 0.8)
                tip = base + (b.normal * sgn * 0.85 + b.axis * 0.5) * spec["length"]
            extra += (0.35 + 0.25 * k) * cv.capsule(base, tip, spec["r"])
        elif kind == "callus":
            b = bones[spec["bone"]]
            c = b.point(spec["t"] + r.normal(0, 0.03))
            blob = cv.capsule(c - b.axis * 0.07, c + b.axis * 0.07, b.r * 1.6)
            extra += (0.12 + 0.12 * k) * blob
            layers[spec["bone"]] = layers[spec["bone"]] * (1 - 0.3 * k * cv.band(c, b.normal, 0.012, b.r * 1.2))
        elif kind == "plate":
            b = bones[spec["bone"]]
            sgn = r.choice([-1.0, 1.0])
            p0, p1 = b.point(spec["t0"], sgn * b.r * 1.05), b.point(spec["t1"], sgn * b.r * 1.05)
            extra += (0.45 + 0.35 * k) * cv.capsule(p0, p1, 0.022)
            for t in np.linspace(spec["t0"] + 0.05, spec["t1"] - 0.05, 3):
                extra += (0.4 + 0.3 * k) * cv.band(b.point(t), b.normal, 0.012, b.r * 1.05)
        elif kind == "lytic":
            b = bones[spec["bone"]]
            c = b.point(spec["t"] + r.normal(0, 0.02))
            layers[spec["bone"]] = layers[spec["bone"]] * (1 - (0.4 + 0.4 * k) * cv.capsule(c, c, spec["r"]))
        elif kind == "avulsion":
            b = bones[spec["bone"]]
            sgn = r.choice([-1.0, 1.0])
            notch = b.point(spec["t"], sgn * b.r * 0.8)
            layers[spec["bone"]] = layers[spec["bone"]] * (1 - 0.6 * k * cv.capsule(notch, notch, 0.025))
            frag = b.point(spec["t"], sgn * (b.r + 0.045))
            extra += (0.35 + 0.25 * k) * cv.capsule(frag - b.axis * 0.02, frag + b.axis * 0.02, 0.016)
        elif kind == "osteophytes":
            j = joints[spec["joint"]]
            perp = np.array([-j["axis"][1], j["axis"][0]])
            for sgn in (-1.0, 1.0):
                base = j["at"] + perp * sgn * spec["spread"] * r.uniform(0.7, 1.0)
                tip = base + perp * sgn * 0.06 + j["axis"] * r.normal(0, 0.02)
                extra += (0.35 + 0.2 * k) * cv.capsule(base, tip, 0.02)
        elif kind == "dots":
            b, t, side = spec["anchor"]
            c = bones[b].point(t, side)
            n = int(r.integers(spec["n"][0], spec["n"][1] + 1))
            for _ in range(n):
                p = c + r.normal(0, spec.get("spread", 0.025), 2)
                extra += spec["gain"] * (0.6 + 0.4 * k) * cv.capsule(p, p, r.uniform(*spec["r"]))
        elif kind == "foreign_body":
            b, t, side = spec["anchor"]
            c = bones[b].point(t, side) + r.normal(0, 0.02, 2)
            ang = r.uniform(0, math.pi)
            d = np.array([math.cos(ang), math.sin(ang)])
            extra += (0.6 + 0.3 * k) * cv.capsule(c - d * 0.05, c + d * 0.05, 0.012)
        elif kind == "tissue_blob":
            c = joints[spec["joint"]]["at"]
            soft += spec["gain"] * (0.5 + 0.5 * k) * cv.capsule(c, c, spec["r"])
        elif kind == "swelling":
            if "joint" in spec:
                c = joints[spec["joint"]]["at"]
                perp = np.array([-joints[spec["joint"]]["axis"][1], joints[spec["joint"]]["axis"][0]])
            else:
                bn, t, side = spec["anchor"]
                c, perp = bones[bn].point(t, side), bones[bn].normal
            sgn = r.choice([-1.0, 1.0])
            p = c + perp * sgn * spec["offset"]
            soft += 0.13 * (0.5 + 0.5 * k) * cv.capsule(p - perp * 0.05, p + perp * 0.05, spec["r"])
        elif kind == "triangle":
            pts = np.asarray(spec["pts"], float) + jitter + r.normal(0, 0.015, (3, 2))
            soft += spec["gain"] * (0.5 + 0.5 * k) * cv.triangle(pts)
    tissue = np.zeros_like(cv.X)
    for p0, p1, rr in layout["tissue"]:
        tissue = np.maximum(tissue, cv.capsule(np.array(p0) + jitter, np.array(p1) + jitter, rr))
    attenuation = 0.06 + 0.2 * tissue + soft * np.maximum(tissue, 0.5) + sum(layers.values()) + extra
    return 1.0 - np.exp(-1.6 * attenuation)  # film-like response: overlapping bones do not saturate


@dataclass
class SyntheticImages:
    """Synthetic radiographs for a corpus: ``images[i]`` is ``[2, size, size]`` (ap, lateral) for report
    ``report_ids[i]``; ``visible`` (0/1, index report_id) is what is truly drawn: the image reference."""

    images: np.ndarray
    report_ids: list[str]
    visible: pd.DataFrame
    region: str
    views: tuple[str, ...] = VIEWS
    params: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.report_ids)


def synthesize_images(frame: pd.DataFrame, region: str | None = None, schema: Schema | None = None, size: int = 96,
                      seed: int = 0, uncertain_visible: float = 0.5, uncertain_strength: float = 0.6,
                      noise: float = 0.03, pose_jitter: float = 1.0, progress: bool = True) -> SyntheticImages:
    """Two synthetic views per report of ``frame`` (ground-truth State columns), drawn from its findings.

    ``region`` defaults to the frame's ``region`` column (one region per call) and picks the layout and the
    schema (``clavicle``, ``elbow``, ``thumb``).
    """
    if region is None:
        if "region" not in frame.columns or frame["region"].nunique() != 1:
            raise ValueError("pass region= (clavicle, elbow or thumb): the frame has no single 'region' value")
        region = str(frame["region"].iloc[0])
    if region not in _LAYOUTS:
        raise ValueError(f"no synthetic radiograph layout for region {region!r}; known: {', '.join(_LAYOUTS)}")
    schema = schema or load_schema(region)
    missing = [f for f in schema.ids if f not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks ground-truth column(s) {missing} of schema {schema.name!r}")
    ids = frame["report_id"].astype(str).tolist()
    images = np.zeros((len(frame), len(VIEWS), size, size), dtype=np.float32)
    visible = []
    records = frame[schema.ids].to_dict("records")
    for i in tqdm(range(len(frame)), desc=f"drawing synthetic {region} radiographs", disable=not progress):
        images[i], vis = render_case(records[i], region, ids[i], seed=seed, size=size,
                                     uncertain_visible=uncertain_visible, uncertain_strength=uncertain_strength,
                                     noise=noise, pose_jitter=pose_jitter, schema=schema)
        visible.append(vis)
    vis_df = pd.DataFrame(visible, index=pd.Index(ids, name="report_id"), columns=schema.ids).astype("int8")
    return SyntheticImages(images=images, report_ids=ids, visible=vis_df, region=region,
                           params={"size": size, "seed": seed, "uncertain_visible": uncertain_visible,
                                   "uncertain_strength": uncertain_strength, "noise": noise,
                                   "pose_jitter": pose_jitter})
