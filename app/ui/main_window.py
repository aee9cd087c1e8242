"""The main window: docks, toolbar, menus and status bar wired to the :class:`Editor`.

The keyboard review and its rules are in :mod:`.help_dialog` (Help > Keyboard shortcuts, F1);
the File menu lives in :mod:`.file_menu`.

The proposal worker attaches to :attr:`MainWindow.current_image_changed`, calls
:meth:`MainWindow.refresh_current_instances` when it stored proposals for the shown image,
and shows its state in :attr:`MainWindow.model_status`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import qtawesome as qta
from PySide6.QtCore import Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QAction, QDesktopServices, QKeySequence
from PySide6.QtWidgets import (
    QDockWidget,
    QLabel,
    QMainWindow,
    QMessageBox,
    QPlainTextEdit,
    QScrollArea,
    QSlider,
    QUndoView,
    QVBoxLayout,
    QWidget,
)

from app.core.score_threshold import (
    SCORE_FLOOR,
    migrate_score_floor,
    project_threshold,
    set_project_threshold,
)
from app.core.store import ProjectStore, StoreError
from app.core.types import ImageStatus
from app.logs import log_file_path
from app.ml.active import next_images

from .assist_session import AssistSession
from .canvas.view import CanvasView
from .display import pixel_text
from .editor import Editor
from .file_menu import FileMenu
from .help_dialog import HelpDialog
from .model_wiring import ModelWiring
from .panels.categories import CategoriesPanel
from .panels.display_panel import DisplayPanel
from .panels.image_list import ImageListPanel
from .panels.instance_filter import InstanceFilterBar
from .panels.instance_list import InstanceListPanel
from .panels.model_panel import ModelPanel
from .panels.versions_panel import VersionsPanel
from .preferences import settings
from .project_view_state import ProjectViewState, load_view_state, save_view_state
from .screen_fit import clamp_to_screen, first_run_geometry
from .simplify_setting import SimplifySetting, VertexCountLabel
from .train_dialog import TrainDialog
from .uncertainty_rescore import UncertaintyRescorer
from .workers import (
    ProposalController,
)

log = logging.getLogger(__name__)

FIRST_RUN_DOCK_SHARE = 0.2  # of the window's width, for each side dock column

THRESHOLD_TIP = (
    "Score threshold (saved with the project): proposals scoring below it are hidden, "
    "skipped by Tab, not accepted by Shift+A, rejected when the image is marked done "
    "(Ctrl+Enter) and left out of exports. Every detection scoring "
    f"{SCORE_FLOOR:.2f} or more is stored, so moving it shows or hides them at once, "
    "without running the model."
)


class MainWindow(ModelWiring, QMainWindow):
    current_image_changed = Signal(int)
    project_requested = Signal(object, str)  # (Path, notice to show in its window)

    def __init__(self, store: ProjectStore) -> None:
        super().__init__()
        self.store = store
        self.setWindowTitle(f"MaskLoop - {store.root.name}")
        self.canvas = CanvasView()
        self.setCentralWidget(self.canvas)
        self.editor = Editor(store, self.canvas)
        self.simplify = SimplifySetting(store, self)
        self.images = ImageListPanel(store)
        self.instances = InstanceListPanel()
        self.categories = CategoriesPanel(store)
        self.display = DisplayPanel()
        self.history = QUndoView(self.editor.undo_group)
        self.history.setEmptyLabel("<opened>")
        self._save_box: QMessageBox | None = None
        self._dock("Images", self.images, Qt.DockWidgetArea.LeftDockWidgetArea)
        self.instance_filter = InstanceFilterBar()
        self.instance_filter.set_categories(store.categories())
        instances_box = QWidget()
        box_layout = QVBoxLayout(instances_box)
        box_layout.setContentsMargins(2, 2, 2, 2)
        box_layout.addWidget(self.instance_filter)
        box_layout.addWidget(self.instances)
        self._dock("Instances", instances_box, Qt.DockWidgetArea.RightDockWidgetArea)
        self._dock("Categories", self.categories, Qt.DockWidgetArea.RightDockWidgetArea)
        self._dock("Display", self.display, Qt.DockWidgetArea.LeftDockWidgetArea)
        history = self._dock("History", self.history, Qt.DockWidgetArea.RightDockWidgetArea)
        self.versions = VersionsPanel(store)
        scroll = QScrollArea()  # tall content: the dock may be smaller than the panel
        scroll.setWidget(self.versions)
        scroll.setWidgetResizable(True)
        versions = self._dock("Model versions", scroll, Qt.DockWidgetArea.RightDockWidgetArea)
        self.versions_dock = versions
        self.tabifyDockWidget(history, versions)
        history.raise_()
        self._train_dialog: TrainDialog | None = None
        self._help: HelpDialog | None = None
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(2000)
        self.log_dock = self._dock("Log", self.log_view, Qt.DockWidgetArea.BottomDockWidgetArea)
        self.log_dock.hide()
        self.proposals: ProposalController | None = None
        self.assists: AssistSession | None = None  # set with the proposals (attach_proposals)
        self._fallback_model: str | None = None  # the model proposals used before this one
        self._broken_models: set[str] = set()
        self.model_panel: ModelPanel | None = None
        self.rescorer = UncertaintyRescorer(store.root, self)  # uncertainty follows the threshold
        self.rescorer.rescored.connect(lambda n: self.images.refresh() if n else None)
        self._refresh_timer = QTimer(self)
        self._refresh_timer.setInterval(300)
        self._refresh_timer.timeout.connect(self._refresh_when_idle)
        self._build_status_bar()
        self._build_actions()
        self._connect()
        state = self._restore()
        self._shown_once = False
        ids = self.images.ids()
        if ids:
            self.open_image(state.image_id if state.image_id in ids else ids[0])

    # -- construction -------------------------------------------------------------------------

    def _dock(self, title: str, widget: QWidget, area: Qt.DockWidgetArea) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(f"dock_{title.lower()}")
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        return dock

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.zoom_label = QLabel()
        self.cursor_label = QLabel()
        self.status_label = QLabel()
        self.model_status = QLabel()  # filled by the proposal worker
        self.vertex_label = VertexCountLabel()
        for w in (
            self.cursor_label,
            self.zoom_label,
            self.vertex_label,
            self.status_label,
            self.model_status,
        ):
            bar.addPermanentWidget(w)
        # A message (an assist's answer, a save error) would be cut to a few words beside
        # the long image summary: the summary steps aside while one is shown.
        bar.messageChanged.connect(lambda text: self.status_label.setHidden(bool(text)))

    def _action(
        self,
        text: str,
        slot: Callable,
        shortcuts: str | list | None = None,
        icon: str | None = None,
        menu=None,
        toolbar=None,
        checkable: bool = False,
    ) -> QAction:
        action = QAction(text, self)
        if shortcuts:
            keys = (
                [shortcuts] if isinstance(shortcuts, str | QKeySequence.StandardKey) else shortcuts
            )
            action.setShortcuts([QKeySequence(k) for k in keys])
            shown = " / ".join(QKeySequence(k).toString() for k in keys)
            action.setToolTip(f"{text} ({shown})")
        if icon:
            action.setIcon(qta.icon(icon))
        action.setCheckable(checkable)
        action.triggered.connect(slot)
        self.addAction(action)
        if menu is not None:
            menu.addAction(action)
        if toolbar is not None:
            toolbar.addAction(action)
        return action

    def _build_actions(self) -> None:
        mb = self.menuBar()
        tb = self.addToolBar("Main")
        tb.setObjectName("toolbar_main")
        f = mb.addMenu("&File")
        self.file_menu = FileMenu(self, self.store, f, self._action)
        self.file_menu.project_requested.connect(self.project_requested)
        self.file_menu.project_changed.connect(self.project_changed_on_disk)
        self._action("Checkpoint", self.checkpoint, "Ctrl+S", "mdi.content-save", f)
        self._action("Quit", self.close, "Ctrl+Q", None, f)
        e = mb.addMenu("&Edit")
        undo = self.editor.undo_group.createUndoAction(self, "Undo")
        undo.setShortcuts([QKeySequence("Ctrl+Z")])
        undo.setIcon(qta.icon("mdi.undo"))
        undo.setToolTip("Undo (Ctrl+Z)")
        redo = self.editor.undo_group.createRedoAction(self, "Redo")
        redo.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
        redo.setIcon(qta.icon("mdi.redo"))
        redo.setToolTip("Redo (Ctrl+Shift+Z)")
        self.undo_action, self.redo_action = undo, redo
        for a in (undo, redo):
            e.addAction(a)
            tb.addAction(a)
            self.addAction(a)
        tb.addSeparator()
        ed = self.editor
        self._action("Delete instance", ed.delete_selected, "Del", "mdi.delete", e, tb)
        self._action("Merge selected", ed.merge_selected, "M", "mdi.set-merge", e, tb)
        for n in range(1, 10):
            self._action(
                f"Category {n}", lambda _=False, n=n: self.categories.pick_digit(n), str(n)
            )
        tb.addSeparator()
        t = mb.addMenu("&Tools")
        self.tool_actions = {}
        for name, text, key, icon in (
            ("select", "Select / move / edit vertices", "V", "mdi.cursor-default"),
            ("polygon", "Draw polygon", "P", "mdi.vector-polygon"),
            ("brush", "Brush (adds to selected)", "B", "mdi.brush"),
            ("eraser", "Eraser (cuts from selected)", "E", "mdi.eraser"),
            ("box", "Box to mask (drag a box; a click: the object under it)", "Q",
             "mdi.selection-drag"),
        ):  # fmt: skip
            a = self._action(
                text, lambda _=False, n=name: self._choose_tool(n), key, icon, t, tb, True
            )
            self.tool_actions[name] = a
        self.tool_actions["select"].setChecked(True)
        self.refine_action = self._action(
            "Refine selected mask with the model", self._refine_selected, "W", "mdi.creation", t,
            tb,
        )  # fmt: skip
        tb.addWidget(QLabel(" Simplify "))
        self.simplify_box = self.simplify.spin_box()
        tb.addWidget(self.simplify_box)
        tb.addSeparator()
        r = mb.addMenu("&Review")
        self._action("Accept proposal", ed.accept_selected, "A", "mdi.check", r, tb)
        self._action("Reject proposal", ed.reject_selected, "R", "mdi.close", r, tb)
        self._action("Accept all shown proposals", ed.accept_all, "Shift+A", "mdi.check-all", r, tb)
        # Tab / Shift+Tab reach the review only from the canvas (CanvasView.review_step):
        # in spin boxes and fields they keep moving the focus.
        self._action("Next proposal\tTab", ed.select_next_pending, None, None, r)
        self._action("Previous proposal\tShift+Tab", ed.select_previous_pending, None, None, r)
        self._action(
            "Mark done, next image", self.done_and_next, ["Ctrl+Return", "Ctrl+Enter"],
            "mdi.check-decagram", r, tb,
        )  # fmt: skip
        self._action("Skip image", self.skip_and_next, "Ctrl+K", None, r)
        self._action(
            "Next most uncertain image", self.most_uncertain_image, "U", "mdi.help-circle", r
        )
        self._action(
            "Next image", self.next_image, ["D", "Right", "PgDown"], "mdi.arrow-right", r, tb
        )
        self._action(
            "Previous image", self.previous_image, ["Left", "PgUp"], "mdi.arrow-left", r, tb
        )
        tb.addSeparator()
        tb.addWidget(QLabel(" Score \u2265 "))
        self.threshold = QSlider(Qt.Orientation.Horizontal)
        self.threshold.setRange(round(SCORE_FLOOR * 100), 100)
        self.threshold.setMaximumWidth(120)
        self.threshold.setToolTip(THRESHOLD_TIP)
        tb.addWidget(self.threshold)
        self.threshold_label = QLabel()
        self.threshold_label.setToolTip(THRESHOLD_TIP)
        self.threshold_label.setMinimumWidth(
            self.threshold_label.fontMetrics().horizontalAdvance("0.00 ")
        )
        tb.addWidget(self.threshold_label)
        m = mb.addMenu("&Model")
        self._action("Train\u2026", self.show_train_dialog, "Ctrl+T", "mdi.school", m, tb)
        self._action("Propose all images", self.propose_all, None, "mdi.auto-fix", m)
        self._action(
            "Model versions and review analytics\u2026", self.show_versions, "Ctrl+Shift+V",
            "mdi.chart-line", m,
        )  # fmt: skip
        v = self.view_menu = mb.addMenu("&View")
        self._action("Fit image", self.canvas.fit, "F", "mdi6.fit-to-screen", v, tb)
        self._action("Actual size", lambda: self.canvas.set_zoom(1.0), "Ctrl+1", "mdi.magnify", v)
        self.visible_action = self._action(
            "Show instances", self.canvas.set_instances_visible, "H", "mdi.eye", v, tb, True
        )
        self.visible_action.setChecked(True)
        self.labels_action = self._action(
            "Show score labels", self.canvas.set_score_labels_visible, "L", "mdi.label-outline", v,
            None, True,
        )  # fmt: skip
        self.labels_action.setChecked(True)
        tb.addWidget(QLabel(" Opacity "))
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setMaximumWidth(100)
        self.opacity.setToolTip("Fill opacity of the instances")
        tb.addWidget(self.opacity)
        for dock in self.findChildren(QDockWidget):
            v.addAction(dock.toggleViewAction())
        h = mb.addMenu("&Help")
        self._action("Keyboard shortcuts", self.show_help, "F1", "mdi.keyboard", h)
        self._action("Open log file", self.open_log_file, None, "mdi.file-document", h)

    def _connect(self) -> None:
        c, ed = self.canvas, self.editor
        self.images.image_selected.connect(self.open_image)
        ed.image_changed.connect(self._image_shown)
        ed.instances_changed.connect(self._instances_changed)
        ed.image_error.connect(lambda msg: self.statusBar().showMessage(msg, 8000))
        ed.save_failed.connect(self._show_save_failed)
        # Another program (maskloop propose --force, a second window) may rewrite the shown
        # image: look every 2 s (one pragma while nobody else writes).
        self.external_check = QTimer(self)
        self.external_check.setInterval(2000)
        self.external_check.timeout.connect(self.editor.reload_if_changed_elsewhere)
        self.external_check.start()
        c.selection_changed.connect(self.instances.set_selected)
        c.selection_changed.connect(lambda ids: self.vertex_label.show_selection(ed.doc, ids))
        self.simplify.failed.connect(lambda text: self.statusBar().showMessage(text, 8000))
        self.instances.selection_requested.connect(c.set_selection)
        self.instances.zoom_requested.connect(c.zoom_to_instance)
        self.instance_filter.changed.connect(self.instances.set_filter)
        self.categories.categories_changed.connect(
            lambda: self.instance_filter.set_categories(self.store.categories())
        )
        c.zoom_changed.connect(lambda z: self.zoom_label.setText(f"{z * 100:.0f}%"))
        c.cursor_moved.connect(self._cursor)
        c.tool_changed.connect(self._tool_changed)
        c.review_step.connect(ed.select_next_pending)
        c.assist_box.connect(lambda _box, _replace: self._assist_unavailable())
        c.assist_click.connect(lambda _x, _y: self._assist_unavailable())
        c.assist_region.connect(lambda _x, _y, _remove: self._assist_unavailable())
        self.categories.category_picked.connect(ed.set_category_of_selected)
        self.categories.visibility_changed.connect(ed.set_hidden_categories)
        self.categories.visibility_changed.connect(lambda _: self._show_review_status())
        ed.drawing_category_changed.connect(self.categories.show_drawing_category)
        self.categories.categories_changed.connect(lambda: c.reload(ed.colors()))
        self.categories.categories_changed.connect(self._instances_changed)
        self.display.settings_changed.connect(ed.set_display)
        self.threshold.valueChanged.connect(lambda v: ed.set_threshold(v / 100))
        self.threshold.valueChanged.connect(lambda _: self._show_review_status())
        self.threshold.valueChanged.connect(
            lambda v: self.threshold_label.setText(f"{v / 100:.2f}")
        )
        self.threshold.valueChanged.connect(lambda v: self.instances.set_threshold(v / 100))
        self.threshold.valueChanged.connect(lambda _: self._save_threshold())
        self.threshold.sliderReleased.connect(self._save_threshold)
        self.opacity.valueChanged.connect(lambda v: c.set_fill_opacity(v / 100))
        self.versions.activated.connect(self._use_model)

    # -- preferences --------------------------------------------------------------------------

    def _restore(self) -> ProjectViewState:
        """Window layout and tool preferences; the project's last image, threshold and
        display mapping (returned: the image opens once the window is built)."""
        s = settings()
        geometry, state = s.value("window/geometry"), s.value("window/state")
        if geometry is not None and self.restoreGeometry(geometry):
            clamp_to_screen(self)  # saved on a monitor layout that may be gone
        else:
            first_run_geometry(self)
        self._layout_saved = state is not None and bool(self.restoreState(state))
        for dock in self.findChildren(QDockWidget):
            if dock.isFloating():
                clamp_to_screen(dock, self)
        state = load_view_state(s, self.store.root)
        legacy = None if state.threshold is None else state.threshold / 100
        try:
            migrate_score_floor(self.store, shown=legacy)
        except StoreError as exc:  # read-only or busy: show what is saved, migrate later
            log.warning("score threshold not migrated: %s", exc)
        self.threshold.setValue(round(project_threshold(self.store) * 100))
        self.display.set_settings(state.display)
        self.labels_action.setChecked(str(s.value("view/score_labels", True)).lower() != "false")
        self.canvas.set_score_labels_visible(self.labels_action.isChecked())
        self.threshold_label.setText(f"{self.threshold.value() / 100:.2f}")
        self.opacity.setValue(int(s.value("view/opacity", 35)))
        self.canvas.set_brush_radius(float(s.value("tools/brush_radius", 8.0)))
        self.editor.set_threshold(self.threshold.value() / 100)
        self.instances.set_threshold(self.threshold.value() / 100)
        self.canvas.set_fill_opacity(self.opacity.value() / 100)
        return state

    def showEvent(self, event) -> None:  # noqa: N802 (Qt API)
        super().showEvent(event)
        if not self._shown_once:
            self._shown_once = True
            if not self.testAttribute(Qt.WidgetAttribute.WA_DontShowOnScreen):  # screenshots
                clamp_to_screen(self)  # the window decorations are known now
            if not self._layout_saved:
                self._first_run_dock_widths()
            self.canvas.fit()

    def _first_run_dock_widths(self) -> None:
        """Side docks open at a fifth of the window each (or their minimum), so the image
        gets the middle rather than what the panels' size hints leave over."""
        sides = [
            d
            for d in self.findChildren(QDockWidget)
            if d.isVisible()
            and not d.isFloating()
            and self.dockWidgetArea(d)
            in (Qt.DockWidgetArea.LeftDockWidgetArea, Qt.DockWidgetArea.RightDockWidgetArea)
        ]
        if sides:
            width = round(self.width() * FIRST_RUN_DOCK_SHARE)
            self.resizeDocks(sides, [width] * len(sides), Qt.Orientation.Horizontal)

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt API)
        self.external_check.stop()  # the store closes after the window
        s = settings()
        s.setValue("window/geometry", self.saveGeometry())
        s.setValue("window/state", self.saveState())
        s.setValue("view/score_labels", self.labels_action.isChecked())
        self._save_threshold()
        self.rescorer.finish()  # the uncertainties follow the threshold just saved
        self._save_view_state()
        s.setValue("view/opacity", self.opacity.value())
        s.setValue("tools/brush_radius", self.canvas.brush_radius())
        s.setValue("project/last", str(self.store.root))
        if self.proposals is not None:
            self.proposals.shutdown()
        self.store.checkpoint()
        super().closeEvent(event)

    # -- navigation ---------------------------------------------------------------------------

    def open_image(self, image_id: int) -> None:
        self.editor.open_image(image_id)

    def current_image_id(self) -> int | None:
        return None if self.editor.doc is None else self.editor.doc.image_id

    def refresh_current_instances(self) -> None:
        """Re-read the shown image's instances from the store (e.g. new proposals arrived)."""
        self.editor.reload_current()

    def _step(self, delta: int) -> None:
        ids = self.images.ids()
        cur = self.current_image_id()
        if not ids:
            return
        pos = ids.index(cur) + delta if cur in ids else 0
        if 0 <= pos < len(ids):
            self.open_image(ids[pos])

    def next_image(self) -> None:
        self._step(1)

    def previous_image(self) -> None:
        self._step(-1)

    def done_and_next(self) -> None:
        """Mark done by the done rule (shown proposals accepted, hidden ones rejected)."""
        summary = self.editor.mark_done()
        if summary is not None and summary.blocked:
            self.statusBar().showMessage(summary.message(), 10000)
            return
        self.versions.refresh()  # the analytics count what is done
        self._go_to_next_review(summary.message() if summary is not None else "")

    def skip_and_next(self) -> None:
        self.editor.set_status(ImageStatus.SKIPPED)
        self._go_to_next_review()

    def _go_to_next_review(self, message: str = "") -> None:
        nxt = self.editor.next_to_review(self.images.order())
        if nxt is None:
            message = f"{message} Every image is reviewed.".strip()
        else:
            self.open_image(nxt)
        if message:
            self.statusBar().showMessage(message, 10000)

    def most_uncertain_image(self) -> None:
        """Open the untouched image the model is least sure about (active learning)."""
        current = self.current_image_id()
        for record in next_images(self.store, 2, use_cold_start=False):
            if record.id != current:
                self.open_image(record.id)
                return
        self.statusBar().showMessage("No image left that nobody has worked on.", 6000)

    def project_changed_on_disk(self) -> None:
        """An import or rescan changed the project: re-read images, categories and the shown
        image. Undo histories are dropped: the instances they refer to may be gone."""
        self.categories.refresh()
        self.instance_filter.set_categories(self.store.categories())
        self.canvas.reload(self.editor.colors())
        self.images.refresh()
        self.editor.forget_history()
        ids = self.images.ids()
        current = self.current_image_id()
        if current in ids:
            self.editor.reopen_current()
        elif ids:
            self.open_image(ids[0])
        self.versions.refresh()

    def _save_threshold(self) -> None:
        """Save the slider's value as the project's score threshold (not while it is being
        dragged: once, when it is let go)."""
        if self.threshold.isSliderDown():
            return
        value = self.threshold.value() / 100
        if abs(project_threshold(self.store) - value) < 0.005:
            return
        try:
            set_project_threshold(self.store, value)
        except StoreError as exc:
            self.statusBar().showMessage(f"Score threshold not saved: {exc}", 8000)
            return
        self.rescorer.request(value)

    def checkpoint(self) -> None:
        self.store.checkpoint()
        self.statusBar().showMessage("Checkpoint written (edits are saved as you make them).", 4000)

    # -- reactions ----------------------------------------------------------------------------

    def _image_shown(self, image_id: int) -> None:
        self.cursor_label.clear()  # the last image's pixel value means nothing here
        self.statusBar().clearMessage()
        self.images.set_current(image_id)
        self.display.set_image(self.editor.pixels)
        self._instances_changed()
        self._save_view_state()  # also on each image: a crash or kill must not forget it
        self.current_image_changed.emit(image_id)

    def _save_view_state(self) -> None:
        save_view_state(
            settings(),
            self.store.root,
            ProjectViewState(self.current_image_id(), None, self.display.settings),
        )

    def _instances_changed(self) -> None:
        doc = self.editor.doc
        self.instances.show_document(doc, self.store.categories())
        self.instances.set_selected(self.canvas.selection())
        self.vertex_label.show_selection(doc, self.canvas.selection())
        if doc is not None:
            self._show_review_status()
            self.images.update_status(doc.image_id)

    def _show_review_status(self) -> None:
        """The image's status and how many proposals wait: shown, and hidden by the slider."""
        doc = self.editor.doc
        if doc is None:
            return
        record = self.store.image(doc.image_id)
        pending = len(doc.pending_ids())
        shown = len(self.editor.review_order())
        hidden = f" ({pending - shown} hidden below the slider)" if pending > shown else ""
        self.status_label.setText(
            f"{self.images.display_name(record)}: {doc.status.value.replace('_', ' ')}, "
            f"{len(doc.instances)} instances, {shown} to review{hidden}"
        )

    def _cursor(self, x: float, y: float) -> None:
        value = pixel_text(self.editor.pixels, x, y)
        self.cursor_label.setText(f"x {x:.1f}  y {y:.1f}" + (f"  = {value}" if value else ""))

    def _choose_tool(self, name: str) -> None:
        """A tool key or button: pressed again, the tool stays chosen (and highlighted)."""
        self.canvas.set_tool(name)
        self._tool_changed(self.canvas.tool.name)

    def _tool_changed(self, name: str) -> None:
        for n, a in self.tool_actions.items():
            a.setChecked(n == name)

    def _refine_selected(self) -> None:
        if self.assists is None:
            self._assist_unavailable()
        else:
            self.assists.refine_selected()

    def _assist_unavailable(self) -> None:
        if self.assists is None:
            self.statusBar().showMessage("Assists need a model; none is loaded.", 6000)

    def _show_save_failed(self, message: str) -> None:
        """A refused edit gets a dialog as well as the status bar line: work that was not
        saved must not pass unnoticed. One box at a time (a drag can fail repeatedly)."""
        text = (
            f"{message}\n\nIf another program is writing this project, wait for it to finish; "
            "if the disk is full, free some space. Then make the edit again."
        )
        box = self._save_box
        if box is None or not box.isVisible():
            box = QMessageBox(QMessageBox.Icon.Warning, "Edit not saved", text, parent=self)
            box.setModal(False)
            self._save_box = box
        box.setText(text)
        box.show()

    def show_help(self) -> None:
        if self._help is None:
            self._help = HelpDialog(self)
        self._help.show()
        self._help.raise_()

    def open_log_file(self) -> None:
        path = log_file_path()
        if not path.exists():
            self.statusBar().showMessage(f"No log file yet ({path}).", 6000)
            return
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(path)))
