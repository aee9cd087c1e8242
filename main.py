"""Run MaskLoop from a source checkout: ``python main.py [COMMAND ...]`` (default: the GUI)."""

import sys

from app.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["gui"]))
