import logging

from app.logs import log_file_path, setup_logging
from app.paths import model_zoo_dir, resources_dir, user_models_dir


def test_log_file_in_user_data_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    path = setup_logging()
    assert path == log_file_path() and path.is_relative_to(tmp_path)
    logging.getLogger("app.test").info("hello from the test")
    for h in logging.getLogger().handlers:
        h.flush()
    assert "hello from the test" in path.read_text()
    setup_logging()  # a second call replaces, not duplicates, the handlers
    assert sum(getattr(h, "_maskloop", False) for h in logging.getLogger().handlers) == 2


def test_unwritable_log_folder_is_not_fatal(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("XDG_DATA_HOME", str(blocker))
    assert setup_logging() is None


def test_bundled_folders_found_from_a_source_checkout(tmp_path, monkeypatch):
    assert model_zoo_dir().name == "model_zoo" and resources_dir().name == "resources"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    monkeypatch.delenv("MASKLOOP_MODELS_DIR", raising=False)
    assert user_models_dir() == tmp_path / "maskloop" / "models"
