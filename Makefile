# MaskLoop developer commands. `make run` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP_RUN := $(VENV)/.stamp-run
STAMP_TEST := $(VENV)/.stamp-test
# torch/torchvision are pinned here so pip takes the release that ships for this platform;
# pyproject.toml allows a range for other installs.
TORCH := torch==2.14.1 torchvision==0.29.1
export QT_QPA_PLATFORM ?=

.PHONY: run test bench lint package clean-venv

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP_RUN): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e .
	touch $@

$(STAMP_TEST): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test]'
	touch $@ $(STAMP_RUN)

# `make run PROJECT=path` opens that project; plain `make run` opens (and first creates)
# the offline demo project in ./demo-project. It first checks that the system libraries Qt's
# X11 plugin needs are installed, and prints the apt-get command if not.
run: $(STAMP_RUN)
	@$(PY) -m app.ui.qt_libs  # names the missing X11 libraries and the apt-get command
	@if [ -n "$(PROJECT)" ]; then \
		$(VENV)/bin/maskloop gui "$(PROJECT)"; \
	else \
		$(VENV)/bin/maskloop demo demo-project && $(VENV)/bin/maskloop gui demo-project; \
	fi

test: $(STAMP_TEST)
	$(VENV)/bin/ruff check app tests main.py
	$(VENV)/bin/lint-imports
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

lint: $(STAMP_TEST)
	$(VENV)/bin/ruff check app tests main.py
	$(VENV)/bin/lint-imports

bench: $(STAMP_TEST)
	@for f in tests/benchmarks/bench_*.py; do QT_QPA_PLATFORM=offscreen $(PY) $$f || exit 1; done

clean-venv:
	rm -rf $(VENV)

# Packaging (packaging/README.md); slow, so not part of `make test`.
# `make package`: PyInstaller one-folder build of the app in dist/maskloop/ plus its smoke test.
# PyInstaller is a build tool only: installed into the venv here, never a runtime dependency.
package: $(STAMP_RUN)
	$(PY) -c "import PyInstaller" 2>/dev/null || $(PY) -m pip install -q "pyinstaller>=6.11"
	$(PY) -c "import roifile, yaml, onnx" 2>/dev/null || $(PY) -m pip install -q -e '.[export]'
	$(PY) -m PyInstaller --noconfirm --clean --distpath dist --workpath build/pyinstaller \
		packaging/maskloop.spec
	cp packaging/install_desktop.sh dist/maskloop/
	bash packaging/smoke_test.sh dist/maskloop

# `make install-desktop`: put this checkout's `maskloop` into the Linux desktop menu
# (packaged builds: run dist/maskloop/install_desktop.sh instead).
.PHONY: install-desktop
install-desktop: $(STAMP_RUN)
	bash packaging/install_desktop.sh --exec "$(CURDIR)/$(VENV)/bin/maskloop"
