"""``python -m aot <stage> ...``: the command line lives in :mod:`aot.cli`."""

import sys

from aot.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
