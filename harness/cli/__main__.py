"""`python -m harness.cli`: what executors start for a job, and the `harness` script."""

import sys

from harness.cli import main

sys.exit(main())
