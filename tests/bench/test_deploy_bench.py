"""`autoeff bench deploy --quick`: every family an encoder can hold gets its three rows (eager,
onnxruntime fp32, onnxruntime int8); one that cannot be exported says why; none errors."""
import csv
import json
import math

import pytest

from autoeff.bench import deploy as bench

pytest.importorskip("onnxruntime")

#: every built-in encoder family exports (Longformer and Reformer through their traceable
#: formulations, attention/_traceable.py); a plugin family may refuse, with a reason
EXPORTABLE = {"full", "linformer", "synthesizer", "linear", "sliding_window", "longformer", "reformer"}


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("deploy-bench")
    status = bench.main(["--quick", "--threads", "1", "--out", str(out)])
    return status, out, json.loads((out / "results.json").read_text())


def test_quick_bench_runs_every_family_without_errors(quick):
    status, out, doc = quick
    rows = doc["rows"]
    errors = [r for r in rows if r["status"] == "error"]
    assert status == 0 and not errors, errors
    fams = bench.encoder_families()
    assert {(r["family"], r["runtime"]) for r in rows} == {(f, rt) for f in fams for rt in bench.RUNTIMES}
    for r in rows:
        if r["status"] == "refused":
            assert r["runtime"] != "eager" and f"family {r['family']} cannot run in onnxruntime" in r["reason"]
    ok = {(r["family"], r["runtime"]) for r in rows if r["status"] == "ok"}
    assert {(f, rt) for f in EXPORTABLE & set(fams) for rt in bench.RUNTIMES} <= ok


def test_quick_bench_figures_and_prices(quick):
    _, _, doc = quick
    for r in doc["rows"]:
        if r["status"] != "ok":
            continue
        for k in ("latency_ms", "peak_memory_mb", "activation_peak_mb", "weights_mb", "ratio_to_eager"):
            assert math.isfinite(r[k]) and r[k] > 0, (r["family"], r["runtime"], k, r[k])
        assert r["peak_memory_mb"] == pytest.approx(r["weights_mb"] + r["activation_peak_mb"], rel=1e-6)
        assert r["threads"] == 1
        if r["runtime"] != "eager":  # the arena keeps at least what the tensors take
            assert 0 < r["activation_no_arena_mb"] <= r["activation_peak_mb"] + 1e-9
        if r["runtime"] == "ort_fp32":  # the graph computes what the eager model computes
            assert r["max_abs_diff"] < 1e-3
        if r["runtime"] == "ort_int8":
            assert 0 <= r["max_prob_diff"] <= 1 and 0 <= r["same_class"] <= 1
    by = {(r["family"], r["runtime"]): r for r in doc["rows"] if r["status"] == "ok"}
    for fam in EXPORTABLE:  # int8 weights take about a quarter of the bytes of the quantized MatMuls
        assert by[(fam, "ort_int8")]["weights_mb"] < by[(fam, "ort_fp32")]["weights_mb"]


def test_quick_bench_writes_its_outputs(quick):
    _, out, doc = quick
    for name in ("results.csv", "results.json", "README.md", "deploy_bench.png"):
        assert (out / name).stat().st_size > 0
    readme = (out / "README.md").read_text()
    assert "autoeff bench deploy --quick" in readme and doc["machine"]["cpu"] in readme
    assert "avx2" in readme and "avx512_vnni" in readme and "ORT_SEQUENTIAL" in readme
    with open(out / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == len(doc["rows"])
    assert set(doc["int8_instructions"]) >= {"avx512_vnni", "avx_vnni", "avx2"}
    assert len(doc["load_average"]["before"]) == 3


def test_bad_arguments_exit_2(capsys):
    assert bench.main(["--families", "full,nosuch"]) == 2
    assert "nosuch" in capsys.readouterr().err
    assert bench.main(["--width", "30", "--heads", "4"]) == 2
