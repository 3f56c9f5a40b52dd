"""The experiment config, at the bottom of the import graph: it imports nothing else of cxrlab.

choices (every closed choice, once) and registry (the choices that grow) -> schema (the pydantic
sections) -> fields (schema walking for --help and sweeps) -> messages (one-line errors) -> load
(YAML, overrides, dicts).
"""

from cxrlab.config.choices import (
    Balance,
    DicomWindow,
    FinetuneFixed,
    Mode,
    OtherLabels,
    Perturb,
    StartMethod,
    Task,
    Uncertain,
    finetune_options,
    is_finetune,
    last_n,
    options,
)
from cxrlab.config.errors import ConfigError, did_you_mean, first_line, shown
from cxrlab.config.fields import bounds, choices, iter_fields, range_text, registry_of, type_name
from cxrlab.config.load import (
    MAX_TABLE_BYTES,
    check_registered,
    check_size,
    coerce,
    flatten,
    from_dict,
    load_config,
    read_yaml,
    set_dotted,
    to_dict,
    to_yaml,
)
from cxrlab.config.registry import HEADS, METHODS, OPTIMIZERS, SCHEDULERS, SOURCES, Registry
from cxrlab.config.schema import (
    AlarmConfig,
    AOPCConfig,
    AugmentConfig,
    Config,
    DataConfig,
    ExplainConfig,
    ModelConfig,
    OcclusionConfig,
    SanityConfig,
    TrackingConfig,
    TrainerConfig,
    TrustConfig,
)

__all__ = [
    "MAX_TABLE_BYTES", "check_size", "HEADS", "METHODS", "OPTIMIZERS", "SCHEDULERS", "SOURCES", "AOPCConfig", "AlarmConfig", "AugmentConfig",
    "Balance", "Config", "ConfigError", "DataConfig", "DicomWindow", "ExplainConfig", "FinetuneFixed", "Mode",
    "ModelConfig", "OcclusionConfig", "OtherLabels", "SanityConfig", "Perturb", "Registry", "StartMethod", "Task", "TrackingConfig", "TrainerConfig", "TrustConfig", "Uncertain",
    "bounds", "check_registered", "choices", "coerce", "did_you_mean", "finetune_options", "first_line",
    "flatten", "from_dict", "is_finetune", "iter_fields", "last_n", "load_config", "options", "range_text",
    "read_yaml", "registry_of", "set_dotted", "shown", "to_dict", "to_yaml", "type_name",
]
