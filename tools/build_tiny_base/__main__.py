"""``python -m tools.build_tiny_base`` (see ``build.py``)."""

import sys

from .build import main

sys.exit(main())
