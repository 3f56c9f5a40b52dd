"""`python -m cxrlab.experiments.cli`: the same as the `cxrlab` console script."""

from cxrlab.experiments.cli.main import run

run()
