"""`python -m cxrlab.experiments.cli`: the same as the `cxrlab` console script."""

import sys

from cxrlab.experiments.cli.main import main

sys.exit(main())
