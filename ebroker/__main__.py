"""``python -m ebroker``: the ``ebroker`` command."""

import sys

from .cli import main

sys.exit(main())
