"""``python -m app.cli ...``: the command line without an installed ``maskloop`` script
(the GUI starts training this way, with the same interpreter it runs on)."""

import sys

from app.cli import main

if __name__ == "__main__":
    sys.exit(main())
