from PySide6.QtCore import QSettings

from app.core.store import ProjectStore
from app.ui.welcome import MAX_RECENT, WelcomeDialog, recent_projects, remember_project


def test_recent_projects_listed_and_opened(qtbot, tmp_path):
    settings = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    roots = []
    for name in ("a", "b", "gone"):
        ProjectStore.create(tmp_path / name).close()
        roots.append((tmp_path / name).resolve())
        remember_project(settings, roots[-1])
    (roots[2] / "maskloop.sqlite").unlink()  # a project deleted since
    remember_project(settings, roots[0])  # reopened: moves to the front, no duplicate
    assert recent_projects(settings) == [roots[0], roots[1]]
    assert settings.value("project/last") == str(roots[0])

    dialog = WelcomeDialog(settings=settings)
    qtbot.addWidget(dialog)
    assert dialog.recent.count() == 2
    dialog._open_recent(dialog.recent.item(1))
    assert dialog.result() == WelcomeDialog.DialogCode.Accepted
    assert dialog.store.root == roots[1]
    dialog.store.close()


def test_recent_list_is_bounded(tmp_path):
    settings = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    for i in range(MAX_RECENT + 3):
        ProjectStore.create(tmp_path / f"p{i}").close()
        remember_project(settings, (tmp_path / f"p{i}").resolve())
    assert len(recent_projects(settings)) == MAX_RECENT
    assert recent_projects(settings)[0].name == f"p{MAX_RECENT + 2}"


def test_no_recent_projects_hides_the_list(qtbot, tmp_path):
    dialog = WelcomeDialog(settings=QSettings(str(tmp_path / "e.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(dialog)
    assert dialog.recent.isHidden()
