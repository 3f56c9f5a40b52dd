"""Dataset adapters: each turns a dataset on disk, as downloaded, into the sample table.

The registry (registry.py) maps data.source names to adapters; each adapter module registers
itself when imported below, so the order here is the order `cxrlab data sources` lists them.
"""

# Registration order is listing order (the generic sources first), so these stay unsorted.
# isort: off
from cxrlab.datamodules.sources import csv_folder  # noqa: F401  (imported to register the adapters)
from cxrlab.datamodules.sources import kermany  # noqa: F401
from cxrlab.datamodules.sources import coronahack  # noqa: F401
from cxrlab.datamodules.sources import covid_radiography  # noqa: F401
from cxrlab.datamodules.sources import cohen  # noqa: F401
from cxrlab.datamodules.sources import covidx  # noqa: F401
from cxrlab.datamodules.sources import nih  # noqa: F401
from cxrlab.datamodules.sources import chexpert  # noqa: F401
from cxrlab.datamodules.sources import mimic_cxr_jpg  # noqa: F401
from cxrlab.datamodules.sources import padchest  # noqa: F401
from cxrlab.datamodules.sources import rsna_pneumonia  # noqa: F401
from cxrlab.datamodules.sources import combine  # noqa: F401
# isort: on
from cxrlab.datamodules.sources.csv_folder import csv_source, folder_source
from cxrlab.datamodules.sources.load import Loaded, data_root, load_source, load_table, read_source
from cxrlab.datamodules.sources.options import SourceOptions
from cxrlab.datamodules.sources.registry import Source, detect_source, get_source, source_names
from cxrlab.datamodules.sources.table import check_files, resolve_classes, select_labels

__all__ = [
    "Loaded",
    "Source",
    "SourceOptions",
    "check_files",
    "csv_source",
    "data_root",
    "detect_source",
    "folder_source",
    "get_source",
    "load_source",
    "load_table",
    "read_source",
    "resolve_classes",
    "select_labels",
    "source_names",
]
