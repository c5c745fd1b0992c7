"""`python -m siamface` is the `siamface` command."""

import sys

from .cli import main

sys.exit(main())
