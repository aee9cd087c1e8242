"""Model versions dock: every trained version with its numbers, a side-by-side comparison
of two, "Make active", and how reviewers treated each version's proposals.

The correction analytics (store.proposal_outcomes) are the loop's own measure: a better
model should see more proposals accepted unchanged and fewer edited, rejected or drawn
by hand. Below them, how the project's outlines were made says what the assists saved.
"""

from __future__ import annotations

import logging

import qtawesome as qta
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.core.provenance import ProvenanceCounts
from app.core.score_threshold import project_threshold
from app.core.store import ProjectStore
from app.core.types import ModelVersion, ProposalOutcomes
from app.errors import MaskLoopError
from app.ml.metric_keys import BBOX_AP, BBOX_AP50, SEGM_AP, SEGM_AP50, SEGM_AP75
from app.ml.versions import active_model, set_active_model

log = logging.getLogger(__name__)

VERSION_COLUMNS = ("Version", "Name", "Base", "Parent", "Images", "segm AP", "AP50", "Created")
# Metrics compared side by side: (label, metrics key).
COMPARED = (
    ("segm AP", SEGM_AP),
    ("segm AP50", SEGM_AP50),
    ("segm AP75", SEGM_AP75),
    ("box AP", BBOX_AP),
    ("box AP50", BBOX_AP50),
    ("validation images", "val_images"),
)
OUTCOME_COLUMNS = (
    "Proposed by",
    "Accepted",
    "Edited",
    "Rejected",
    "Pending",
    "Drawn by hand",
    "Accepted share",
)


def _number(value: float | None, digits: int = 3) -> str:
    return "\u2013" if value is None else f"{value:.{digits}f}"


def _item(
    text: str, *, align_right: bool = False, sort_value: float | None = None
) -> QTableWidgetItem:
    item = QTableWidgetItem(text)
    item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
    if align_right:
        item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    if sort_value is not None:
        item.setData(Qt.ItemDataRole.UserRole, sort_value)
    return item


def accepted_share(outcome: ProposalOutcomes) -> float | None:
    """Share of reviewed proposals kept unchanged (None before any review)."""
    return outcome.accepted / outcome.reviewed if outcome.reviewed else None


ROWS_SHOWN = 4
"""Rows each table shows at least; a short dock scrolls the whole panel instead of
squeezing every table down to one row."""


def _table(columns: tuple[str, ...]) -> QTableWidget:
    table = QTableWidget(0, len(columns))
    table.setHorizontalHeaderLabels(list(columns))
    table.verticalHeader().setVisible(False)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    table.horizontalHeader().setStretchLastSection(True)
    table.setMinimumHeight(
        table.horizontalHeader().sizeHint().height()
        + ROWS_SHOWN * table.verticalHeader().defaultSectionSize()
        + 2 * table.frameWidth()
        + table.horizontalScrollBar().sizeHint().height()
    )
    return table


