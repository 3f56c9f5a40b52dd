"""Procedural phantom chest radiographs: anatomy, class findings, shortcut markers, dataset writer."""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image
from tqdm.auto import tqdm

from cxrlab.datamodules.sources.findings import finding_column, finding_row

PHANTOM_CLASSES: tuple[str, ...] = ("normal", "bacteria", "virus", "covid")
COLUMNS: tuple[str, ...] = ("path", "label", "patient_id", "mask_path", "lesion_path", "shortcut")
MAX_IMAGES_PER_PATIENT = 3
# Faint, variable findings: a clean ResNet-18 on the demo set reaches about 0.95 test accuracy,
# high but imperfect, so reports, intervals and calibration carry information (0.5 gave 1.000).
DEFAULT_DIFFICULTY = 0.8
# --multilabel: each patient has each finding of the chosen classes independently with this chance.
FINDING_CHANCE = 0.4
MULTILABEL_FOLDER = "findings"  # images/findings/<patient>_<index>.png: no class folders

# 5x5 burnt-in glyphs, one per class index; each class also owns one corner (see _burn_marker).
_GLYPHS = np.array(
    [
        ["#....", "#....", "#....", "#....", "#####"],
        ["#####", "#...#", "#...#", "#...#", "#####"],
        ["#...#", ".#.#.", "..#..", ".#.#.", "#...#"],
        ["..#..", "..#..", "#####", "..#..", "..#.."],
    ]
)
_GLYPH_BITS = np.array([[[c == "#" for c in row] for row in g] for g in _GLYPHS])


# ---------------------------------------------------------------- smooth-field primitives
# Everything is float32 and avoids tanh/arctan2/hypot: on small CPUs those dominate the cost.


def _ramp(x: np.ndarray) -> np.ndarray:
    """Linear 0->1 step over x in [-2, 2]: a cheap stand-in for the logistic function."""
    return np.clip(0.25 * x + 0.5, 0.0, 1.0)


def _inside(phi: np.ndarray, edge: float) -> np.ndarray:
    """Soft indicator of phi < 0 with an edge width in normalised units."""
    return _ramp(-phi / edge)


def _norm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean length of (a, b), elementwise."""
    return np.sqrt(a * a + b * b)


def _blur(a: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur (sigma in pixels) with reflected borders."""
    r = min(int(math.ceil(3 * sigma)), min(a.shape) - 1)
    if sigma <= 0 or r < 1:
        return a
    k = np.exp(-0.5 * (np.arange(-r, r + 1, dtype=np.float32) / sigma) ** 2)
    k /= k.sum()
    # Both passes run along axis 0 (the second on the transpose): windows strided across
    # rows multiply several times faster than windows along a row.
    for _ in range(2):
        padded = np.pad(a.T, ((r, r), (0, 0)), mode="reflect")
        a = sliding_window_view(padded, 2 * r + 1, axis=0) @ k
    return a


def _upsample(a: np.ndarray, size: int, factor: int) -> np.ndarray:
    """Linear interpolation of a coarse grid (cell = factor pixels) onto size x size pixels."""
    pos = np.clip((np.arange(size, dtype=np.float32) + 0.5) / factor - 0.5, 0, a.shape[0] - 1)
    i0 = np.minimum(pos.astype(int), a.shape[0] - 2)
    w = (pos - i0)[:, None]
    a = a[i0] * (1 - w) + a[i0 + 1] * w
    return a[:, i0] * (1 - w.T) + a[:, i0 + 1] * w.T


