"""Radiological display of (y, x) slices of a volume from its voxel-to-RAS affine: which voxel axis runs across the
screen, which way, the letters at the image edges and the slices' order (pure geometry; the QA figures, the summary
PDF and the comparison figure draw with it)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def direction_letter(vec: np.ndarray) -> str:
    """Letter of the RAS direction a vector points to most ('R', 'L', 'A', 'P', 'S' or 'I')."""
    axis = int(np.argmax(np.abs(vec)))
    return ("R", "A", "S")[axis] if vec[axis] > 0 else ("L", "P", "I")[axis]


@dataclass(frozen=True)
class DisplayOrientation:
    """How to turn a (y, x) slice of the map grid into a radiological-convention display image."""

    transpose: bool
    flip_lr: bool
    flip_ud: bool
    #: Letters at the left / right / top / bottom edges of the displayed image.
    left: str
    right: str
    top: str
    bottom: str
    #: Pixel height / width for ``imshow(aspect=...)``.
    aspect: float
    #: Slice indices ordered from inferior to superior.
    slice_order: tuple[int, ...]
    #: Superior (S) coordinate of each slice centre, mm, indexed by slice index.
    slice_s_mm: tuple[float, ...]

    def image(self, a2d: np.ndarray) -> np.ndarray:
        img = a2d.T if self.transpose else a2d
        if self.flip_lr:
            img = img[:, ::-1]
        if self.flip_ud:
            img = img[::-1, :]
        return img

    def point(self, y: float, x: float, shape_yx: tuple[int, int]) -> tuple[float, float]:
        """Display (column, row) of voxel (y, x) on a slice of shape ``shape_yx``."""
        ny, nx = shape_yx
        if self.transpose:
            row, col, nrows, ncols = x, y, nx, ny
        else:
            row, col, nrows, ncols = y, x, ny, nx
        if self.flip_lr:
            col = ncols - 1 - col
        if self.flip_ud:
            row = nrows - 1 - row
        return float(col), float(row)


def display_orientation(affine_ras: np.ndarray, shape_zyx: tuple[int, int, int]) -> DisplayOrientation:
    """Derive the radiological display of (y, x) slices from the voxel-to-RAS affine.

    The in-plane voxel axis closest to the patient's left-right direction becomes the horizontal image axis and
    runs from the patient's right (image left) to the patient's left; the other in-plane axis runs from anterior
    (top) to posterior. Slices are ordered inferior to superior.
    """
    a = np.asarray(affine_ras, float)
    m = a[:3, :3]
    col_vec, row_vec = m[:, 0], m[:, 1]
    transpose = abs(row_vec[0]) > abs(col_vec[0])
    h, v = (row_vec, col_vec) if transpose else (col_vec, row_vec)
    flip_lr = bool(h[0] > 0)  # display column must increase toward patient left (R coordinate decreasing)
    flip_ud = bool(v[1] > 0)  # display row must increase toward posterior (A coordinate decreasing)
    h_eff = -h if flip_lr else h
    v_eff = -v if flip_ud else v
    hn, vn = float(np.linalg.norm(h)), float(np.linalg.norm(v))
    aspect = vn / hn if hn > 0 and vn > 0 else 1.0

    nz, ny, nx = shape_zyx
    centre = np.array([(nx - 1) / 2.0, (ny - 1) / 2.0, 0.0, 1.0])
    s_mm = []
    for k in range(nz):
        centre[2] = k
        s_mm.append(float((a @ centre)[2]))
    order = tuple(int(i) for i in np.argsort(np.asarray(s_mm), kind="stable"))
    return DisplayOrientation(
        transpose=bool(transpose),
        flip_lr=flip_lr,
        flip_ud=flip_ud,
        left=direction_letter(-h_eff),
        right=direction_letter(h_eff),
        top=direction_letter(-v_eff),
        bottom=direction_letter(v_eff),
        aspect=aspect,
        slice_order=order,
        slice_s_mm=tuple(s_mm),
    )
