"""Fast exact in-plane binary morphology on (..., y, x) volumes (slices are thick: nothing crosses them).

scipy's ``binary_dilation`` visits every element of the structuring element at every voxel, which is slow for
the disks (radius 2-6 pixels) the pipeline uses.  A footprint whose rows are centred segments (any disk or
axis-aligned ellipse) is the union of its rows, so the dilation is the OR of horizontal segment dilations (one
1-D maximum filter per distinct row width) shifted vertically: a few passes over the volume, with exactly scipy's
result (tests compare both).  Also: the bounding box of a mask and the removal of small 26-connected clusters.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: In-plane 4-connectivity, no connection across slices (scipy's default structure of 2-D hole filling).
_CROSS_INPLANE = np.array([np.zeros((3, 3), bool), ndimage.generate_binary_structure(2, 1), np.zeros((3, 3), bool)])


def disk(radius_px: int) -> np.ndarray:
    """Footprint ``x^2 + y^2 <= r^2`` (bool, (2r+1, 2r+1))."""
    r = max(0, int(radius_px))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return (xx**2 + yy**2) <= r * r


def dilate_inplane(mask: np.ndarray, footprint: np.ndarray, border: bool = False) -> np.ndarray:
    """Binary dilation of every 2-D image (last two axes) by ``footprint``.

    ``footprint``: odd-sized 2-D bool array, symmetric about its centre, each row empty or one segment centred on
    the middle column (disks, ellipses).  Same result as ``ndimage.binary_dilation(mask, footprint[None])``.
    ``border``: the value of the pixels outside the image; ``~dilate_inplane(~m, fp, border=True)`` is scipy's
    ``binary_erosion(m, fp[None])`` (outside counts as background).
    """
    m = np.asarray(mask, bool)
    fp = np.asarray(footprint, bool)
    cy = fp.shape[0] // 2
    out = np.zeros_like(m)
    ny = m.shape[-2]
    segments: dict[int, np.ndarray] = {}
    for row in range(fp.shape[0]):
        w = int(fp[row].sum()) // 2  # half-width of the footprint's row
        if not fp[row].any():
            continue
        if w not in segments:
            segments[w] = ndimage.maximum_filter1d(m.view(np.uint8), 2 * w + 1, axis=-1, mode="constant",
                                                   cval=int(border)).view(bool)
        dy = row - cy
        seg, d = segments[w], min(abs(dy), ny)
        if dy >= 0:  # out[y] |= seg[y - dy]; rows y < dy read outside the image
            out[..., d:, :] |= seg[..., : ny - d, :]
            out[..., :d, :] |= border
        else:
            out[..., : ny - d, :] |= seg[..., d:, :]
            out[..., ny - d :, :] |= border
    return out


def dilate_disk_inplane(mask: np.ndarray, radius_px: int, border: bool = False) -> np.ndarray:
    """:func:`dilate_inplane` by :func:`disk` (``radius_px`` pixels)."""
    return dilate_inplane(mask, disk(radius_px), border)


def fill_holes_inplane(mask: np.ndarray) -> np.ndarray:
    """Per-slice ``ndimage.binary_fill_holes`` of a (z, y, x) mask in one labelling: background not
    4-connected (in-plane) to its slice's edge is filled."""
    m = np.asarray(mask, bool)
    lab, _ = ndimage.label(~m, structure=_CROSS_INPLANE)
    edge = np.zeros(lab.max() + 1, bool)
    for side in (lab[:, 0, :], lab[:, -1, :], lab[:, :, 0], lab[:, :, -1]):
        edge[side] = True
    edge[0] = True  # label 0 = the mask itself
    return m | ~edge[lab]


def bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    """Slices of the smallest box holding every True element of ``mask`` (empty slices for an empty mask)."""
    m = np.asarray(mask, bool)
    box = []
    for axis in range(m.ndim):
        hit = np.flatnonzero(m.any(axis=tuple(a for a in range(m.ndim) if a != axis)))
        box.append(slice(int(hit[0]), int(hit[-1]) + 1) if len(hit) else slice(0, 0))
    return tuple(box)


#: 26-connectivity (faces, edges and corners) for 3-D labelling.
STRUCTURE_26 = np.ones((3, 3, 3), bool)


def remove_small_clusters(mask_zyx: np.ndarray, voxel_volume_ml: float, min_cluster_ml: float) -> np.ndarray:
    """Drop 26-connected components smaller than ``min_cluster_ml`` (labelled within the mask's bounding box,
    which holds every component whole)."""
    mask = np.asarray(mask_zyx, bool)
    if min_cluster_ml <= 0 or not mask.any():
        return mask.copy()
    box = bounding_box(mask)
    labels, _ = ndimage.label(mask[box], structure=STRUCTURE_26)
    sizes = np.bincount(labels.ravel())
    keep = sizes * voxel_volume_ml >= min_cluster_ml
    keep[0] = False
    out = np.zeros_like(mask)
    out[box] = keep[labels]
    return out
