"""``python -m zsgm``: the same command line as the ``zsgm`` script (:mod:`zsgm.cli`)."""

import sys

from zsgm.cli import main

if __name__ == "__main__":
    sys.exit(main())
