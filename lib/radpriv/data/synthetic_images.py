"""Synthetic two-view radiographs drawn from ground-truth findings (the text generators: :mod:`radpriv.data.synthetic`).

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
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from radpriv.data.image_manifest import VIEWS
from radpriv.progress import tqdm
from radpriv.schemas import Schema, State, load_schema

__all__ = ["REGIONS", "FEATURES", "SyntheticImages", "synthesize_images", "render_case"]

REGIONS = ("elbow", "clavicle", "thumb")


# =============================================================================================
# scene description
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
# (a table, one entry per region and finding: its regions repeat the same shape of entries by design)
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
