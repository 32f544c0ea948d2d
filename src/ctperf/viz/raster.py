"""Fast raster drawing for the QA figures and the summary page: numpy composes the images, Pillow draws the text.

matplotlib costs ~0.5 s to import and ~0.1-0.4 s per figure (text layout, artists); the QA figures of a run are
flat images with a few labels, so they are drawn here directly on a Pillow image instead (~20-50 ms each, and
Pillow's own import is cheap).  Sizes are given in inches and points like matplotlib's so the layouts match
:mod:`ctperf.viz.qa_figures`' conventions; fonts are matplotlib's DejaVu Sans files when present (read from disk,
matplotlib is not imported).

Nothing here touches process-global state: fonts are cached per thread and every call draws on its own image,
so figures may be drawn from several threads at once.
"""

from __future__ import annotations

import importlib.util
import math
import threading
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

#: zlib level and strategy of the PNG files: level 1 with run-length matching is ~3x faster to write than
#: Pillow's default (level 6) and the flat-coloured figures come out only ~3% larger.
PNG_COMPRESS_LEVEL = 1
PNG_COMPRESS_TYPE = 3  # zlib.Z_RLE

#: matplotlib's "turbo" colour map as 256 RGB bytes (Google's Turbo, Apache-2.0); test_raster checks it against
#: matplotlib so the maps look exactly as before.
_TURBO_HEX = (
    "30123b32154333184a341b51351e5836215f37246638276d392a733a2d793b2f803c32863d358b3e38913f3b973f3e9c4040a24143a74146"
    "ac4249b1424bb5434eba4451bf4454c34456c74559cb455ccf455ed34661d64664da4666dd4669e0466be3476ee64771e94773eb4776ee47"
    "78f0477bf2467df44680f64682f84685fa4687fb458afc458cfd448ffe4391fe4294ff4196ff4099ff3e9bfe3d9efe3ba0fd3aa3fc38a5fb"
    "37a8fa35abf833adf731aff52fb2f42eb4f22cb7f02ab9ee28bceb27bee925c0e723c3e422c5e220c7df1fc9dd1ecbda1ccdd81bd0d51ad2"
    "d21ad4d019d5cd18d7ca18d9c818dbc518ddc218dec018e0bd19e2bb19e3b91ae4b61ce6b41de7b21fe9af20eaac22ebaa25eca727eea42a"
    "efa12cf09e2ff19b32f29835f39438f4913cf58e3ff68a43f78746f8844af8804ef97d52fa7a55fa7659fb735dfc6f61fc6c65fd6969fd66"
    "6dfe6271fe5f75fe5c79fe597dff5680ff5384ff5188ff4e8bff4b8fff4992ff4796fe4499fe429cfe409ffd3fa1fd3da4fc3ca7fc3aa9fb"
    "39acfb38affa37b1f936b4f836b7f735b9f635bcf534bef434c1f334c3f134c6f034c8ef34cbed34cdec34d0ea34d2e935d4e735d7e535d9"
    "e436dbe236dde037dfdf37e1dd37e3db38e5d938e7d739e9d539ebd339ecd13aeecf3aefcd3af1cb3af2c93af4c73af5c53af6c33af7c13a"
    "f8be39f9bc39faba39fbb838fbb637fcb336fcb136fdae35fdac34fea933fea732fea431fea130fe9e2ffe9b2dfe992cfe962bfe932afe90"
    "29fd8d27fd8a26fc8725fc8423fb8122fb7e21fa7b1ff9781ef9751df8721cf76f1af66c19f56918f46617f36315f26014f15d13f05b12ef"
    "5811ed5510ec530feb500eea4e0de84b0ce7490ce5470be4450ae2430ae14109df3f08dd3d08dc3b07da3907d83706d63506d43305d23105"
    "d02f05ce2d04cc2b04ca2a04c82803c52603c32503c12302be2102bc2002b91e02b71d02b41b01b21a01af1801ac1701a91601a71401a413"
    "01a112019e10019b0f01980e01950d01920b018e0a018b09028808028507028106027e05027a0403"
)
TURBO_LUT = np.frombuffer(bytes.fromhex(_TURBO_HEX), np.uint8).reshape(256, 3)
GRAY_LUT = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)

