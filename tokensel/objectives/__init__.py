"""Coverage objectives: monotone submodular set functions that solvers maximise."""

from tokensel.objectives.base import CoverageObjective, WeightedSum
from tokensel.objectives.facility_location import FacilityLocation
from tokensel.objectives.max_coverage import MaxKCoverage, similarity_graph
from tokensel.objectives.modular import Modular
from tokensel.objectives.multimodal import MultimodalCoverage, l2_normalize, multimodal_coverage_matrix

__all__ = [
    "CoverageObjective",
    "FacilityLocation",
    "MaxKCoverage",
    "Modular",
    "MultimodalCoverage",
    "WeightedSum",
    "l2_normalize",
    "multimodal_coverage_matrix",
    "similarity_graph",
]
