"""Help > Keyboard shortcuts (F1): every key and the review rules, in a window of its own
that keeps its columns (a message box wraps them) and can stay open beside the image."""

from __future__ import annotations

from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QPlainTextEdit, QVBoxLayout, QWidget

HELP_TEXT = """Review
  Tab / Shift+Tab  next / previous shown proposal (on the canvas; highest score first, wraps)
  A  accept the selected proposal       R  reject it (both move on to the next)
  Shift+A  accept every shown proposal (score at or above the score threshold)
  Ctrl+Enter  mark done: shown pending proposals are accepted, hidden ones rejected
              (one undo step), then the next image needing review opens
  Ctrl+K  skip the image               U  the most uncertain untouched image
  D / Right / PageDown  next image      Left / PageUp  previous image
Edit
  1-9  category of the selection; with nothing selected, of the shapes drawn next
       (untick a category in its dock to hide it; Ctrl+Enter waits until it is shown)
  Del  delete    M  merge selected     Ctrl+Z / Ctrl+Shift+Z  undo / redo
Tools
  V  select: click, Ctrl/Shift+click adds, drag moves; drag a vertex handle,
     Shift+click a handle deletes it, double-click an edge inserts one
  P  polygon: click points, Enter or double-click closes, Backspace undoes a point, Esc cancels
  B / E  brush / eraser on the selected instance, [ and ] change the size
  Q  box to mask: drag a box around an object and the model outlines it as a new shape;
     Shift+drag: the box's outline replaces the selected instance's (a poor first answer,
     or a poor proposal: more often right than W);
     a click without a drag takes the object under the cursor (the model's best detection
     there, else a box of the image's typical object size); Esc cancels a drag.
     With one instance selected: Shift+click adds the clicked object's region to it,
     Alt+click (or Ctrl+Shift+click) removes it (History: Add / Remove region; a removal
     that would leave nothing changes nothing); with nothing selected they are a click.
     On another shown instance, Shift+click joins that instance to the selected one and
     Alt+click cuts its outline out (no model run)
  W  refine: the model predicts the selected instance's mask again from its box grown 1.1x
     (assists run on the model's thread; each answer is one undo step; a dashed box or
     ring marks an assist until its answer comes)
  Simplify box (toolbar, px, saved with the project): how far the outlines traced next
     (proposals, assist answers, brush and eraser results) may move to lose vertices;
     1.4 by default, 0 keeps every pixel corner; outlines already made keep theirs.
     The status bar shows the selected outline's vertex count
View
  wheel zoom   F fit   Ctrl+1 actual size   Space+drag or middle-drag pan
  H show/hide instances   L show/hide score labels   double-click in Instances: zoom to it
  Score slider (the one score threshold, saved with the project; its value beside it):
    proposals below it are hidden, skipped by Tab, left by Shift+A, rejected by Ctrl+Enter
    and left out of exports. Every detection scoring 0.05 or more is stored, so lowering
    it shows more at once and raising it hides them, without running the model.
File
  Ctrl+N  new project   Ctrl+O  open project   Recent projects, Add images / rescan,
  Import (COCO, label maps, labelme, YOLO, ImageJ ROIs), Export (COCO, label maps, YOLO,
  ImageJ ROIs): the progress window counts what is done; Cancel leaves the project as it
  was (an import) or removes the files written so far (an export)
Model
  Ctrl+T  train a new version: it becomes active only if it scores at least as well as the
          active model on the same validation images, or when you choose it
  Ctrl+Shift+V  versions, comparison and review analytics, and how the project's outlines
                were made (proposals kept as is, assisted, drawn by hand, edited, imported)
Edits are saved as you make them; Ctrl+S writes a checkpoint."""


class HelpDialog(QDialog):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Keyboard shortcuts")
        self.text = QPlainTextEdit(HELP_TEXT)
        self.text.setReadOnly(True)
        self.text.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.text.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.close)
        layout = QVBoxLayout(self)
        layout.addWidget(self.text)
        layout.addWidget(buttons)
        metrics = self.text.fontMetrics()
        longest = max(metrics.horizontalAdvance(line) for line in HELP_TEXT.splitlines())
        lines = HELP_TEXT.count("\n") + 1
        self.resize(longest + 60, min(metrics.lineSpacing() * lines + 90, 760))
