"""`autoeff bench attention --quick`: the whole pipeline runs and writes well-formed outputs.

Timings are never checked here (see docs/architecture.md: benchmarks compare, tests check behaviour).
"""
from __future__ import annotations

import csv
import json

import pytest

import autoeff
from autoeff.bench import attention as bench


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    rc = bench.main(["--quick", "--out", str(out), "--lengths", "32,48", "--variants", "all",
                     "--set", "linformer.rank=16"])
    return rc, out


def test_quick_run_writes_every_output(quick_run, capsys):
    rc, out = quick_run
    assert rc == 0
    for name in ("results.csv", "results.json", "results.md", "attention_bench.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "attention_bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_json_and_csv_are_well_formed(quick_run):
    _, out = quick_run
    result = json.loads((out / "results.json").read_text())
    assert set(result) >= {"meta", "rows", "slopes", "targets"}
    meta, rows = result["meta"], result["rows"]
    assert meta["lengths"] == [32, 48] and meta["settings"]["quick"] is True
    assert meta["variants"][0] == "full"
    # every registered family is measured (the default variants plus any family without one)
    families = {r["family"] for r in rows}
    assert set(autoeff.list_attentions()) <= families
    assert len(rows) == len(meta["variants"]) * 2
    for r in rows:
        for p in ("fwd", "fb"):
            st = r[f"{p}_status"]
            # at these tiny lengths every family runs: an error or a skip here is a broken family
            # (this check used to accept "error", so a run where every cell failed passed)
            assert st == "ok", (r["variant"], r["N"], p, st)
            assert r[f"{p}_ms"] > 0 and r[f"{p}_mem_mb"] >= 0 and r[f"{p}_speedup"] > 0
    full = [r for r in rows if r["variant"] == "full"]
    assert all(r["fwd_status"] == "ok" and r["fwd_speedup"] == pytest.approx(1.0) for r in full)
    lin = next(r for r in rows if r["variant"] == "linformer")
    assert lin["options"]["rank"] == 16  # --set reached the variant
    assert "fwd_mem_slope" in result["slopes"]["linear"]

    with open(out / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows)
    assert {"variant", "N", "fwd_ms", "fwd_speedup", "fwd_mem_mb", "fb_ms", "fb_mem_mb", "fwd_status"} <= set(table[0])
    md = (out / "results.md").read_text()
    assert "### Forward latency" in md and "| full |" in md and "| linear |" in md


def test_skip_rule_reports_instead_of_running(tmp_path, capsys):
    """A pass predicted to exceed --max-call-s is reported as skipped, not run."""
    rc = bench.main(["--quick", "--out", str(tmp_path), "--lengths", "16,32,4096", "--variants", "full,linear",
                     "--max-call-s", "1e-9", "--no-plot"])
    assert rc == 0
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    big = [r for r in rows if r["N"] == 4096]
    assert big and all(r["fwd_status"].startswith("skipped: predicted") for r in big)
    assert "Not measured" in (tmp_path / "results.md").read_text()
    err = capsys.readouterr().err
    assert "[1/6] full" in err  # progress lines on stderr


def test_bad_arguments_exit_2(tmp_path, capsys):
    assert bench.main(["--quick", "--out", str(tmp_path), "--variants", "nope"]) == 2
    assert "unknown variant 'nope'" in capsys.readouterr().err
    assert bench.main(["--quick", "--out", str(tmp_path), "--set", "linformer=3"]) == 2
    assert "LABEL.KEY=VALUE" in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


def test_list(capsys):
    assert bench.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "linformer" in out and "performer" in out


def test_layers_get_a_padding_mask_and_at_least_three_timed_calls(quick_run):
    _, out = quick_run
    rows = json.loads((out / "results.json").read_text())["rows"]
    for r in rows:
        for p in ("fwd", "fb"):
            if r[f"{p}_status"] == "ok":
                assert r[f"{p}_repeats"] >= bench.MIN_TIMED, r
    mask = bench.bench_mask(4, 64)
    assert mask[:2].all() and not mask[2:, -8:].any() and mask[2:, :56].all()


def test_error_vs_full_is_the_price_of_each_family(quick_run):
    _, out = quick_run
    rows = json.loads((out / "results.json").read_text())["rows"]
    by = {(r["variant"], r["N"]): r for r in rows}
    for n in (32, 48):
        assert by[("full", n)]["error_vs_full"] == pytest.approx(0.0, abs=1e-6)
        # approximate families differ from full attention, but not wildly (same projections)
        for v in ("linformer", "performer"):
            assert 1e-4 < by[(v, n)]["error_vs_full"] < 2.0
    assert "Relative error of the forward output" in (out / "results.md").read_text()


def test_a_longformer_window_covering_the_sequence_has_no_error():
    """copy_projections gives a family full attention's weights: an exact family then matches."""
    import torch

    from autoeff.attention import get_attention

    torch.manual_seed(0)
    full = get_attention("full")(32, 4, max_len=40)
    lf = get_attention("longformer")(32, 4, get_attention("longformer").options(window=80), max_len=40)
    bench.copy_projections(full, lf)
    x, mask = torch.randn(4, 40, 32), bench.bench_mask(4, 40)
    assert bench._error_vs_full(full, lf, x, mask) < 1e-5