_NAMED = {"white": (255, 255, 255), "black": (0, 0, 0), "yellow": (255, 255, 0), "cyan": (0, 255, 255),
          "red": (255, 0, 0), "none": None}


def rgb(color) -> tuple[int, int, int] | None:
    """A matplotlib-style colour ('#d62728', '0.35' grey, a name above, or floats in 0..1) as 8-bit RGB."""
    if color is None:
        return None
    if isinstance(color, str):
        if color in _NAMED:
            return _NAMED[color]
        if color.startswith("#"):
            return tuple(int(color[i:i + 2], 16) for i in (1, 3, 5))
        g = int(round(float(color) * 255))
        return (g, g, g)
    vals = [float(c) for c in color][:3]
    if all(v <= 1.0 for v in vals):
        return tuple(int(round(v * 255)) for v in vals)
    return tuple(int(v) for v in vals)


# ----------------------------------------------------------------------------------------------------------------
# Colour mapping (matplotlib's rule: N bins over [vmin, vmax], NaN -> bad colour, below vmin -> under colour)
# ----------------------------------------------------------------------------------------------------------------


def colorize(values: np.ndarray, lut: np.ndarray, vmin: float, vmax: float, bad=(0, 0, 0),
             under=None) -> np.ndarray:
    """Map a 2D float array through a (256, 3) uint8 LUT; returns (rows, cols, 3) uint8."""
    v = np.asarray(values, np.float32)
    finite = np.isfinite(v)
    with np.errstate(invalid="ignore"):
        x = (v - vmin) * (len(lut) / (vmax - vmin)) if vmax > vmin else np.zeros_like(v)
        idx = np.clip(np.where(finite, x, 0), 0, len(lut) - 1).astype(np.intp)
    out = lut.take(idx, axis=0)
    out[~finite] = bad
    if under is not None:
        with np.errstate(invalid="ignore"):
            out[finite & (v < vmin)] = under
    return out


