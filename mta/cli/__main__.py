"""`python -m mta.cli ...`: the same as the `mta` console script."""

import sys

from mta.cli import main

sys.exit(main())
