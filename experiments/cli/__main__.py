"""`python -m experiments.cli`: the same as the `cxrlab` console script."""

import sys

from experiments.cli.main import main

sys.exit(main())
