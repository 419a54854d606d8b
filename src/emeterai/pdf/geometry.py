"""Page geometry: what a person sees (CropBox after /Rotate) versus PDF user space.

Pure functions, no PDF library: `inspect` (pikepdf) and `sign` (pyHanko) both feed
their raw numbers in here, so the two can never disagree about where a stamp goes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from emeterai.errors import PageOutOfRange, PdfMalformed, PositionOffPage

STAMP_SIZE_PT: float = 100.0
# Real pages are at most a few metres (PDF's own limit is 14 400 pt per side).
_COORDINATE_ABS_MAX = 1_000_000.0


@dataclass(frozen=True)
class PageBox:
    """A page as a person sees it: the CropBox after /Rotate, in points."""

    width_pt: float
    height_pt: float


@dataclass(frozen=True)
class Placement:
    """Where the stamp goes: its lower-left corner, in points from the lower-left of
    the visible page. `page` is 1-based."""

    page: int
    x_pt: float
    y_pt: float


@dataclass(frozen=True)
class PageGeometry:
    """Enough of a page to map visible coordinates to user space."""

    left: float  # CropBox (clipped to the MediaBox), user space
    bottom: float
    right: float
    top: float
    rotate: int  # 0, 90, 180 or 270, clockwise as displayed

    @property
    def visible(self) -> PageBox:
        width = self.right - self.left
        height = self.top - self.bottom
        if self.rotate in (90, 270):
            return PageBox(width_pt=height, height_pt=width)
        return PageBox(width_pt=width, height_pt=height)

    def to_user_space(self, x_pt: float, y_pt: float) -> tuple[float, float]:
        """Map a point of the visible page to PDF user space."""
        width = self.right - self.left
        height = self.top - self.bottom
        if self.rotate == 0:
            a, b = x_pt, y_pt
        elif self.rotate == 90:
            a, b = width - y_pt, x_pt
        elif self.rotate == 180:
            a, b = width - x_pt, height - y_pt
        else:
            a, b = y_pt, height - x_pt
        return self.left + a, self.bottom + b

    def stamp_rect(self, x_pt: float, y_pt: float) -> tuple[float, float, float, float]:
        """The annotation /Rect (user space) of a stamp whose visible lower-left is x, y."""
        corners = [
            self.to_user_space(x_pt + dx, y_pt + dy)
            for dx in (0.0, STAMP_SIZE_PT)
            for dy in (0.0, STAMP_SIZE_PT)
        ]
        xs = [c[0] for c in corners]
        ys = [c[1] for c in corners]
        return min(xs), min(ys), max(xs), max(ys)

    def appearance_matrix(self) -> tuple[float, float, float, float, float, float]:
        """Form matrix that turns the upright stamp so it reads upright once the viewer
        applies /Rotate. Rotating by +rotate (counter-clockwise in user space) undoes the
        clockwise display rotation; the translation keeps the box at the origin."""
        size = STAMP_SIZE_PT
        return {
            0: (1.0, 0.0, 0.0, 1.0, 0.0, 0.0),
            90: (0.0, 1.0, -1.0, 0.0, size, 0.0),
            180: (-1.0, 0.0, 0.0, -1.0, size, size),
            270: (0.0, -1.0, 1.0, 0.0, 0.0, size),
        }[self.rotate]


def _box(raw: Sequence[float] | None, name: str) -> tuple[float, float, float, float] | None:
    if raw is None:
        return None
    if len(raw) != 4:
        raise PdfMalformed(f"the page's {name} does not have four numbers")
    values = [float(v) for v in raw]
    if not all(math.isfinite(v) and abs(v) <= _COORDINATE_ABS_MAX for v in values):
        raise PdfMalformed(f"the page's {name} has impossible coordinates")
    x0, y0, x1, y1 = values
    return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)


def page_geometry(
    mediabox: Sequence[float] | None, cropbox: Sequence[float] | None, rotate: object
) -> PageGeometry:
    """Build the geometry from a page's (inherited) /MediaBox, /CropBox and /Rotate."""
    media = _box(mediabox, "MediaBox")
    if media is None:
        # Viewers fall back to US Letter; so do we, rather than refuse.
        media = (0.0, 0.0, 612.0, 792.0)
    crop = _box(cropbox, "CropBox") or media
    left, bottom = max(crop[0], media[0]), max(crop[1], media[1])
    right, top = min(crop[2], media[2]), min(crop[3], media[3])
    if right - left < 1 or top - bottom < 1:
        raise PdfMalformed("the page's visible area is empty")
    if rotate is None:
        rotate_int = 0
    elif isinstance(rotate, int | float) and math.isfinite(rotate) and rotate == int(rotate):
        rotate_int = int(rotate)
    else:
        raise PdfMalformed("the page's /Rotate is not a whole number")
    if rotate_int % 90 != 0:
        raise PdfMalformed("the page's /Rotate is not a multiple of 90")
    return PageGeometry(left, bottom, right, top, rotate_int % 360)


def check_fits(page: PageBox, placement: Placement) -> None:
    x, y = placement.x_pt, placement.y_pt
    if not (math.isfinite(x) and math.isfinite(y)):
        raise PositionOffPage("the position must be a finite number of points")
    if x < 0 or y < 0 or x + STAMP_SIZE_PT > page.width_pt or y + STAMP_SIZE_PT > page.height_pt:
        raise PositionOffPage(
            f"a {STAMP_SIZE_PT:g} pt stamp at ({x:g}, {y:g}) does not fit on a "
            f"{page.width_pt:g} x {page.height_pt:g} pt page",
            page=placement.page,
        )


def check_page_number(page_count: int, page: int) -> None:
    if page < 1 or page > page_count:
        raise PageOutOfRange(f"page {page} does not exist; the document has {page_count}")
