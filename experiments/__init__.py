"""Command-line entry points: ``python -m experiments.evaluate`` and ``python -m experiments.sweep``
(thin wrappers around :mod:`tokensel.experiments`); configs live in ``experiments/configs/``."""
