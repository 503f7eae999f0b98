"""Bad input raises a clear error that names the argument."""

import math

import pytest
import torch

import tokensel
from tokensel.objectives import FacilityLocation, MultimodalCoverage, WeightedSum


def batch(**over):
    args = dict(vision=torch.randn(2, 10, 4), text=torch.randn(2, 3, 4))
    args.update(over)
    return tokensel.TokenBatch(**args)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(vision=torch.randn(10)), "vision"),
        (dict(vision=torch.randn(2, 3, 10, 4)), "vision"),
        (dict(text=torch.randn(2, 3, 5)), "text"),
        (dict(text=torch.randn(3, 3, 4)), "text"),
        (dict(vision_raw=torch.randn(2, 9, 4)), "vision_raw"),
        (dict(vision=torch.full((2, 10, 4), math.nan)), "NaN"),
        (dict(text=torch.full((2, 3, 4), math.inf)), "text"),
        (dict(exclude=torch.zeros(2, 10)), "exclude"),
        (dict(exclude=torch.zeros(2, 9, dtype=torch.bool)), "exclude"),
        (dict(text_mask=torch.zeros(2, 3, dtype=torch.bool)), "text_mask"),
        (dict(vision=torch.randint(0, 3, (2, 10, 4))), "vision"),
        (dict(grid=(3, 3)), "grid"),
        (dict(vision=torch.randn(2, 10, 4, dtype=torch.float64), text=torch.randn(2, 3, 4).to("meta")), "device"),
    ],
)
def test_bad_batches(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        tokensel.create_selector("mmtok")(batch(**kwargs), k=4)


@pytest.mark.parametrize("k", [0, -3, 2.5, True, "4"])
def test_bad_budget(k):
    with pytest.raises((ValueError, TypeError), match="k"):
        tokensel.create_selector("uniform")(batch(), k=k)
    with pytest.raises((ValueError, TypeError), match="k"):
        tokensel.maximize(FacilityLocation(torch.rand(3, 4)), k)


def test_too_many_excluded():
    ex = torch.ones(2, 10, dtype=torch.bool)
    ex[:, :3] = False
    out = tokensel.create_selector("mmtok")(batch(exclude=ex), k=4)  # keeps every pickable token
    assert out.indices.tolist() == [[0, 1, 2], [0, 1, 2]] and out.lengths.tolist() == [3, 3]
    with pytest.raises(ValueError, match="k=4 picks are impossible"):
        tokensel.maximize(FacilityLocation(torch.rand(3, 5), exclude=[0, 1, 2]), 4)


def test_unknown_names():
    with pytest.raises(ValueError, match="unknown selector name 'mmtk'.*mmtok"):
        tokensel.create_selector("mmtk")
    with pytest.raises(ValueError, match="unknown solver name 'greedy'.*lazy"):
        tokensel.maximize(FacilityLocation(torch.rand(3, 4)), 2, solver="greedy")
    with pytest.raises(TypeError, match="alhpa"):
        tokensel.create_selector("mmtok", alhpa=0.3)


def test_objective_inputs():
    with pytest.raises(ValueError, match="non-negative"):
        FacilityLocation(torch.tensor([[0.5, -0.1]]))
    with pytest.raises(ValueError, match="NaN"):
        FacilityLocation(torch.tensor([[0.5, math.nan]]))
    with pytest.raises(ValueError, match="shape"):
        FacilityLocation(torch.rand(4))
    with pytest.raises(ValueError, match="weights"):
        FacilityLocation(torch.rand(3, 4), weights=torch.rand(4))
    with pytest.raises(ValueError, match="exclude"):
        FacilityLocation(torch.rand(3, 4), exclude=[7])
    with pytest.raises(ValueError, match="text"):
        MultimodalCoverage(torch.randn(3, 5), torch.randn(6, 4))
    with pytest.raises(ValueError, match="tau"):
        MultimodalCoverage(torch.randn(3, 4), torch.randn(6, 4), tau_tv=0.0)
    with pytest.raises(ValueError, match="variant"):
        MultimodalCoverage(torch.randn(3, 4), torch.randn(6, 4), variant="audio")
    with pytest.raises(ValueError, match="share n"):
        WeightedSum([FacilityLocation(torch.rand(2, 3)), FacilityLocation(torch.rand(2, 4))])
    with pytest.raises(ValueError, match="non-negative"):
        WeightedSum([FacilityLocation(torch.rand(2, 3))], [-1.0])
    with pytest.raises(ValueError, match="needs TokenBatch.text"):
        tokensel.create_selector("topk-text")(tokensel.TokenBatch(vision=torch.randn(10, 4)), k=2)
    with pytest.raises(ValueError, match="brute force"):
        tokensel.maximize(FacilityLocation(torch.rand(5, 60)), 10, solver="brute")
