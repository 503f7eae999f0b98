"""``tokensel bench flops``: the analytic FLOPs equal FlopCounterMode's, stage by stage, on every
family, shapes-llava included; FastV's excess is exactly its recomputed attention rows."""

from __future__ import annotations

from tokensel.bench.flops import FAMILIES, MODES, agreement_rows, format_agreement
from tokensel.bench.flops import main as flops_main


def test_every_family_every_call_every_stage_agrees():
    rows = agreement_rows()
    assert {(r.family, r.mode) for r in rows} == {(f, m) for f in FAMILIES for m in MODES}
    for r in rows:
        assert r.residual == 0, r
        assert r.analytic > 0 and (r.explained > 0) == (r.mode == "fastv" and r.stage == "prefill"), r
    text = format_agreement(rows)
    assert "shapes-llava" in text and "residual" in text


def test_unknown_family_is_named(capsys):
    assert flops_main(["--families", "llava,gpt"]) == 2
    assert "gpt" in capsys.readouterr().err
