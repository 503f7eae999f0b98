"""ObjectiveSelector: an objective of one image + a solver = a batched selector; MMTok is one."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import tokensel
from tokensel.objectives import FacilityLocation
from tokensel.selectors.mmtok import MMTok
from tokensel.testing import strategies as tst


def cosine_fl(image):
    x = torch.nn.functional.normalize(image.vision.double(), dim=-1)
    return FacilityLocation((x @ x.T).clamp_min(0))


class CosineFL(tokensel.ObjectiveSelector):
    """Cosine facility location over the vision tokens (test selector)."""

    def objective(self, image):
        return cosine_fl(image)


@given(tst.token_batches(min_pickable=3, text=False), st.integers(1, 3))
def test_picks_are_the_solver_picks_of_each_image_alone(batch, k):
    sel = tokensel.ObjectiveSelector(cosine_fl)  # the objective ignores image.exclude: the selector adds it
    out = sel(batch, k=k)
    b = batch.validate()
    rows = out.indices if batch.batched else out.indices[None]
    for r in range(b.vision.shape[0]):
        image, index = tokensel.testing.image_alone(b, r)
        if b.vision.shape[1] <= k:
            assert rows[r].tolist() == list(range(b.vision.shape[1]))
            continue
        obj = FacilityLocation(cosine_fl(image).C, exclude=image.exclude)
        want = tokensel.maximize(obj, k, solver="lazy").sorted_indices()
        assert rows[r].tolist() == index[want].tolist()


def test_subclass_registers_and_runs_by_name():
    with tokensel.registered("test-cosine-fl", CosineFL, solver="naive"):
        assert "test-cosine-fl" in tokensel.list_selectors(stage="vision")
        sel = tokensel.create_selector("test-cosine-fl")
        assert sel.solver == "naive" and sel.name == "test-cosine-fl"
        assert tokensel.create_selector("test-cosine-fl", solver="ilp", time_limit=5).solver_options == {"time_limit": 5}
    assert "test-cosine-fl" not in tokensel.list_selectors()
    with pytest.raises(ValueError, match="unknown selector"):
        tokensel.create_selector("test-cosine-fl")


def test_unregister_selector():
    tokensel.register_selector("test-unregister")(CosineFL)
    tokensel.unregister_selector("test-unregister")
    assert "test-unregister" not in tokensel.list_selectors()
    with pytest.raises(ValueError, match="no selector named"):
        tokensel.unregister_selector("test-unregister")


def test_bad_arguments_fail_at_construction_or_name_the_objective():
    with pytest.raises(TypeError, match="needs objective_fn"):
        tokensel.ObjectiveSelector()
    with pytest.raises(TypeError, match="objective_fn must be a callable"):
        tokensel.ObjectiveSelector(3)
    with pytest.raises(ValueError, match="unknown solver name 'lazzy'"):
        tokensel.ObjectiveSelector(cosine_fl, solver="lazzy")
    with pytest.raises(ValueError, match="tol is not a selector option"):
        tokensel.ObjectiveSelector(cosine_fl, tol=0.1)
    with pytest.raises(TypeError, match="unknown option.*'time_limt'"):
        tokensel.ObjectiveSelector(cosine_fl, solver="ilp", time_limt=3)
    batch = tokensel.TokenBatch(vision=torch.randn(2, 9, 4))
    with pytest.raises(TypeError, match="must be a CoverageObjective, got float"):
        tokensel.ObjectiveSelector(lambda image: 1.0)(batch, k=3)
    with pytest.raises(ValueError, match="has n=4 candidates, but the image has 9 tokens"):
        tokensel.ObjectiveSelector(lambda image: FacilityLocation(torch.rand(3, 4)))(batch, k=3)
    class NoBlocks(FacilityLocation):
        def coverage_blocks(self):
            return None

    with pytest.raises(ValueError, match="needs a facility-location-type objective"):
        tokensel.ObjectiveSelector(lambda im: NoBlocks(torch.rand(2, 9)), solver="incremental")(batch, k=3)


@given(tst.token_batches(min_pickable=4, text=True, fields=("vision_raw",)), st.integers(1, 4),
       st.sampled_from(["lazy", "naive"]))
def test_mmtok_with_lazy_or_naive_picks_what_the_default_picks(batch, k, solver):
    default = tokensel.create_selector("mmtok")
    assert default.solver == "incremental"
    other = tokensel.create_selector("mmtok", solver=solver)
    assert torch.equal(other(batch, k=k).indices, default(batch, k=k).indices)


def test_mmtok_options_are_checked():
    with pytest.raises(ValueError, match="backend='torch' applies to solver='incremental' only"):
        MMTok(backend="torch", solver="lazy")
    with pytest.raises(TypeError, match="solver_options must be a dict"):
        MMTok(solver_options=[1])
    sel = MMTok(solver="stochastic", solver_options={"seed": 3})
    batch = tokensel.TokenBatch(vision=torch.randn(1, 16, 4), text=torch.randn(1, 2, 4))
    assert torch.equal(sel(batch, k=4).indices, sel(batch, k=4).indices)


def test_mmtok_objective_of_an_image_is_its_multimodal_coverage():
    g = torch.Generator().manual_seed(1)
    image = tokensel.TokenBatch(vision=torch.randn(12, 6, generator=g), text=torch.randn(3, 6, generator=g))
    obj = MMTok(alpha=0.3).objective(image)
    assert isinstance(obj, tokensel.objectives.MultimodalCoverage) and obj.alpha == 0.3
    C = MMTok(alpha=0.3).coverage(image.validate())[0]
    assert torch.allclose(obj.C, C, rtol=1e-5, atol=1e-7)


def test_objective_selector_prunes_the_shipped_model():
    from tokensel.zoo import predict
    from tokensel.zoo.shapes import generate_split

    model, processor = tokensel.zoo.load("shapes-llava")
    records = generate_split("test", 2)[:4]
    sel = tokensel.ObjectiveSelector(cosine_fl, solver="lazy")
    pruned = tokensel.prune(model, sel, k=32, tokenizer=processor)
    answers = predict(pruned, processor, [r.image for r in records], [r.question for r in records],
                      [r.category for r in records])
    assert len(answers) == len(records)
    assert [len(img[0]) for img in pruned.record.selection] == [32] * len(records)
    # the same picks as the selector run on the adapter's own TokenBatch: the image's 576 tokens
    assert all(int(img[0].max()) < 576 for img in pruned.record.selection)
