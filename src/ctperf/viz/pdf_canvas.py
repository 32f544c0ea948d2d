"""Vector PDF page with the drawing interface of :class:`ctperf.viz.raster.Canvas` (ReportLab).

The summary page is laid out once against :class:`ctperf.viz.raster.Drawing` and drawn either into a PDF (text,
lines and boxes stay vector graphics, images are embedded losslessly) or into a Pillow image (the DICOM screen
capture).  ReportLab imports in ~30 ms where matplotlib's PDF backend costs ~0.5 s plus ~0.3 s of text layout.

Units are points from the top left of the page (``dpi`` = 72), so the same layout code serves both backends.
Fonts: matplotlib's DejaVu Sans files (read from disk, matplotlib is not imported), embedded as subsets;
Helvetica when they cannot be found.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterable

import numpy as np

from ctperf.viz.raster import Drawing, _font_dir, resize_nearest, rgb

_FONT_FILES = {("DejaVuSans", False, False): "DejaVuSans", ("DejaVuSans", True, False): "DejaVuSans-Bold",
               ("DejaVuSans", False, True): "DejaVuSans-Oblique", ("DejaVuSans", True, True): "DejaVuSans-BoldOblique",
               ("DejaVuSansMono", False, False): "DejaVuSansMono",
               ("DejaVuSansMono", True, False): "DejaVuSansMono-Bold"}
_FALLBACK = {False: "Helvetica", True: "Helvetica-Bold"}
_lock = threading.Lock()


def _font_name(bold: bool, mono: bool, italic: bool) -> str:
    """ReportLab name of the font, registered on first use (ReportLab keeps a registry of TrueType fonts)."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    key = ("DejaVuSansMono" if mono else "DejaVuSans", bold, italic and not mono)
    name = _FONT_FILES.get(key, "DejaVuSans")
    folder = _font_dir()
    if folder is None or not (folder / f"{name}.ttf").is_file():
        return _FALLBACK[bold]
    with _lock:
        if f"ctperf-{name}" not in pdfmetrics.getRegisteredFontNames():
            pdfmetrics.registerFont(TTFont(f"ctperf-{name}", str(folder / f"{name}.ttf")))
    return f"ctperf-{name}"


