"""Datasets: the synthetic shapes VQA used to train and evaluate the embedded default model."""

from tokensel.data.shapes import (
    CATEGORIES,
    COLORS,
    POPE_MODES,
    SHAPES,
    Scene,
    VQARecord,
    answer_vocabulary,
    generate_split,
    iter_split,
    read_jsonl,
    write_jsonl,
)

__all__ = [
    "CATEGORIES",
    "COLORS",
    "POPE_MODES",
    "SHAPES",
    "Scene",
    "VQARecord",
    "answer_vocabulary",
    "generate_split",
    "iter_split",
    "read_jsonl",
    "write_jsonl",
]
