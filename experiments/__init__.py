"""Command-line entry points: ``python -m experiments.evaluate`` and ``python -m experiments.sweep``
(thin wrappers around :mod:`tokensel.experiments`, for a repository checkout; an installed package
has ``tokensel eval`` / ``python -m tokensel.experiments.evaluate``); configs live in
``experiments/configs/``."""
