"""`cxrlab train`: one training run from a config, or the resume of one from its checkpoint."""

from __future__ import annotations

import argparse
import copy
import signal
import sys
from typing import Any

from cxrlab.config import ConfigError
from cxrlab.experiments.cli.flags import (
    add_common_flags,
    add_config_flags,
    config_path,
    overrides_from,
)


def cmd_train(ns: argparse.Namespace) -> int:
    """cxrlab train."""
    from cxrlab.config import from_dict, load_config, set_dotted, to_yaml

    overrides = overrides_from(ns)
    if ns.tracking_uri:
        overrides["tracking.uri"] = ns.tracking_uri
    run_id = None
    if ns.resume:
        from cxrlab.experiments.tracking import checkpoints
        from cxrlab.experiments.training.checks import check_resume
        from cxrlab.experiments.training.train import resume_config
        from cxrlab.lightning_modules.checkpoint import read_checkpoint

        # runs:/RUN_ID/checkpoints/last.ckpt: the resume checkpoint a run uploaded to its server.
        uri = overrides.get("tracking.uri")
        ns.resume = str(checkpoints.local_checkpoint(ns.resume, uri, overrides.get("tracking.checkpoint_dir")))
        ckpt = read_checkpoint(ns.resume)
        raw, run_id = resume_config(ckpt)
        if ns.config:
            raise ConfigError("--resume takes its config from the checkpoint; drop --config (overrides still apply)")
        where = f"{ns.resume} (config stored in the checkpoint)"
        stored = from_dict(copy.deepcopy(raw), where)
        for k, v in overrides.items():
            set_dotted(raw, k, v)
        cfg = from_dict(raw, where)
        check_resume(stored, cfg, where)  # before anything touches the run
    else:
        path = config_path(ns.config)
        where = str(path) if path else "config"
        # Keys, types and ranges first: a typo is reported before torch, Lightning or MLflow loads.
        cfg = load_config(path, overrides)
    from cxrlab.experiments.training.checks import check_config
    from cxrlab.experiments.training.train import resolve, train

    check_config(cfg, where)
    if ns.print_config:
        print(to_yaml(resolve(cfg)), end="")
        return 0
    result = train(cfg, resume=ns.resume, run_id=run_id)
    if result.interrupted:
        how = f"stopped by {signal.Signals(result.exit_code - 128).name}" if result.exit_code else "interrupted"
        last = result.last_checkpoint or "the last.ckpt of this run"
        print(f"cxrlab: training {how}; resume with: cxrlab train --resume {last}", file=sys.stderr)
        return result.exit_code or 130
    _print_result(result, cfg)
    return 0


def _print_result(result: Any, cfg: Any) -> None:
    """The end block: the metrics, the best checkpoint and the links into the UI (also with --quiet)."""
    if result.run_id is None and not cfg.trainer.fast_dev_run:
        return  # a non-zero DDP rank: rank 0 reports
    m = result.metrics
    print("\n== cxrlab train: done ==")
    for key in ("val/acc", "val/macro_f1", "val/auroc", "val/macro_auroc", "val/disease_recall", "test/acc", "test/macro_f1", "test/macro_auroc"):
        if key in m:
            print(f"  {key:<20} {m[key]:.4f}")
    if result.best_score is not None:
        print(f"  best {cfg.trainer.monitor} = {result.best_score:.4f}")
    if result.best_checkpoint:
        print(f"  checkpoint: {result.best_checkpoint}")
    if result.run_id:
        from cxrlab.experiments.tracking import store
        from cxrlab.experiments.tracking.ui import ui_link

        uri = store.resolve_uri(cfg.tracking.uri)
        print(f"  MLflow run: {result.run_id}  (store {uri})")
        if result.model_id:  # what `cxrlab register`, `mlflow models serve` and evaluate take
            print(f"  model:      models:/{result.model_id}")
        print(f"  run:        {ui_link(uri, result.experiment_id, result.run_id)}")
        print(f"  all runs:   {ui_link(uri, result.experiment_id)}" + ("" if store.is_server(uri) else "   (start the UI: cxrlab ui)"))


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `cxrlab train`."""
    p = sub.add_parser(
        "train", help="train one model (one MLflow run)",
        usage="cxrlab train [--config FILE] [--resume CKPT] [--print_config] [--SECTION.KEY VALUE ...]",
        description="Train a classifier from a YAML config plus dotted overrides, e.g.\n"
        "  cxrlab train --config phantom_demo --model.backbone resnet18 --trainer.max_epochs 2\n"
        "Every config key is a flag below; values are parsed as YAML scalars/lists (0.8,0.1,0.1).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", "-c", help="YAML config file, or the name of a shipped one (see experiments/configs/)")
    p.add_argument("--resume", metavar="CKPT", help="continue a crashed/stopped run from its checkpoint (last.ckpt, or runs:/RUN_ID/checkpoints/last.ckpt on a tracking server), in the same MLflow run")
    p.add_argument("--print_config", action="store_true", help="print the resolved config as YAML and exit")
    add_common_flags(p, "tracking_uri", "quiet", "verbose")
    add_config_flags(p)
    p.set_defaults(func=cmd_train)
