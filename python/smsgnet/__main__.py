"""``python -m smsgnet``: the same as the ``smsgnet`` command."""

import sys

from smsgnet.cli import main

if __name__ == "__main__":
    sys.exit(main())
