"""``python -m graphrt``: the same as the ``graphrt`` command (and ``python -m graphrt.cli``)."""
import sys

from .cli import main

sys.exit(main())
