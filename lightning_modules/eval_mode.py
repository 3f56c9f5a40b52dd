"""The one way cxrlab runs a model in eval mode for a while and then puts every module back."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode inside the block; afterwards each module gets its own training flag back."""
    # Per-module flags, not model.train(was_training): fine-tune policies keep frozen norms in
    # eval inside a training model, and that must survive an explanation at epoch end.
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes:
            m.training = mode
