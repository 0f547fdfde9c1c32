"""``python -m monitor`` is the ``mailmon`` command."""

import sys

from monitor.cli import main

sys.exit(main())
