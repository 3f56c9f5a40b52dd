"""Fine-tuning policies: which backbone parameters train, and which norm layers stay frozen."""

from __future__ import annotations

from torch import nn

from cxrlab.config import FinetuneFixed, finetune_options, last_n

# Whether each fixed policy trains the whole backbone (frozen trains none of it); last:N trains
# from block[-N] on.
WHOLE_BACKBONE: dict[FinetuneFixed, bool] = {"frozen": False, "full": True, "scratch": True}
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def trainable_from(policy: str, blocks: list[str]) -> str | None:
    """Name of the first trainable block for a policy (None = nothing trains)."""
    if policy in WHOLE_BACKBONE:
        return blocks[0] if WHOLE_BACKBONE[policy] else None
    n = last_n(policy)
    if n is None:
        raise ValueError(f"model.finetune={policy!r}; use one of {', '.join(finetune_options())}")
    if n > len(blocks):
        raise ValueError(
            f"model.finetune={policy!r} but this backbone has only {len(blocks)} blocks "
            f"({', '.join(blocks)}); use last:1..last:{len(blocks)} or full"
        )
    return blocks[-n]


def apply_finetune(features: nn.Module, blocks: list[str], policy: str) -> list[nn.Module]:
    """Set requires_grad for a policy; return the norm layers that must stay in eval mode.

    Parameters are walked in registration order, which follows the forward order for every
    registry backbone (timm's too), so "last:N" = everything from block[-N]'s first parameter on.
    """
    first = trainable_from(policy, blocks)
    start = None if first is None else next(
        (n for n, _ in features.named_parameters() if n == first or n.startswith(first + ".")), None
    )
    if first is not None and start is None:
        raise ValueError(f"model.finetune={policy!r}: block {first!r} has no parameters to train")
    # full/scratch train everything, including parameters registered outside any block.
    trainable = WHOLE_BACKBONE.get(policy, False)
    for name, p in features.named_parameters():
        if start is not None and name == start:
            trainable = True
        p.requires_grad_(trainable)
    # A frozen BatchNorm still updates running stats in train mode; keep it in eval so the
    # frozen part computes exactly what it did before fine-tuning.
    return [
        m for m in features.modules()
        if isinstance(m, _NORMS) and not any(p.requires_grad for p in m.parameters())
    ]
