"""Experiment runners: configs, evaluation, sweeps, W&B logging, distributed evaluation.

Entry points: ``tokensel eval CONFIG [key=value ...]``, ``tokensel sweep SWEEP_CONFIG`` and
``tokensel compare RUN_A RUN_B`` (also ``python -m tokensel.experiments.evaluate`` and, data-parallel,
``torchrun --nproc_per_node=N -m tokensel.experiments.evaluate CONFIG ...``). A new dataset
is registered with :func:`register_dataset` (see :mod:`tokensel.experiments.datasets`).
"""

from tokensel.experiments.config import ConfigError, ExperimentConfig, load_config
from tokensel.experiments.datasets import (
    Dataset,
    DatasetError,
    Sample,
    get_dataset,
    list_datasets,
    read_jsonl,
    register_dataset,
    unregister_dataset,
    write_jsonl,
)

__all__ = [
    "ConfigError",
    "Dataset",
    "DatasetError",
    "ExperimentConfig",
    "Sample",
    "get_dataset",
    "list_datasets",
    "load_config",
    "read_jsonl",
    "register_dataset",
    "unregister_dataset",
    "write_jsonl",
]
