"""``python -m graphrt.cli``: the same as the ``graphrt`` command."""
import sys

from . import main

sys.exit(main())
