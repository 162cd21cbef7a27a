"""A tiny numpy rasteriser for the environments' ``rgb_array`` frames.

``envs`` may import only gymnasium and numpy, so frames are drawn here without matplotlib or
pygame: every primitive is a boolean mask over pixel centres, computed on the primitive's bounding
box only, so a frame with a 30-segment path costs well under a millisecond per primitive.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

Color = tuple[int, int, int]


class Canvas:
    """An RGB image of the axis-aligned rectangle ``xlim × ylim`` of the plane.

    World coordinates have y pointing up; image row 0 is the top edge (``ylim[1]``).

    Args:
        xlim: ``(x_min, x_max)`` of the drawn region, in world units.
        ylim: ``(y_min, y_max)`` of the drawn region, in world units.
        pixels_per_unit: image resolution: pixels per world unit along both axes.
        background: RGB fill colour of the empty canvas.
    """

    def __init__(
        self,
        xlim: tuple[float, float],
        ylim: tuple[float, float],
        pixels_per_unit: float,
        background: Color = (255, 255, 255),
    ) -> None:
        self.xlim = (float(xlim[0]), float(xlim[1]))
        self.ylim = (float(ylim[0]), float(ylim[1]))
        self.scale = float(pixels_per_unit)
        width = max(1, round((self.xlim[1] - self.xlim[0]) * self.scale))
        height = max(1, round((self.ylim[1] - self.ylim[0]) * self.scale))
        self.image = np.empty((height, width, 3), dtype=np.uint8)
        self.image[:] = background
        # World coordinates of pixel centres, so that masks are tests on real distances.
        self._xs = self.xlim[0] + (np.arange(width) + 0.5) / self.scale
        self._ys = self.ylim[1] - (np.arange(height) + 0.5) / self.scale

    def _window(
        self, x_min: float, x_max: float, y_min: float, y_max: float
    ) -> tuple[slice, slice, np.ndarray, np.ndarray]:
        """Rows/columns of the image that a world-space box covers, and their pixel-centre grids."""
        height, width = self.image.shape[:2]
        c0 = int(np.clip(np.floor((x_min - self.xlim[0]) * self.scale), 0, width))
        c1 = int(np.clip(np.ceil((x_max - self.xlim[0]) * self.scale) + 1, 0, width))
        r0 = int(np.clip(np.floor((self.ylim[1] - y_max) * self.scale), 0, height))
        r1 = int(np.clip(np.ceil((self.ylim[1] - y_min) * self.scale) + 1, 0, height))
        rows, cols = slice(r0, r1), slice(c0, c1)
        return rows, cols, self._xs[cols][None, :], self._ys[rows][:, None]

    def _paint(self, rows: slice, cols: slice, mask: np.ndarray, color: Color) -> None:
        # Basic slicing returns a view, so the boolean assignment writes into the image.
        view = self.image[rows, cols]
        view[mask] = color

    def disk(self, center: Sequence[float], radius: float, color: Color) -> None:
        """Fill the disk of ``radius`` (world units) around ``center``.

        A disk smaller than a pixel still colours the pixel holding its centre, so small markers
        never vanish at low resolution.
        """
        cx, cy = float(center[0]), float(center[1])
        r = max(float(radius), 0.5 / self.scale)
        rows, cols, px, py = self._window(cx - r, cx + r, cy - r, cy + r)
        mask = (px - cx) ** 2 + (py - cy) ** 2 <= r * r
        self._paint(rows, cols, mask, color)

    def ring(self, center: Sequence[float], radius: float, width: float, color: Color) -> None:
        """Draw a circle outline of ``radius`` and stroke ``width`` (world units) around ``center``."""
        cx, cy = float(center[0]), float(center[1])
        half = max(float(width), 1.0 / self.scale) / 2
        r = float(radius) + half
        rows, cols, px, py = self._window(cx - r, cx + r, cy - r, cy + r)
        mask = np.abs(np.hypot(px - cx, py - cy) - radius) <= half
        self._paint(rows, cols, mask, color)

    def segment(self, start: Sequence[float], end: Sequence[float], width: float, color: Color) -> None:
        """Draw a straight stroke of ``width`` (world units) from ``start`` to ``end``, round-capped."""
        p0 = np.asarray(start, dtype=np.float64)
        p1 = np.asarray(end, dtype=np.float64)
        half = max(float(width), 1.0 / self.scale) / 2
        lo, hi = np.minimum(p0, p1) - half, np.maximum(p0, p1) + half
        rows, cols, px, py = self._window(lo[0], hi[0], lo[1], hi[1])
        d = p1 - p0
        length2 = float(d @ d)
        # Project each pixel centre on the segment; a zero-length segment is a dot.
        u = np.zeros(np.broadcast_shapes(px.shape, py.shape))
        if length2 > 0:
            u = np.clip(((px - p0[0]) * d[0] + (py - p0[1]) * d[1]) / length2, 0.0, 1.0)
        mask = (px - p0[0] - u * d[0]) ** 2 + (py - p0[1] - u * d[1]) ** 2 <= half * half
        self._paint(rows, cols, mask, color)

    def polyline(self, points: np.ndarray, width: float, color: Color) -> None:
        """Draw consecutive segments through ``points`` (shape ``(n, 2)``); one point draws a dot."""
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        if len(pts) == 1:
            self.segment(pts[0], pts[0], width, color)
        for p0, p1 in itertools.pairwise(pts):
            self.segment(p0, p1, width, color)
