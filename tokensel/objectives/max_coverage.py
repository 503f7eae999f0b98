"""Classic max-k-coverage over a token graph (networkx): f(S) = weight of N[S].

Tokens are nodes; an edge joins two tokens whose cosine similarity is at least ``threshold``.
A token covers itself and its neighbours; f(S) is the total weight of the nodes covered by S.
``value`` is computed from the graph with plain set unions, so it doubles as an independent
oracle for the matrix-based facility location (max-k-coverage is facility location with the
0/1 closed-neighbourhood matrix).
"""

from __future__ import annotations

from collections.abc import Sequence

import networkx as nx
import torch
from torch import Tensor

from tokensel.objectives.base import CoverageObjective, as_index_tensor
from tokensel.ops import l2_normalize
from tokensel.validation import check_number

__all__ = ["MaxKCoverage", "similarity_graph"]


def similarity_graph(features: Tensor, threshold: float) -> nx.Graph:
    """Graph on ``features.shape[0]`` nodes; edge i-j when cos(features_i, features_j) >= threshold."""
    if not isinstance(features, Tensor) or features.dim() != 2:
        raise ValueError(f"features must be a [n, d] tensor, got {getattr(features, 'shape', type(features))}")
    if not bool(torch.isfinite(features).all()):
        raise ValueError("features contains NaN or inf values")
    threshold = check_number("threshold", threshold)
    f = l2_normalize(features.detach().cpu())
    sim = f @ f.T
    n = f.shape[0]
    g: nx.Graph = nx.Graph()
    g.add_nodes_from(range(n))
    ii, jj = torch.nonzero(torch.triu(sim >= threshold, diagonal=1), as_tuple=True)
    g.add_edges_from(zip(ii.tolist(), jj.tolist()))
    return g


class MaxKCoverage(CoverageObjective):
    """f(S) = sum of ``weights[u]`` over nodes u in the closed neighbourhood of S.

    Args:
        graph: a networkx graph whose nodes are ``0 .. n-1``; or give ``features`` [n, d] and
            ``threshold`` to build it with :func:`similarity_graph`.
        weights: optional non-negative node weights ``[n]`` (default 1).
        exclude: bool mask ``[n]`` or indices that may not be picked.
    """

    def __init__(
        self,
        graph: nx.Graph | None = None,
        *,
        features: Tensor | None = None,
        threshold: float = 0.9,
        weights: Tensor | Sequence[float] | None = None,
        exclude: Tensor | Sequence[int] | None = None,
    ) -> None:
        if graph is None:
            if features is None:
                raise ValueError("give exactly one of graph or features")
            graph = similarity_graph(features, threshold)
        elif features is not None:
            raise ValueError("give exactly one of graph or features")
        n = graph.number_of_nodes()
        if set(graph.nodes) != set(range(n)):
            raise ValueError("graph nodes must be the integers 0 .. n-1")
        super().__init__(n, exclude)
        self.graph = graph
        w = torch.ones(n, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        if tuple(w.shape) != (n,) or bool((w < 0).any()) or not bool(torch.isfinite(w).all()):
            raise ValueError(f"weights must be finite, non-negative, of shape ({n},)")
        self.node_weights = w
        self._neighbourhoods = [frozenset(graph.neighbors(u)) | {u} for u in range(n)]

    def value(self, indices: Sequence[int] | Tensor) -> float:
        covered: set[int] = set()
        for j in as_index_tensor(indices, self.n).tolist():
            covered |= self._neighbourhoods[j]
        return float(sum(self.node_weights[u] for u in covered))

    def initial_state(self) -> set[int]:
        return set()

    def gains(self, state: set[int], candidates: Tensor | None = None) -> Tensor:
        cand = range(self.n) if candidates is None else candidates.tolist()
        w = self.node_weights
        return torch.tensor(
            [float(sum(w[u] for u in self._neighbourhoods[j] - state)) for j in cand], dtype=torch.float64
        )

    def update(self, state: set[int], j: int) -> set[int]:
        state |= self._neighbourhoods[j]
        return state

    def coverage_blocks(self) -> list[tuple[Tensor, float]]:
        A = torch.zeros(self.n, self.n, dtype=torch.float64)
        for j, nb in enumerate(self._neighbourhoods):
            A[list(nb), j] = 1.0
        return [(A * self.node_weights[:, None], 1.0)]
