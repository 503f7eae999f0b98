"""Experiment runners: configs, evaluation, sweeps, W&B logging, distributed evaluation.

Entry points: ``tokensel eval CONFIG [key=value ...]`` and ``tokensel sweep SWEEP_CONFIG``.
"""

from tokensel.experiments.config import ConfigError, ExperimentConfig, load_config

__all__ = ["ConfigError", "ExperimentConfig", "load_config"]