class PdfCanvas(Drawing):
    """One PDF page of ``width_in`` x ``height_in`` inches, written to ``path`` by :meth:`save`."""

    def __init__(self, path: str | Path, width_in: float, height_in: float, metadata: dict[str, str] | None = None):
        from reportlab.pdfgen.canvas import Canvas as _RLCanvas

        self.dpi = 72.0
        self.image_scale = 2.0  # images are embedded at 2 pixels per point (144 dpi) so outlines stay thin
        self.width = width_in * 72.0
        self.height = height_in * 72.0
        self.path = Path(path)
        self.c = _RLCanvas(str(self.path), pagesize=(self.width, self.height), pageCompression=1)
        for key, value in (metadata or {}).items():
            getattr(self.c, f"set{key}")(value)

    def _color(self, color, fill: bool = True) -> None:
        r, g, b = rgb(color)
        (self.c.setFillColorRGB if fill else self.c.setStrokeColorRGB)(r / 255, g / 255, b / 255)

    def text_width(self, s: str, size_pt: float, bold: bool = False, mono: bool = False) -> float:
        from reportlab.pdfbase.pdfmetrics import stringWidth

        name = _font_name(bold, mono, False)
        return max((stringWidth(line, name, size_pt) for line in s.split("\n")), default=0.0)

    def text(self, x: float, y: float, s: str, size_pt: float, color="black", bold: bool = False,
             ha: str = "left", va: str = "baseline", box=None, box_pad_pt: float = 1.5, mono: bool = False,
             italic: bool = False, linespacing: float = 1.2, rotation: int = 0) -> tuple[float, float, float, float]:
        """Same contract as :meth:`ctperf.viz.raster.Canvas.text` (points instead of pixels)."""
        from reportlab.pdfbase.pdfmetrics import getAscentDescent, stringWidth

        name = _font_name(bold, mono, italic)
        ascent, descent = getAscentDescent(name, size_pt)
        descent = abs(descent)
        lines = s.split("\n")
        widths = [stringWidth(line, name, size_pt) for line in lines]
        wmax = max(widths, default=0.0)
        if rotation:
            tw, th = ascent + descent, wmax
            left = {"left": x, "center": x - tw / 2.0, "right": x - tw}[ha]
            top = {"top": y, "center": y - th / 2.0, "bottom": y - th, "baseline": y - th}[va]
            self.c.saveState()
            self._color(color)
            self.c.setFont(name, size_pt)
            self.c.translate(left + ascent, self.height - (top + th))
            self.c.rotate(90)
            self.c.drawString(0, 0, s)
            self.c.restoreState()
            return left, top, left + tw, top + th
        step = (ascent + descent) * linespacing
        block = step * (len(lines) - 1) + ascent + descent
        top = {"baseline": y - ascent, "top": y, "bottom": y - block}.get(va, y - block / 2.0)
        left = {"left": x, "center": x - wmax / 2.0, "right": x - wmax}[ha]
        if box is not None:
            pad = self.pt(box_pad_pt)
            self.rect(left - pad, top - pad, left + wmax + pad, top + block + pad, fill=box)
        self._color(color)
        self.c.setFont(name, size_pt)
        for i, (line, w) in enumerate(zip(lines, widths)):
            lx = {"left": left, "center": left + (wmax - w) / 2.0, "right": left + wmax - w}[ha]
            self.c.drawString(lx, self.height - (top + i * step + ascent), line)
        return left, top, left + wmax, top + block

    def rect(self, x0, y0, x1, y1, fill=None, edge=None, width: float = 1, radius: float = 0) -> None:
        if fill is None and edge is None:
            return
        if fill is not None:
            self._color(fill)
        if edge is not None:
            self._color(edge, fill=False)
            self.c.setLineWidth(width)
        args = (x0, self.height - y1, x1 - x0, y1 - y0)
        kw = dict(fill=int(fill is not None), stroke=int(edge is not None))
        if radius:
            self.c.roundRect(*args, radius, **kw)
        else:
            self.c.rect(*args, **kw)

    def line(self, points: Iterable[tuple[float, float]], color, width: float = 1.0, dash: float | None = None) -> None:
        pts = [(float(a), self.height - float(b)) for a, b in points]
        if len(pts) < 2:
            return
        self.c.saveState()
        self._color(color, fill=False)
        self.c.setLineWidth(width)
        self.c.setLineJoin(1)
        if dash:
            self.c.setDash(dash, dash)
        path = self.c.beginPath()
        path.moveTo(*pts[0])
        for p in pts[1:]:
            path.lineTo(*p)
        self.c.drawPath(path, stroke=1, fill=0)
        self.c.restoreState()

    def paste(self, img: np.ndarray, x0: float, y0: float, width: float, height: float,
              min_px: int = 0) -> tuple[float, float, float, float]:
        """Embed an RGB uint8 array (lossless) into the box; ``min_px`` upsamples small images (nearest) so the
        viewer does not blur them."""
        from PIL import Image
        from reportlab.lib.utils import ImageReader

        arr = np.asarray(img)
        if min_px and max(arr.shape[:2]) < min_px:
            k = int(np.ceil(min_px / max(arr.shape[:2])))
            arr = resize_nearest(arr, (arr.shape[1] * k, arr.shape[0] * k))
        self.c.drawImage(ImageReader(Image.fromarray(np.ascontiguousarray(arr))), x0, self.height - y0 - height,
                         width, height)
        return x0, y0, width, height

    def marker(self, x: float, y: float, r: float, color, shape: str = "o", width: float = 1.0,
               filled: bool = False) -> None:
        self._color(color)
        self._color(color, fill=False)
        self.c.setLineWidth(width)
        if shape == "o":
            self.c.circle(x, self.height - y, r, stroke=int(not filled), fill=int(filled))
        else:
            self.c.rect(x - r, self.height - y - r, 2 * r, 2 * r, stroke=int(not filled), fill=int(filled))

    def polygon(self, points, fill, edge=None) -> None:
        pts = [(float(a), self.height - float(b)) for a, b in points]
        self._color(fill)
        if edge is not None:
            self._color(edge, fill=False)
        path = self.c.beginPath()
        path.moveTo(*pts[0])
        for p in pts[1:]:
            path.lineTo(*p)
        path.close()
        self.c.drawPath(path, stroke=int(edge is not None), fill=1)

    def save(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.c.showPage()
        self.c.save()
        return self.path
