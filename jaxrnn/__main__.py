"""``python -m jaxrnn``: the same as the ``jaxrnn`` command."""

import sys

from jaxrnn._cli import main

sys.exit(main())