def _noise(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """Unit-variance smooth random field with correlation length `scale` (normalised units)."""
    sigma = scale * size / 2
    # Smooth fields are drawn on a coarse grid and interpolated: same look, far fewer pixels.
    factor = max(1, round(sigma / 1.5))
    coarse = rng.standard_normal((size // factor + 2,) * 2, dtype=np.float32)
    f = _upsample(_blur(coarse, sigma / factor), size, factor)
    return f / (f.std() + 1e-6)


def _region(field: np.ndarray, lung: np.ndarray, thr: float) -> np.ndarray:
    """Lesion mask: field above thr inside the lung, relaxed so it is never empty."""
    peak = float(field[lung].max()) if lung.any() else 0.0
    return (field > min(thr, 0.6 * peak)) & lung


# ---------------------------------------------------------------- canonical anatomy


@dataclass(frozen=True)
class _Chest:
    """Canonical (pose-free) chest geometry shared by anatomy and findings."""

    u: np.ndarray  # (1, size) viewer x in [-1, 1]; u > 0 is the patient's left
    v: np.ndarray  # (size, 1) y in [-1, 1], downwards
    lung: np.ndarray  # bool lung fields
    body: np.ndarray  # bool body outline (neck, shoulders, chest wall, abdomen)
    air: np.ndarray  # soft-edged lung fields: where a finding may replace air in the image
    lat: np.ndarray  # 0 at the medial lung edge, 1 at the lateral edge
    height: np.ndarray  # 0 at the apex, 1 at the diaphragm
    vessels: np.ndarray  # normal bronchovascular markings in [0, 1]
    top: float
    domes: tuple[float, float]  # diaphragm dome height (right lung, left lung)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1]: x as a (1, size) row, y as a (size, 1) column."""
    # Broadcasting keeps terms that depend on one axis only at O(size) cost.
    c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    return c[None, :], c[:, None]


def _vessels(rng: np.random.Generator, u: np.ndarray, v: np.ndarray, hila_v: float) -> np.ndarray:
    """Bronchovascular markings: lines radiating from both hila, tapering to the periphery."""
    bins = 64
    out = np.zeros((v.shape[0], u.shape[1]), dtype=np.float32)
    for side in (-1.0, 1.0):
        profile = np.maximum(rng.standard_normal(bins).astype(np.float32), 0.0)
        du, dv = u - side * 0.17, v - hila_v
        r = _norm(du, dv)
        # Pseudo-angle in [-1, 1] (monotone in the true angle, no arctan2); a bend along r
        # keeps the lines from looking ruler-straight.
        bend = 0.15 * (r - 0.3) ** 2 * rng.uniform(-1, 1)
        angle = dv / (np.abs(du) + np.abs(dv) + 1e-6) + bend
        lines = profile[((angle + 1.0) * 0.5 * bins).astype(int) % bins]
        taper = 1.0 / (1.0 + (r / 0.25) ** 2)
        hilum = _inside(r - 0.04, 0.04)
        out += np.where(u * side > 0, 0.5 * lines * taper + hilum, 0.0)
    return np.clip(out, 0.0, 1.0)


def _bone(dist: np.ndarray, edge: float) -> np.ndarray:
    """Bone band profile from |distance| / half-width: denser at the cortex than the middle."""
    return _inside(dist - 1.0, edge) * (0.75 + 0.25 * np.minimum(dist, 1.0) ** 2)


def _ribs(phase: np.ndarray, half: float, first: int, count: int) -> np.ndarray:
    """Equally spaced bone bands where floor(phase) counts the rib (first .. first+count-1)."""
    k = np.floor(phase)
    return np.where(
        (k >= first) & (k < first + count), _bone(np.abs(phase - k - 0.5) / half, 0.2), 0
    )


def _anatomy(rng: np.random.Generator, size: int, difficulty: float) -> tuple[np.ndarray, _Chest]:
    """Attenuation map of a normal chest plus the geometry findings are placed on."""
    spread = 0.5 + difficulty

    def jit(width: float) -> float:
        return float(rng.uniform(-width, width) * spread)

    u, v = _grid(size)
    au = np.abs(u)
    body_w, neck_w, shoulder = 0.84 + jit(0.04), 0.2 + jit(0.02), -0.86 + jit(0.02)
    cx, la = 0.37 + jit(0.015), 0.27 + jit(0.02)
    top = -0.70 + jit(0.03)
    dome_r = 0.42 + jit(0.04)
    dome_l = dome_r + 0.05 + jit(0.02)
    hx, hy, ha, hb = 0.1 + jit(0.02), 0.36 + jit(0.02), 0.3 + jit(0.03), 0.25 + jit(0.02)

    # Body: neck into sloping shoulders, chest wall bulging at mid-height, cylinder thickness.
    chest_w = body_w - 0.06 * (v - 0.1) ** 2
    width = neck_w + (chest_w - neck_w) * _ramp((v - shoulder) / 0.06) ** 0.5
    body = _inside(au - width, 0.015)
    thickness = np.sqrt(np.clip(1.0 - (u / width) ** 2, 0.0, 1.0)) ** 0.5

    # Lungs: tall ellipses (tapered apex, widest at the base) cut by the domes and the heart.
    vc = 0.15 + jit(0.03)
    phi_shape = (_norm((au - cx) / la, (v - vc) / (vc - top)) - 1.0) * la
    dome_base = np.where(u < 0, dome_r, dome_l)
    dome = dome_base + 0.16 * np.minimum((au - cx + 0.05) / la, 1.1) ** 2
    rot = np.deg2rad(-20.0)
    hu, hv = u - hx, v - hy
    ru, rv = hu * np.cos(rot) - hv * np.sin(rot), hu * np.sin(rot) + hv * np.cos(rot)
    # Cardiac ellipse joined to the mediastinum by a widening wedge, so the left heart border
    # runs from the aortic knob down to the apex instead of a ball sitting on the diaphragm.
    wedge = np.clip((v - top - 0.42) / (hy - top - 0.42), 0.0, 1.0) ** 2
    wedge_phi = np.maximum(u - 0.1 - (hx + 0.75 * ha - 0.1) * wedge, np.maximum(-u, v - hy))
    heart_phi = np.minimum((_norm(ru / ha, rv / hb) - 1.0) * hb, wedge_phi)
    phi_lung = np.maximum(np.maximum(phi_shape, v - dome), -heart_phi)
    lung_soft = _inside(phi_lung, 0.008)
    lung = phi_lung < 0

    # Midline: mediastinum merging into the heart, aortic knob, air in the trachea, spine.
    med_w = 0.09 + 0.03 * _ramp((v + 0.2) / 0.1)
    mediastinum = _inside(np.abs(u - 0.01) - med_w, 0.02) * _ramp((v - top + 0.1) / 0.05)
    knob = _inside(_norm(u - 0.12, v - top - 0.33) - 0.055, 0.015)
    # The heart and the abdomen below the domes are one water density: no edge between them.
    # The domes flatten beyond the lungs and fade out laterally, so no dome edge shows there.
    abdomen = _ramp((v - dome) / 0.02) * _inside(au - cx - la, 0.08)
    central = np.maximum(
        np.maximum(mediastinum, knob), np.maximum(_inside(heart_phi, 0.012), abdomen)
    )
    trachea = _inside(np.abs(u) - 0.028, 0.006) * _ramp((top + 0.38 - v) / 0.02)
    vertebrae = 0.8 + 0.2 * np.cos(np.pi * (v - top) / (0.1 + jit(0.005))) ** 2
    spine = _inside(au - 0.055, 0.008) * vertebrae

    # Posterior ribs arch laterally downwards, upper ones more curved; fainter anterior ribs
    # slope down medially.  One phase field draws all ribs of a kind at once.
    lat_u = au - 0.06
    curve = -0.1 * lat_u + (1.0 - 0.4 * (v - top)) * lat_u**2
    posterior = _ribs((v - top + 0.07 - curve) / (0.1 + jit(0.006)), 0.21, 0, 10)
    anterior = _ribs(
        (v - top - 0.03 - 0.45 * (0.65 - au) + 0.3 * (0.65 - au) ** 2) / 0.14, 0.18, 0, 6
    )
    ribs = posterior * _ramp((au - 0.06) / 0.01) + 0.4 * anterior * _ramp((au - 0.25) / 0.03)
    ribs = ribs * _inside(au - (width - 0.03), 0.02)
    clav_v = top + 0.1 + jit(0.02) - 0.45 * lat_u + 0.25 * lat_u**2
    clavicles = _bone(np.abs(v - clav_v) / 0.024, 0.25) * _inside(np.abs(au - 0.35) - 0.29, 0.02)

    gastric = _inside(_norm((u - 0.3) / 1.6, v - dome_l - 0.09) - 0.05, 0.01)
    vessels = _vessels(rng, u, v, hila_v=top + 0.57)
    basal = np.clip((v - top) / (dome_r - top), 0.0, 1.0)

    density = (
        0.55 * thickness * body
        - 0.40 * lung_soft * (1.0 - 0.2 * basal)
        + 0.16 * central
        - 0.1 * trachea
        + 0.07 * spine
        + 0.11 * ribs
        + 0.16 * clavicles
        + 0.16 * vessels * lung_soft
        - 0.12 * gastric
    )
    lat = np.clip((au - (cx - la)) / (2 * la), 0.0, 1.0)
    height = np.clip((v - top) / (dome_base - top), 0.0, 1.0)
    chest = _Chest(u, v, lung, au < width, lung_soft, lat, height, vessels, top, (dome_r, dome_l))
    return density, chest


# ---------------------------------------------------------------- class findings
# Each finding returns (added attenuation, lesion mask); both vanish outside the lung mask.


def _strength(rng: np.random.Generator, d: float) -> float:
    """Finding contrast factor: 1 at difficulty 0, fading and more variable as it rises."""
    return (1.0 - 0.6 * d**0.7) * float(rng.uniform(1.0 - 0.3 * d, 1.1))


def _bacteria(rng: np.random.Generator, c: _Chest, d: float) -> tuple[np.ndarray, np.ndarray]:
    """Focal lobar consolidation in one lung, sharp at the fissure, with air bronchograms."""
    size = c.lung.shape[0]
    side = rng.choice([-1.0, 1.0])
    upper = rng.random() < 0.4
    fissure = c.top + 0.45 * (c.domes[int(side > 0)] - c.top) + 0.05 * c.u * side
    eta = rng.uniform(0.12, 0.35) if upper else rng.uniform(0.6, 0.85)
    lam = rng.uniform(0.35, 0.7)
    cu = side * (0.12 + 0.5 * lam)
    cv = c.top + eta * (c.domes[int(side > 0)] - c.top)
    radius = rng.uniform(0.19, 0.26) * (1.0 - 0.45 * d)
    field = np.zeros(c.lung.shape, dtype=np.float32)
    for _ in range(3):
        bu, bv = cu + rng.normal(0, 0.5 * radius), cv + rng.normal(0, 0.5 * radius)
        r = radius * rng.uniform(0.6, 1.0)
        field += np.exp(-((c.u - bu) ** 2 + (c.v - bv) ** 2) / (2 * r**2))
    if rng.random() < 0.1 + 0.3 * d:  # a small satellite focus in the other lung
        su, sv = -side * rng.uniform(0.25, 0.5), c.top + rng.uniform(0.3, 0.8) * 0.9
        field += 0.8 * np.exp(-((c.u - su) ** 2 + (c.v - sv) ** 2) / (2 * (0.35 * radius) ** 2))
    field *= 1.0 + 0.25 * _noise(rng, size, 0.05)
    lobe = (c.v < fissure) if upper else (c.v > fissure)
    fill = np.clip((field - 0.3) / 0.3, 0.0, 1.0) * np.where(c.u * side > 0, lobe, True)
    amp = 0.48 * _strength(rng, d)
    opacity = amp * fill * (1.0 - 0.5 * c.vessels) * c.air
    return opacity, _region(fill, c.lung, 0.5)


def _virus(rng: np.random.Generator, c: _Chest, d: float) -> tuple[np.ndarray, np.ndarray]:
    """Bilateral diffuse interstitial pattern: a fine reticular network over both lungs."""
    size = c.lung.shape[0]
    # Zero-level contours of a fine random field form closed cells: a reticular net.
    fine = _noise(rng, size, 0.016)
    network = np.exp(-((fine / 0.35) ** 2))
    envelope = (0.6 + 0.4 * np.exp(-((c.lat / 0.6) ** 2))) * (1.0 + 0.35 * _noise(rng, size, 0.12))
    cut = np.quantile(envelope[c.lung], 0.25 + 0.35 * d) if c.lung.any() else 1.0
    extent = np.clip((envelope - cut) / 0.15 + 0.5, 0.0, 1.0)
    amp = 0.34 * _strength(rng, d)
    opacity = amp * extent * (0.3 + 0.7 * network) * c.air
    return opacity, _region(extent, c.lung, 0.5)


def _covid(rng: np.random.Generator, c: _Chest, d: float) -> tuple[np.ndarray, np.ndarray]:
    """Bilateral peripheral lower-zone ground-glass opacities with hazy margins."""
    size = c.lung.shape[0]
    lat0, low0 = 0.5 + 0.12 * d, 0.42 + 0.12 * d
    zone = _ramp((c.lat - lat0) / 0.07) * _ramp((c.height - low0) / 0.06)
    sides = np.where(c.u < 0, rng.uniform(0.75, 1.0), rng.uniform(0.75, 1.0))
    field = zone * sides * (1.0 + 0.5 * _noise(rng, size, 0.05))
    haze = np.clip(_blur(field, 0.02 * size / 2), 0.0, 1.2)
    amp = 0.32 * _strength(rng, d)
    return amp * haze * c.air, _region(haze, c.lung, 0.45)


def _normal(rng: np.random.Generator, c: _Chest, d: float) -> tuple[np.ndarray, np.ndarray]:
    """No finding."""
    return np.zeros(c.lung.shape, dtype=np.float32), np.zeros(c.lung.shape, dtype=bool)


_FINDINGS: dict[str, Callable[[np.random.Generator, _Chest, float], tuple[np.ndarray, np.ndarray]]]
_FINDINGS = {"normal": _normal, "bacteria": _bacteria, "virus": _virus, "covid": _covid}


# ---------------------------------------------------------------- patient -> radiograph


@dataclass(frozen=True)
class _Patient:
    """Everything shared by all radiographs of one phantom patient."""

    density: np.ndarray  # canonical attenuation, findings included
    labels: np.ndarray  # uint8 canonical labels: bit 0 lung, bit 1 lesion (inside lung), bit 2 body
    pose: tuple[float, float, float, float]  # rotation (rad), shift x, shift y, scale


def _sample_patient(rng: np.random.Generator, findings: tuple[str, ...], size: int, difficulty: float) -> _Patient:
    """Draw anatomy, findings (their opacities add up) and base pose of one patient on the canonical grid."""
    density, chest = _anatomy(rng, size, difficulty)
    opacity = np.zeros(chest.lung.shape, dtype=np.float32)
    lesion = np.zeros(chest.lung.shape, dtype=bool)
    for finding in findings:
        more, where = _FINDINGS[finding](rng, chest, difficulty)
        opacity, lesion = opacity + more, lesion | where
    d = difficulty
    pose = (
        float(np.deg2rad(rng.uniform(-1, 1) * (2.0 + 6.0 * d))),
        float(rng.uniform(-1, 1) * (0.02 + 0.05 * d)),
        float(rng.uniform(-1, 1) * (0.02 + 0.04 * d)),
        float(rng.uniform(0.97 - 0.07 * d, 1.02 + 0.04 * d)),
    )
    labels = chest.lung.astype(np.uint8) | (lesion.astype(np.uint8) << 1) | (chest.body.astype(np.uint8) << 2)
    return _Patient(density + opacity, labels, pose)


@dataclass(frozen=True)
class _Warp:
    """Where each output pixel reads the canonical grid: top-left neighbour and fractions."""

    idx: np.ndarray  # flat index of the top-left canonical neighbour
    fr: np.ndarray  # row fraction towards the next row, in [0, 1]
    fc: np.ndarray  # column fraction towards the next column, in [0, 1]
    inside: np.ndarray  # the nearest canonical pixel exists (masks are False elsewhere)


def _warp(size: int, pose: tuple[float, float, float, float]) -> _Warp:
    """Inverse-map every output pixel through rotation, shift and scale onto the canonical grid."""
    angle, sx, sy, scale = pose
    x, y = _grid(size)
    xs, ys = (x - sx) / scale, (y - sy) / scale
    cos, sin = math.cos(angle), math.sin(angle)
    rows = (-sin * xs + cos * ys + 1.0) * (size / 2) - 0.5
    cols = (cos * xs + sin * ys + 1.0) * (size / 2) - 0.5
    r0 = np.clip(np.floor(rows), 0, size - 2)
    c0 = np.clip(np.floor(cols), 0, size - 2)
    inside = (rows > -0.5) & (rows < size - 0.5) & (cols > -0.5) & (cols < size - 0.5)
    return _Warp(
        (r0 * size + c0).astype(np.intp),
        np.clip(rows - r0, 0.0, 1.0),
        np.clip(cols - c0, 0.0, 1.0),
        inside,
    )


def _sample_linear(a: np.ndarray, w: _Warp) -> np.ndarray:
    """Bilinear sample of a canonical image (flat gathers: far cheaper than 2-D fancy indexing)."""
    flat, n = a.ravel(), a.shape[1]
    top = flat.take(w.idx)
    top += (flat.take(w.idx + 1) - top) * w.fc
    bottom = flat.take(w.idx + n)
    bottom += (flat.take(w.idx + n + 1) - bottom) * w.fc
    return top + (bottom - top) * w.fr


def _sample_nearest(a: np.ndarray, w: _Warp) -> np.ndarray:
    """Nearest-neighbour sample of a canonical label image; 0 outside the canonical grid."""
    step = (w.fr >= 0.5) * a.shape[1] + (w.fc >= 0.5)
    return np.where(w.inside, a.ravel().take(w.idx + step), 0)


def _burn_marker(img: np.ndarray, marker: int) -> None:
    """Burn the class glyph, bright and crisp, into the class's own corner (in place)."""
    size = img.shape[0]
    cell, margin = max(1, round(size / 64)), max(1, round(size * 0.03))
    glyph = np.kron(_GLYPH_BITS[marker], np.ones((cell, cell), dtype=bool))
    g = glyph.shape[0]
    r0 = margin if marker in (0, 1) else size - margin - g
    c0 = margin if marker in (0, 2) else size - margin - g
    patch = img[r0 : r0 + g, c0 : c0 + g]
    patch[glyph] = 255


class PhantomView(NamedTuple):
    """One rendered radiograph and its ground truth, all H x W."""

    image: np.ndarray  # uint8
    lung: np.ndarray  # bool lung mask
    lesion: np.ndarray  # bool finding mask (empty for normal)
    body: np.ndarray  # bool body outline (what a body mask computed from the image should find)


def _render_view(
    patient: _Patient, rng: np.random.Generator, difficulty: float, marker: int | None
) -> PhantomView:
    """One exposure of a patient: small pose change, exposure, film noise and blur."""
    size = patient.density.shape[0]
    d = difficulty
    angle, sx, sy, scale = patient.pose
    pose = (
        angle + float(np.deg2rad(rng.normal(0, 1.0))),
        sx + float(rng.normal(0, 0.01)),
        sy + float(rng.normal(0, 0.01)),
        scale * float(rng.uniform(0.99, 1.01)),
    )
    warp = _warp(size, pose)
    density = _sample_linear(patient.density, warp)
    x, y = _grid(size)
    heel = 1.0 + rng.uniform(-0.06, 0.06) * x + rng.uniform(-0.04, 0.04) * y
    gain = 1.0 + rng.uniform(-1, 1) * (0.04 + 0.12 * d)
    img = np.clip(0.03 + gain * heel * density, 0.0, 1.0)
    # A cheap film curve: bends mid-tones up or down like a gamma, fixes 0 and 1.
    img += rng.uniform(-1, 1) * (0.1 + 0.2 * d) * img * (1.0 - img)
    sigma_noise = (0.015 + 0.05 * d) * rng.uniform(0.7, 1.3)
    img = img + sigma_noise * rng.standard_normal(img.shape, dtype=np.float32)
    img = _blur(img, size / 256 * rng.uniform(0.5, 1.1))
    img = img + 0.3 * sigma_noise * rng.standard_normal(img.shape, dtype=np.float32)
    out = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if marker is not None:
        _burn_marker(out, marker)
    labels = _sample_nearest(patient.labels, warp)
    return PhantomView(out, (labels & 1) > 0, (labels & 2) > 0, (labels & 4) > 0)


# ---------------------------------------------------------------- public API


def _check_unit(name: str, value: float) -> None:
    """Raise unless 0 <= value <= 1."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")


def _check_render_args(label: str, size: int, difficulty: float) -> None:
    """Validate arguments shared by render_phantom and generate_phantom."""
    if label not in PHANTOM_CLASSES:
        raise ValueError(f"label must be one of {PHANTOM_CLASSES}, got {label!r}")
    if size < 32:
        raise ValueError(f"size must be >= 32 pixels, got {size}")
    _check_unit("difficulty", difficulty)


def render_phantom(
    rng: np.random.Generator,
    label: str,
    size: int,
    difficulty: float = DEFAULT_DIFFICULTY,
    marker: int | None = None,
) -> PhantomView:
    """One frontal phantom radiograph with its lung, lesion and body masks."""
    _check_render_args(label, size, difficulty)
    if marker is not None and marker not in range(len(PHANTOM_CLASSES)):
        raise ValueError(f"marker must be None or a class index 0..{len(PHANTOM_CLASSES) - 1}")
    return _render_view(_sample_patient(rng, (label,), size, difficulty), rng, difficulty, marker)


@dataclass(frozen=True)
class _Task:
    """One patient to render: its class (or, multi-label, its findings), index, image indices and generator settings."""

    out: Path
    label: str  # the class, or the multi-label summary of `findings`
    findings: tuple[str, ...]  # what the patient has: (label,) for a class
    columns: tuple[str, ...]  # multi-label: every finding of the set (a finding: column each); () for classes
    patient: int
    images: tuple[int, ...]
    seed: int
    size: int
    difficulty: float
    shortcut: float

    @property
    def code(self) -> int:
        """The class index that seeds this patient; multi-label patients get one past them."""
        return len(PHANTOM_CLASSES) if self.columns else PHANTOM_CLASSES.index(self.label)


def _save_png(a: np.ndarray, path: Path) -> None:
    """Write a uint8 or bool array as an 8-bit grayscale PNG (masks as 0/255)."""
    data = a.astype(np.uint8) * 255 if a.dtype == bool else a
    # Level 1: the film noise barely compresses, so higher levels only cost time.
    Image.fromarray(data).save(path, compress_level=1)


def _render_task(task: _Task) -> list[dict[str, object]]:
    """Render and write every image of one patient; return their metadata rows."""
    code = task.code
    patient_rng = np.random.default_rng(np.random.SeedSequence([task.seed, code, 0, task.patient]))
    patient = _sample_patient(patient_rng, task.findings, task.size, task.difficulty)
    folder = MULTILABEL_FOLDER if task.columns else task.label
    findings = finding_row({f: float(f in task.findings) for f in task.columns}, task.columns) if task.columns else {}
    rows = []
    for index in task.images:
        rng = np.random.default_rng(np.random.SeedSequence([task.seed, code, 1, index]))
        # Drawn first and always, so the shortcut share changes markers and nothing else.
        marked = bool(rng.random() < task.shortcut)
        img, lung, lesion, _ = _render_view(patient, rng, task.difficulty, code if marked else None)
        name = f"{folder}/{folder}_{index:05d}.png"
        for kind, array in (("images", img), ("masks", lung), ("lesions", lesion)):
            _save_png(array, task.out / kind / name)
        rows.append(
            {
                "path": f"images/{name}",
                "label": task.label,
                "patient_id": f"{folder}_p{task.patient:05d}",
                "mask_path": f"masks/{name}",
                "lesion_path": f"lesions/{name}",
                "shortcut": int(marked),
                **findings,
            }
        )
    return rows


def _patients(seed: int, code: int, n: int) -> list[tuple[int, ...]]:
    """Split image indices 0..n-1 of a class (seeded by its `code`) into patients of 1-3 consecutive images."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, code, 2]))
    groups, start = [], 0
    while start < n:
        count = min(int(rng.integers(1, MAX_IMAGES_PER_PATIENT + 1)), n - start)
        groups.append(tuple(range(start, start + count)))
        start += count
    return groups


def _multilabel_tasks(
    out: Path, columns: tuple[str, ...], n: int, seed: int, size: int, difficulty: float
) -> list[_Task]:
    """Patients of a multi-label set, each with its own seeded draw of findings."""
    code = len(PHANTOM_CLASSES)
    tasks = []
    for p, images in enumerate(_patients(seed, code, n)):
        rng = np.random.default_rng(np.random.SeedSequence([seed, code, 3, p]))
        has = tuple(c for c in columns if rng.random() < FINDING_CHANCE)
        label = str(finding_row({c: float(c in has) for c in columns}, columns)["label"])
        tasks.append(_Task(out, label, has, columns, p, images, seed, size, difficulty, 0.0))
    return tasks


def _prepare_out(out: Path, classes: Sequence[str]) -> None:
    """Create a fresh output folder, clearing a previous phantom but nothing else."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"out {str(out)!r} is a file; pass a folder path")
    if out.exists() and any(out.iterdir()):
        meta = out / "metadata.csv"
        header = meta.open().readline().strip().split(",") if meta.is_file() else []
        if tuple(header[: len(COLUMNS)]) != COLUMNS:  # multi-label sets add finding columns
            raise ValueError(
                f"out {str(out)!r} is not empty and holds no phantom metadata.csv; "
                "pass an empty or new folder"
            )
        for folder in ("images", "masks", "lesions"):
            shutil.rmtree(out / folder, ignore_errors=True)
        for name in ("metadata.csv", "README.txt"):
            (out / name).unlink(missing_ok=True)
    for folder in ("images", "masks", "lesions"):
        for label in classes:
            (out / folder / label).mkdir(parents=True, exist_ok=True)


def _readme(
    n_per_class: int,
    size: int,
    seed: int,
    classes: Sequence[str],
    shortcut: float,
    difficulty: float,
    multilabel: bool = False,
) -> str:
    """Human-readable description of how a phantom folder was generated."""
    corners = ("top-left", "top-right", "bottom-left", "bottom-right")
    marks = ", ".join(f"{c}={corners[PHANTOM_CLASSES.index(c)]}" for c in classes)
    layout = (
        f"multilabel: each patient has each finding with chance {FINDING_CHANCE} (columns finding:<name>, 1/0); "
        f"images/{MULTILABEL_FOLDER}/<id>.png"
        if multilabel else "images/<class>/<id>.png"
    )
    return (
        "cxrlab procedural phantom chest X-rays (datamodules/phantom.py)\n"
        f"n_per_class={n_per_class} size={size} seed={seed} classes={','.join(classes)} "
        f"shortcut={shortcut} difficulty={difficulty}\n"
        f"{layout}: 8-bit radiograph; masks/: lung mask (0/255); "
        "lesions/: finding mask (0/255, empty for normal).\n"
        "Findings: bacteria = lobar consolidation in one lung; virus = bilateral diffuse "
        "reticular pattern; covid = bilateral peripheral lower-zone ground glass.\n"
        f"Shortcut markers (metadata column shortcut=1) sit in class corners: {marks}.\n"
        "1-3 images per patient (patient_id); the output depends on the arguments above only, "
        "not on the number of workers.\n"
    )


def generate_phantom(
    out: str | Path,
    n_per_class: int = 50,
    size: int = 256,
    seed: int = 0,
    classes: Sequence[str] = PHANTOM_CLASSES,
    shortcut: float = 0.0,
    difficulty: float = DEFAULT_DIFFICULTY,
    workers: int = 1,
    progress: bool = True,
    multilabel: bool = False,
) -> pd.DataFrame:
    """Write a phantom dataset under `out` and return its metadata table.

    multilabel: n_per_class x len(classes) images whose patients each have every finding of
    `classes` (normal is no finding) independently with chance FINDING_CHANCE, overlapping in one film.
    """
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1, got {n_per_class}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    classes = tuple(classes)
    if not classes:
        raise ValueError(f"classes must name at least one of {PHANTOM_CLASSES}")
    unknown = [c for c in classes if c not in PHANTOM_CLASSES]
    if unknown:
        raise ValueError(f"classes has unknown names {unknown}; choose from {PHANTOM_CLASSES}")
    if len(set(classes)) != len(classes):
        raise ValueError(f"classes lists a name twice: {list(classes)}; give each class once")
    _check_render_args(classes[0], size, difficulty)
    _check_unit("shortcut", shortcut)
    columns = tuple(c for c in classes if c != "normal") if multilabel else ()
    if multilabel and (shortcut or not columns):
        raise ValueError(
            "multilabel phantoms need a finding among classes (bacteria, virus, covid) and no shortcut markers "
            "(a marker codes one class, not a set of findings)"
        )

    out = Path(out)
    _prepare_out(out, (MULTILABEL_FOLDER,) if multilabel else classes)
    tasks = _multilabel_tasks(out, columns, n_per_class * len(classes), seed, size, difficulty) if multilabel else [
        _Task(out, label, (label,), (), p, images, seed, size, difficulty, shortcut)
        for label in classes
        for p, images in enumerate(_patients(seed, PHANTOM_CLASSES.index(label), n_per_class))
    ]
    rows: list[dict[str, object]] = []
    with (
        ProcessPoolExecutor(workers) if workers > 1 else nullcontext() as pool,
        tqdm(
            total=n_per_class * len(classes), disable=not progress, desc="phantom", unit="img"
        ) as bar,
    ):
        # Patients are independent and seeded on their own, so the pool cannot change results.
        chunk = max(1, len(tasks) // (8 * workers))
        results = (
            pool.map(_render_task, tasks, chunksize=chunk) if pool else map(_render_task, tasks)
        )
        for task_rows in results:
            rows.extend(task_rows)
            bar.update(len(task_rows))
    table = pd.DataFrame(rows, columns=[*COLUMNS, *(finding_column(c) for c in columns)])
    (out / "README.txt").write_text(_readme(n_per_class, size, seed, classes, shortcut, difficulty, multilabel))
    # Written last: a metadata.csv marks a finished phantom that may later be overwritten.
    table.to_csv(out / "metadata.csv", index=False)
    return table
