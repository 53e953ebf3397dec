"""``python -m erc``: the ``erc`` command line (as ``python -m erc.cli``)."""

import sys

from erc.cli import main

sys.exit(main())