class VersionsPanel(QWidget):
    """Versions table, compare two, make one active, correction analytics per version."""

    activated = Signal(str)  # model id "v<N>" that is now the active model

    def __init__(self, store: ProjectStore, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self._versions: list[ModelVersion] = []
        self.active_label = QLabel()
        self.table = _table(VERSION_COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setToolTip("Select one version to make it active, two to compare them")
        self.make_active = QPushButton(qta.icon("mdi.star"), "Make active")
        self.make_active.setToolTip(
            "Propose with this version from now on: images nobody has touched are proposed "
            "again; reviewed work is kept"
        )
        self.make_active.clicked.connect(self.activate_selected)
        self.refresh_button = QPushButton(qta.icon("mdi.refresh"), "")
        self.refresh_button.setToolTip("Re-read versions and review outcomes")
        self.refresh_button.clicked.connect(self.refresh)
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.compare_label = QLabel("Select two versions to compare them.")
        self.compare = _table(("Metric", "", "", "Change"))
        self.outcomes_label = QLabel("How reviewers treated each model's proposals")
        self.outcomes = _table(OUTCOME_COLUMNS)
        self.outcomes.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.provenance_label = QLabel()
        self.provenance_label.setWordWrap(True)
        self.provenance_label.setToolTip(
            "How every outline in the project was made: proposals kept as is, assists "
            "(box to mask, click, refine), drawn by hand, edited after a proposal or an "
            "assist, imported from a file"
        )

        buttons = QHBoxLayout()
        buttons.addWidget(self.active_label, 1)
        buttons.addWidget(self.make_active)
        buttons.addWidget(self.refresh_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(buttons)
        layout.addWidget(self.table, 2)
        layout.addWidget(self.message)
        layout.addWidget(self.compare_label)
        layout.addWidget(self.compare, 1)
        layout.addWidget(self.outcomes_label)
        layout.addWidget(self.outcomes, 1)
        layout.addWidget(self.provenance_label)
        self.table.itemSelectionChanged.connect(self._selection_changed)
        self.refresh()

    # -- reading the store ----------------------------------------------------------------------

    def refresh(self) -> None:
        """Re-read versions, the active model and the review outcomes; keeps the selection."""
        selected = set(self.selected_ids())
        self._versions = self.store.model_versions()
        active = active_model(self.store)
        self.active_label.setText(f"Active model: <b>{active}</b>")
        bold = QFont()
        bold.setBold(True)
        star = qta.icon("mdi.star", color="#ffb300")
        self.table.blockSignals(True)
        self.table.setRowCount(len(self._versions))
        for row, v in enumerate(reversed(self._versions)):
            is_active = active == f"v{v.id}"
            cells = [
                _item(f"v{v.id}" + (" (active)" if is_active else ""), sort_value=v.id),
                _item(v.name),
                _item(v.card_id),
                _item(f"v{v.parent_id}" if v.parent_id is not None else "\u2013"),
                _item(str(v.images_used), align_right=True),
                _item(_number(v.metrics.get(SEGM_AP)), align_right=True),
                _item(_number(v.metrics.get(SEGM_AP50)), align_right=True),
                _item(v.created[:16].replace("T", " ")),
            ]
            if is_active:
                cells[0].setIcon(star)
                for cell in cells:
                    cell.setFont(bold)
            cells[0].setData(Qt.ItemDataRole.UserRole, v.id)
            for col, cell in enumerate(cells):
                self.table.setItem(row, col, cell)
        self.select_versions(selected)
        self.table.blockSignals(False)
        self._selection_changed()
        self._fill_outcomes(self.store.proposal_outcomes(project_threshold(self.store)))
        self.provenance_label.setText(f"Outlines: {ProvenanceCounts.of(self.store).sentence()}.")

    def _add_row_to_selection(self, row: int) -> None:
        for col in range(self.table.columnCount()):
            self.table.item(row, col).setSelected(True)

    def _fill_outcomes(self, outcomes: list[ProposalOutcomes]) -> None:
        self.outcomes.setRowCount(len(outcomes))
        for row, o in enumerate(outcomes):
            share = accepted_share(o)
            name = f"v{o.model_version}" if o.model_version is not None else "zoo model"
            values = (o.accepted, o.edited, o.rejected, o.pending, o.added_by_hand)
            self.outcomes.setItem(row, 0, _item(name))
            for col, value in enumerate(values, start=1):
                self.outcomes.setItem(row, col, _item(str(value), align_right=True))
            self.outcomes.setItem(
                row,
                len(OUTCOME_COLUMNS) - 1,
                _item("\u2013" if share is None else f"{share:.0%}", align_right=True),
            )
        if not outcomes:
            self.outcomes_label.setText("No model proposals yet.")
        else:
            self.outcomes_label.setText("How reviewers treated each model's proposals")

    # -- selection ------------------------------------------------------------------------------

    def selected_ids(self) -> list[int]:
        """Selected version numbers, in table order (newest first)."""
        rows = sorted({i.row() for i in self.table.selectedItems()})
        return [int(self.table.item(r, 0).data(Qt.ItemDataRole.UserRole)) for r in rows]

    def select_versions(self, ids: list[int] | set[int]) -> None:
        self.table.clearSelection()
        for row in range(self.table.rowCount()):
            if self.table.item(row, 0).data(Qt.ItemDataRole.UserRole) in ids:
                self._add_row_to_selection(row)

    def _selection_changed(self) -> None:
        ids = self.selected_ids()
        self.make_active.setEnabled(len(ids) == 1)
        by_id = {v.id: v for v in self._versions}
        if len(ids) == 2:
            old, new = sorted(ids)
            self._fill_compare(by_id[old], by_id[new])
        else:
            self.compare.setRowCount(0)
            self.compare_label.setText("Select two versions to compare them.")

    def _fill_compare(self, a: ModelVersion, b: ModelVersion) -> None:
        self.compare_label.setText(f"v{a.id} compared with v{b.id}")
        self.compare.setHorizontalHeaderLabels(["Metric", f"v{a.id}", f"v{b.id}", "Change"])
        rows: list[tuple[str, float | None, float | None, int]] = [
            (label, a.metrics.get(key), b.metrics.get(key), 0 if key == "val_images" else 3)
            for label, key in COMPARED
            if key in a.metrics or key in b.metrics
        ]
        rows.append(("images used", float(a.images_used), float(b.images_used), 0))
        self.compare.setRowCount(len(rows))
        for r, (label, va, vb, digits) in enumerate(rows):
            change = "\u2013" if va is None or vb is None else f"{vb - va:+.{digits}f}"
            self.compare.setItem(r, 0, _item(label))
            self.compare.setItem(r, 1, _item(_number(va, digits), align_right=True))
            self.compare.setItem(r, 2, _item(_number(vb, digits), align_right=True))
            self.compare.setItem(r, 3, _item(change, align_right=True))

    # -- actions --------------------------------------------------------------------------------

    def activate_selected(self) -> None:
        ids = self.selected_ids()
        if len(ids) != 1:
            self.message.setText("Select one version to make it active.")
            return
        model_id = f"v{ids[0]}"
        try:
            set_active_model(self.store, model_id)
        except MaskLoopError as exc:
            self.message.setStyleSheet("color: #e53935;")
            self.message.setText(str(exc))
            return
        self.message.setStyleSheet("")
        self.message.setText(
            f"{model_id} is now the active model; untouched images are proposed again."
        )
        log.info("active model set to %s", model_id)
        self.refresh()
        self.activated.emit(model_id)
