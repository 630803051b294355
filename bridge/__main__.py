"""``python -m bridge`` is the ``bridge`` command."""

import sys

from bridge.app.cli import main

sys.exit(main())
