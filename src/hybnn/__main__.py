"""``python -m hybnn``: the ``hybnn`` command."""

import sys

from hybnn.cli import main

sys.exit(main())
