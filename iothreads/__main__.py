"""``python -m iothreads``: the ``iothreads`` command line (see ``iothreads._cli``)."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