def to_uint8(rgb_float: np.ndarray) -> np.ndarray:
    """Float RGB in 0..1 to uint8."""
    return (np.clip(rgb_float, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def outline(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """Pixels of ``mask`` on its border (a pixel of the mask with a 4-neighbour outside), ``width`` pixels thick."""
    m = np.asarray(mask, bool)
    inner = m.copy()
    for _ in range(max(1, width)):
        shrunk = inner.copy()
        shrunk[1:, :] &= inner[:-1, :]
        shrunk[:-1, :] &= inner[1:, :]
        shrunk[:, 1:] &= inner[:, :-1]
        shrunk[:, :-1] &= inner[:, 1:]
        shrunk[0, :] = shrunk[-1, :] = False
        shrunk[:, 0] = shrunk[:, -1] = False
        inner = shrunk
    return m & ~inner


def resize_nearest(img: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a (rows, cols[, 3]) array to ``size_wh`` = (width, height) pixels."""
    h, w = img.shape[:2]
    W, H = max(1, int(size_wh[0])), max(1, int(size_wh[1]))
    rows = np.minimum(((np.arange(H) + 0.5) * h / H).astype(np.intp), h - 1)
    cols = np.minimum(((np.arange(W) + 0.5) * w / W).astype(np.intp), w - 1)
    return np.asarray(img).take(rows, axis=0).take(cols, axis=1)  # two 1-D takes: far faster than 2-D indexing


def nice_ticks(lo: float, hi: float, max_ticks: int = 8) -> list[float]:
    """Round tick values covering [lo, hi] (steps 1, 2, 2.5, 5 x 10^k), like matplotlib's default locator."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / max(1, max_ticks - 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw - 1e-12)
    first = math.ceil(lo / step - 1e-9) * step
    n = int(math.floor((hi - first) / step + 1e-9)) + 1
    return [round(first + i * step, 10) for i in range(n)]


def tick_label(v: float, ticks: Sequence[float]) -> str:
    """Shortest label that tells the ticks apart ('2.5', '10', ...)."""
    decimals = max((len(f"{t:g}".split(".")[1]) if "." in f"{t:g}" else 0) for t in ticks) if ticks else 0
    return f"{v:.{min(decimals, 3)}f}"


# ----------------------------------------------------------------------------------------------------------------
# Fonts
# ----------------------------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _font_dir() -> Path | None:
    spec = importlib.util.find_spec("matplotlib")  # locates the package without importing it
    for base in (spec.submodule_search_locations or []) if spec else []:
        d = Path(base) / "mpl-data" / "fonts" / "ttf"
        if (d / "DejaVuSans.ttf").is_file():
            return d
    return None


_thread_fonts = threading.local()


def font(size_px: int, bold: bool = False, mono: bool = False, italic: bool = False) -> ImageFont.FreeTypeFont:
    """DejaVu Sans (matplotlib's default font) at ``size_px`` pixels; Pillow's default font if not found.

    Cached per thread (a FreeType face is not meant to be used by two threads at once; loading one takes ~0.1 ms).
    """
    cache = _thread_fonts.__dict__.setdefault("fonts", {})
    key = (size_px, bold, mono, italic)
    if key not in cache:
        cache[key] = _load_font(*key)
    return cache[key]


def _load_font(size_px: int, bold: bool, mono: bool, italic: bool) -> ImageFont.FreeTypeFont:
    name = "DejaVuSansMono" if mono else "DejaVuSans"
    style = "-Bold" if bold else ""
    style += ("Oblique" if bold else "-Oblique") if italic else ""
    d = _font_dir()
    for candidate in ((d / f"{name}{style}.ttf") if d else None, (d / f"{name}.ttf") if d else None):
        if candidate is not None and candidate.is_file():
            return ImageFont.truetype(str(candidate), max(1, size_px))
    return ImageFont.load_default(max(1, size_px))


# ----------------------------------------------------------------------------------------------------------------
# Canvas
# ----------------------------------------------------------------------------------------------------------------

class Drawing:
    """Page geometry and the composite elements (colour bar, legend swatch, word wrap) shared by the Pillow
    :class:`Canvas` and the vector :class:`ctperf.viz.pdf_canvas.PdfCanvas`.

    Coordinates are device units (pixels; points for the PDF) from the top left; ``fx``/``fy`` convert
    matplotlib-style figure fractions (origin bottom left).  Subclasses provide ``text``, ``text_width``,
    ``rect``, ``line``, ``paste``, ``marker`` and ``polygon``.
    """

    dpi: float
    width: float
    height: float
    #: Image pixels per device unit when a picture is composed for a box (outlines are drawn at that scale).
    image_scale: float = 1.0

    def pt(self, points: float) -> float:
        return points * self.dpi / 72.0

    def fx(self, frac: float) -> float:
        return frac * self.width

    def fy(self, frac: float) -> float:
        return (1.0 - frac) * self.height

    def inch(self, inches: float) -> float:
        return inches * self.dpi

    def wrap(self, s: str, size_pt: float, max_width: float, bold: bool = False) -> str:
        """Greedy word wrap of ``s`` to lines at most ``max_width`` device units wide."""
        lines: list[str] = []
        for para in s.split("\n"):
            cur = ""
            for word in para.split(" "):
                cand = f"{cur} {word}" if cur else word
                if cur and self.text_width(cand, size_pt, bold) > max_width:
                    lines.append(cur)
                    cur = word
                else:
                    cur = cand
            lines.append(cur)
        return "\n".join(lines)

    def colorbar(self, x0: float, y0: float, width: float, height: float, lut: np.ndarray, vmin: float,
                 vmax: float, label: str, size_pt: float, label_pt: float, extend_max: bool = False) -> None:
        """Vertical colour bar (low at the bottom) with tick labels and the unit on the right."""
        grad = lut[np.linspace(len(lut) - 1, 0, 256).astype(np.intp)][:, None, :]
        x0, y0, w, h = self.paste(np.repeat(grad, 2, axis=1), x0, y0, width, height)
        self.rect(x0, y0, x0 + w, y0 + h, edge="black")
        if extend_max:
            self.polygon([(x0, y0), (x0 + w, y0), (x0 + w / 2.0, y0 - self.pt(5))], tuple(lut[-1]), "black")
        ticks = nice_ticks(vmin, vmax, max(3, min(7, int(h / self.pt(size_pt * 2.2)))))
        right = 0.0
        for t in ticks:
            yy = y0 + h - (t - vmin) / (vmax - vmin) * h
            self.line([(x0 + w, yy), (x0 + w + self.pt(3), yy)], "black", width=self.pt(0.7))
            box = self.text(x0 + w + self.pt(4.5), yy, tick_label(t, ticks), size_pt, ha="left", va="center")
            right = max(right, box[2])
        self.text(right + self.pt(4), y0 + h / 2.0, label, label_pt, ha="left", va="center", rotation=90)

    def legend_patch(self, x: float, y: float, color, edge=None, size_pt: float = 9.0) -> float:
        """A legend colour swatch centred vertically on y; returns the x where its label starts.

        ``edge`` is drawn as a ring inside the swatch (not on its border), so an outline colour that matches the
        page (white outline on the images' black background) stays visible as drawn on the images."""
        w, h = self.pt(size_pt * 1.6), self.pt(size_pt * 0.7)
        self.rect(x, y - h / 2.0, x + w, y + h / 2.0, fill=color)
        if edge is not None:
            lw, inset = self.pt(1.2), self.pt(size_pt * 0.16)
            self.rect(x + inset, y - h / 2.0 + inset, x + w - inset, y + h / 2.0 - inset, edge=edge, width=lw)
        return x + w + self.pt(size_pt * 0.8)


class Canvas(Drawing):
    """A white RGB image of ``width_in`` x ``height_in`` inches at ``dpi`` (Pillow), addressed in pixels."""

    def __init__(self, width_in: float, height_in: float, dpi: float, background="white"):
        self.dpi = float(dpi)
        self.width = int(round(width_in * dpi))
        self.height = int(round(height_in * dpi))
        self.image = Image.new("RGB", (self.width, self.height), rgb(background))
        self.draw = ImageDraw.Draw(self.image)

    # text
    def font(self, size_pt: float, bold: bool = False, mono: bool = False, italic: bool = False):
        return font(int(round(self.pt(size_pt))), bold, mono, italic)

    def text_width(self, s: str, size_pt: float, bold: bool = False, mono: bool = False) -> float:
        return max((self.font(size_pt, bold, mono).getlength(line) for line in s.split("\n")), default=0.0)

    def text(self, x: float, y: float, s: str, size_pt: float, color="black", bold: bool = False,
             ha: str = "left", va: str = "baseline", box=None, box_pad_pt: float = 1.5, mono: bool = False,
             italic: bool = False, linespacing: float = 1.2, rotation: int = 0) -> tuple[float, float, float, float]:
        """Draw (possibly multi-line) text anchored at pixel (x, y); ``box`` fills its bounding box first.

        ``va`` refers to the whole block (top of the first line, bottom of the last line, or its centre);
        ``rotation`` 90 draws the text upwards (a y-axis label).  Returns the drawn box (x0, y0, x1, y1).
        """
        f = self.font(size_pt, bold, mono, italic)
        if rotation:
            return self._rotated_text(x, y, s, f, color, ha, va)
        lines = s.split("\n")
        ascent, descent = f.getmetrics()
        step = (ascent + descent) * linespacing
        block = step * (len(lines) - 1) + ascent + descent
        if va == "baseline":
            top = y - ascent
        elif va == "top":
            top = y
        elif va == "bottom":
            top = y - block
        else:
            top = y - block / 2.0
        widths = [f.getlength(line) for line in lines]
        wmax = max(widths, default=0.0)
        left = {"left": x, "center": x - wmax / 2.0, "right": x - wmax}[ha]
        if box is not None:
            pad = self.pt(box_pad_pt)
            self.draw.rectangle([left - pad, top - pad, left + wmax + pad, top + block + pad], fill=rgb(box))
        for i, (line, w) in enumerate(zip(lines, widths)):
            lx = {"left": left, "center": left + (wmax - w) / 2.0, "right": left + wmax - w}[ha]
            self.draw.text((lx, top + i * step), line, font=f, fill=rgb(color), anchor="la")
        return left, top, left + wmax, top + block

    def _rotated_text(self, x, y, s, f, color, ha, va):
        w = int(math.ceil(f.getlength(s))) + 2
        ascent, descent = f.getmetrics()
        tile = Image.new("L", (w, ascent + descent + 2), 0)
        ImageDraw.Draw(tile).text((1, 1), s, font=f, fill=255, anchor="la")
        tile = tile.rotate(90, expand=True)
        tw, th = tile.size
        left = {"left": x, "center": x - tw / 2.0, "right": x - tw}[ha]
        top = {"top": y, "center": y - th / 2.0, "bottom": y - th, "baseline": y - th}[va]
        self.image.paste(Image.new("RGB", tile.size, rgb(color)), (int(round(left)), int(round(top))), tile)
        return left, top, left + tw, top + th

    # shapes and images
    def rect(self, x0, y0, x1, y1, fill=None, edge=None, width: float = 1, radius: float = 0) -> None:
        kw = dict(fill=rgb(fill), outline=rgb(edge), width=max(1, int(round(width))))
        if radius:
            self.draw.rounded_rectangle([x0, y0, x1, y1], radius=radius, **kw)
        else:
            self.draw.rectangle([x0, y0, x1, y1], **kw)

    def line(self, points: Iterable[tuple[float, float]], color, width: float = 1.0, dash: float | None = None) -> None:
        pts = [(float(a), float(b)) for a, b in points]
        w = max(1, int(round(width)))
        if dash is None:
            self.draw.line(pts, fill=rgb(color), width=w, joint="curve")
            return
        for (xa, ya), (xb, yb) in zip(pts[:-1], pts[1:]):
            n = max(1, int(math.hypot(xb - xa, yb - ya) // (2 * dash)))
            for k in range(n):
                t0, t1 = (2 * k) / (2 * n), (2 * k + 1) / (2 * n)
                self.draw.line([(xa + (xb - xa) * t0, ya + (yb - ya) * t0), (xa + (xb - xa) * t1, ya + (yb - ya) * t1)],
                               fill=rgb(color), width=w)

    def paste(self, img: np.ndarray, x0: float, y0: float, width: float, height: float,
              min_px: int = 0) -> tuple[int, int, int, int]:
        """Paste an RGB uint8 array scaled (nearest neighbour) into the box; returns the integer box used."""
        x0i, y0i = int(round(x0)), int(round(y0))
        w, h = max(1, int(round(width))), max(1, int(round(height)))
        self.image.paste(Image.fromarray(np.ascontiguousarray(resize_nearest(img, (w, h)))), (x0i, y0i))
        return x0i, y0i, w, h

    def marker(self, x: float, y: float, r: float, color, shape: str = "o", width: float = 1.0,
               filled: bool = False) -> None:
        """Circle ('o') or square ('s') of radius ``r`` centred on (x, y), outlined or filled."""
        box = [x - r, y - r, x + r, y + r]
        kw = {"fill": rgb(color)} if filled else {"outline": rgb(color), "width": max(1, int(round(width)))}
        (self.draw.ellipse if shape == "o" else self.draw.rectangle)(box, **kw)

    def polygon(self, points, fill, edge=None) -> None:
        self.draw.polygon([(float(a), float(b)) for a, b in points], fill=rgb(fill), outline=rgb(edge))

    def extend_bottom(self, pixels: int, background="white") -> None:
        """Add a strip of ``pixels`` rows below the drawing (e.g. for a footer that must not cover the content)."""
        grown = Image.new("RGB", (self.width, self.height + int(pixels)), rgb(background))
        grown.paste(self.image, (0, 0))
        self.image, self.height = grown, self.height + int(pixels)
        self.draw = ImageDraw.Draw(self.image)

    def save_png(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.image.save(path, format="PNG", compress_level=PNG_COMPRESS_LEVEL, compress_type=PNG_COMPRESS_TYPE,
                        dpi=(self.dpi, self.dpi))
        return path

    def array(self) -> np.ndarray:
        return np.asarray(self.image)
