"""``python -m erc.cli``: the ``erc`` command line."""

import sys

from erc.cli import main

sys.exit(main())
