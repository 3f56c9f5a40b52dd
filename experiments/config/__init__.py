"""The experiment config, at the bottom of the import graph: it imports nothing else of cxrlab.

choices (every closed choice, once) -> schema (the pydantic sections) -> fields (schema walking for
--help and sweeps) -> messages (one-line errors) -> load (YAML, overrides, dicts).
"""

from experiments.config.choices import (
    Balance,
    DicomWindow,
    FinetuneFixed,
    Head,
    Method,
    Mode,
    Optimizer,
    OtherLabels,
    Perturb,
    Scheduler,
    StartMethod,
    finetune_options,
    is_finetune,
    last_n,
    options,
)
from experiments.config.errors import ConfigError, did_you_mean, first_line
from experiments.config.fields import bounds, choices, iter_fields, range_text, type_name
from experiments.config.load import (
    coerce,
    flatten,
    from_dict,
    load_config,
    read_yaml,
    set_dotted,
    to_dict,
    to_yaml,
)
from experiments.config.schema import (
    AlarmConfig,
    AOPCConfig,
    AugmentConfig,
    Config,
    DataConfig,
    ExplainConfig,
    ModelConfig,
    TrackingConfig,
    TrainerConfig,
)

__all__ = [
    "AOPCConfig", "AlarmConfig", "AugmentConfig", "Balance", "Config", "ConfigError", "DataConfig",
    "DicomWindow", "ExplainConfig", "FinetuneFixed", "Head", "Method", "Mode", "ModelConfig", "Optimizer",
    "OtherLabels", "Perturb", "Scheduler", "StartMethod", "TrackingConfig", "TrainerConfig", "bounds",
    "choices", "coerce", "did_you_mean", "finetune_options", "first_line", "flatten", "from_dict",
    "is_finetune", "iter_fields", "last_n", "load_config", "options", "range_text", "read_yaml",
    "set_dotted", "to_dict", "to_yaml", "type_name",
]
