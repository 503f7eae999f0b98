"""Experiment runners: configs, evaluation, sweeps, W&B logging, distributed evaluation.

Entry points: ``tokensel eval CONFIG [key=value ...]``, ``tokensel sweep SWEEP_CONFIG`` and
``tokensel compare RUN_A RUN_B`` (also ``python -m tokensel.experiments.evaluate`` and, data-parallel,
``torchrun --nproc_per_node=N -m tokensel.experiments.evaluate CONFIG ...``).
"""

from tokensel.experiments.config import ConfigError, ExperimentConfig, load_config

__all__ = ["ConfigError", "ExperimentConfig", "load_config"]
