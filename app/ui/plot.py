"""A small hand-painted line plot for live training curves (no plotting dependency).

It draws a few named series against a shared x axis with their ranges labelled; that is
all a loss curve and a per-epoch AP curve need, and it repaints cheaply on every point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPaintEvent, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

PALETTE = ("#42a5f5", "#ef5350", "#66bb6a", "#ffb300")
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 46, 8, 20, 18


@dataclass
class Series:
    """One named curve: x and y values in the order they arrived."""

    name: str
    color: str
    xs: list[float] = field(default_factory=list)
    ys: list[float] = field(default_factory=list)


def _fmt(value: float) -> str:
    return f"{value:.3g}"


class LinePlot(QWidget):
    """Named series of (x, y) points, drawn as lines with markers, axes auto-scaled.

    ``y_range`` fixes the y axis (e.g. 0..1 for AP); otherwise it follows the data.
    """

    def __init__(
        self,
        title: str,
        x_label: str,
        *,
        y_range: tuple[float, float] | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.title = title
        self.x_label = x_label
        self.y_range = y_range
        self._series: dict[str, Series] = {}
        self.setMinimumSize(220, 140)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def add_point(self, series: str, x: float, y: float) -> None:
        """Append a point to ``series`` (created on first use); non-finite values are skipped."""
        if not (math.isfinite(x) and math.isfinite(y)):
            return
        s = self._series.get(series)
        if s is None:
            s = Series(series, PALETTE[len(self._series) % len(PALETTE)])
            self._series[series] = s
        s.xs.append(float(x))
        s.ys.append(float(y))
        self.update()

    def clear(self) -> None:
        self._series.clear()
        self.update()

    def series(self, name: str) -> Series | None:
        return self._series.get(name)

    def series_names(self) -> list[str]:
        return list(self._series)

    def _ranges(self) -> tuple[float, float, float, float]:
        xs = [x for s in self._series.values() for x in s.xs]
        ys = [y for s in self._series.values() for y in s.ys]
        x0, x1 = (min(xs), max(xs)) if xs else (0.0, 1.0)
        if self.y_range is not None:
            y0, y1 = self.y_range
        else:
            y0, y1 = (min(ys), max(ys)) if ys else (0.0, 1.0)
            pad = 0.05 * (y1 - y0) if y1 > y0 else max(abs(y1) * 0.1, 0.5)
            y0, y1 = y0 - pad, y1 + pad
        if x1 <= x0:
            x0, x1 = x0 - 0.5, x0 + 0.5
        return x0, x1, y0, y1

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 (Qt API)
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        text = self.palette().color(self.foregroundRole())
        grid = QColor(text)
        grid.setAlpha(60)
        area = QRectF(
            MARGIN_LEFT,
            MARGIN_TOP,
            max(1, self.width() - MARGIN_LEFT - MARGIN_RIGHT),
            max(1, self.height() - MARGIN_TOP - MARGIN_BOTTOM),
        )
        x0, x1, y0, y1 = self._ranges()

        def to_px(x: float, y: float) -> QPointF:
            fx = (x - x0) / (x1 - x0)
            fy = (y - y0) / (y1 - y0) if y1 > y0 else 0.5
            return QPointF(area.left() + fx * area.width(), area.bottom() - fy * area.height())

        p.setPen(QPen(grid, 1))
        p.drawRect(area)
        p.setPen(text)
        p.drawText(QRectF(0, 0, self.width(), MARGIN_TOP), Qt.AlignmentFlag.AlignCenter, self.title)
        left = QRectF(0, area.top() - 6, MARGIN_LEFT - 4, 12)
        p.drawText(left, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, _fmt(y1))
        p.drawText(
            left.translated(0, area.height()),
            Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
            _fmt(y0),
        )
        bottom = QRectF(area.left(), area.bottom() + 2, area.width(), MARGIN_BOTTOM - 2)
        p.drawText(bottom, Qt.AlignmentFlag.AlignLeft, _fmt(x0))
        p.drawText(bottom, Qt.AlignmentFlag.AlignCenter, self.x_label)
        p.drawText(bottom, Qt.AlignmentFlag.AlignRight, _fmt(x1))
        if not self._series:
            p.drawText(area, Qt.AlignmentFlag.AlignCenter, "no data yet")
            p.end()
            return
        legend_y = area.top() + 4
        for s in self._series.values():
            color = QColor(s.color)
            p.setPen(QPen(color, 1.6))
            path = QPainterPath()
            for k, (x, y) in enumerate(zip(s.xs, s.ys, strict=True)):
                pt = to_px(x, y)
                if k == 0:
                    path.moveTo(pt)
                else:
                    path.lineTo(pt)
            p.drawPath(path)
            if len(s.xs) <= 50:
                p.setBrush(color)
                for x, y in zip(s.xs, s.ys, strict=True):
                    p.drawEllipse(to_px(x, y), 2.5, 2.5)
                p.setBrush(Qt.BrushStyle.NoBrush)
            label = f"{s.name} {_fmt(s.ys[-1])}"
            p.drawText(
                QRectF(area.left() + 4, legend_y, area.width() - 8, 14),
                Qt.AlignmentFlag.AlignRight,
                label,
            )
            legend_y += 14
        p.end()
