"""deploy.runtime: onnxruntime: the config is checked at the edge, the figures are measured on the
exported graph in an ONNX Runtime session with recorded settings, and a model that cannot be
exported fails its trial with the reason while the search goes on."""
import math
import subprocess

import pytest
import torch

from autoeff.config import parse_run_config, task_spec
from autoeff.errors import ConfigError
from autoeff.measure import onnxrt
from autoeff.measure.model import measure_model
from autoeff.model import build_model, example_inputs

pytest.importorskip("onnxruntime")

TASK = {"kind": "listops", "seq_len": 32, "min_len": 8, "max_depth": 3, "n_train": 16, "n_val": 8, "n_test": 8}


def _cfg(**sections):
    data = {"tasks": [TASK], "model": {"depth": 1, "width": 32, "heads": 2, "dropout": 0.0},
            "deploy": {"runtime": "onnxruntime", "threads": 1, "warmup": 1, "repeats": 3}}
    for k, v in sections.items():
        data[k] = {**data.get(k, {}), **v} if isinstance(v, dict) else v
    return parse_run_config(data, file="t.yaml")


def test_bad_runtime_is_one_config_error_naming_key_value_allowed():
    with pytest.raises(ConfigError) as e:
        _cfg(deploy={"runtime": "tensorrt"})
    msg = str(e.value)
    assert "t.yaml" in msg and "deploy.runtime" in msg and "tensorrt" in msg and "onnxruntime" in msg and "torch" in msg


@pytest.mark.parametrize("sections, key", [
    ({"model": {"arch": "decoder"}, "tasks": [{"kind": "mqar", "seq_len": 32, "n_pairs": 4}]}, "deploy.runtime"),
    ({"deploy": {"device": "cuda"}}, "deploy.device"),
    ({"compress": {"bits": 16}}, "compress.bits"),
])
def test_onnxruntime_refuses_what_it_cannot_measure(sections, key):
    with pytest.raises(ConfigError) as e:
        _cfg(**sections)
    assert key in str(e.value) and "onnxruntime" in str(e.value)


def test_cli_bad_runtime_exits_2_without_traceback(tmp_path, repo, autoeff_cmd):
    import yaml

    space = yaml.safe_load((repo / "search_spaces" / "smoke.yaml").read_text())
    space.setdefault("deploy", {})["runtime"] = "tflite"
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    r = subprocess.run(autoeff_cmd + ["validate", "--space", str(path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    assert "deploy.runtime" in r.stderr and "tflite" in r.stderr and "onnxruntime" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("bits, op", [(32, None), (8, "MatMulInteger"), (4, "MatMulNBits")])
def test_measure_model_under_onnxruntime(bits, op):
    from autoeff.compress import build_deployed

    cfg = _cfg(compress={"bits": bits})
    specs = [task_spec(t) for t in cfg.tasks]
    model = build_deployed(cfg, specs) if bits != 32 else build_model(cfg, specs)
    per = measure_model(model, specs, cfg.deploy)
    t = per[specs[0].name]
    for k in ("latency_ms", "latency_p10_ms", "latency_p90_ms", "peak_memory_mb", "activation_peak_mb"):
        assert math.isfinite(t[k]) and t[k] >= 0, (k, t[k])
    assert t["latency_ms"] > 0 and t["activation_peak_mb"] > 0  # memray sees onnxruntime's allocations
    assert t["threads"] == 1.0
    m = per["_model"]
    assert m["ort_threads"] == 1.0 and m["ort_mem_arena"] == 1.0 and m["ort_bits"] == float(bits)
    assert t["peak_memory_mb"] == pytest.approx(m["onnx_size_mb"] + t["activation_peak_mb"], rel=1e-9)
    # the measured graph is the one at the model's bits
    x, mask = example_inputs(specs[0], cfg.deploy.batch_size)
    assert onnxrt.weight_bits(model) == bits  # the model itself is left as it was (still quantized)
    with torch.inference_mode():
        assert torch.isfinite(model(x, mask, specs[0].name)).all()
    fp32, g = onnxrt.graphs(model, specs[0].name, x, mask, bits)
    ops = onnxrt.count_ops(g)
    if op is None:
        assert g == fp32 and "MatMulInteger" not in ops
    else:
        assert ops.get(op, 0) > 0, ops
        assert onnxrt.initializer_bytes(g) < 0.6 * onnxrt.initializer_bytes(fp32)


@pytest.mark.parametrize("kind, opts", [("longformer", {"window": 8, "global_tokens": 2, "dilation": 2}),
                                         ("reformer", {"bucket_size": 8, "n_hashes": 2})])
def test_families_with_a_traceable_form_are_measured_in_onnxruntime(kind, opts):
    """Longformer and Reformer trace through their export formulations (attention/_traceable.py),
    the exporter's graph: measured, and the graph reproduces the eager (fast) kernels."""
    cfg = _cfg(attention={"kind": kind, kind: opts})
    specs = [task_spec(t) for t in cfg.tasks]
    torch.manual_seed(0)
    model = build_model(cfg, specs).eval()
    per = measure_model(model, specs, cfg.deploy)
    t = per[specs[0].name]
    assert math.isfinite(t["latency_ms"]) and t["latency_ms"] > 0 and t["activation_peak_mb"] > 0
    assert per["_model"]["ort_bits"] == 32.0
    x, mask = example_inputs(specs[0], cfg.deploy.batch_size)
    mask[:, 20:] = False  # padding: the graph's masking is the eager kernel's
    fp32, _ = onnxrt.graphs(model, specs[0].name, x, mask, 32)
    assert onnxrt.check_graph(model, specs[0].name, fp32, x, mask) <= 1e-4
    assert not any(m.exporting for m in model.modules() if hasattr(m, "exporting"))  # eager kernels again


def test_gated_deltanet_prefill_graph_is_built_and_checked():
    """gated_deltanet's triangular solve has no ONNX translation: the graph rewrite (forward
    substitution, measure/onnx_graph.py) lets the measurement layer build and check its prefill
    graph (``deploy.runtime: onnxruntime`` itself measures encoders only: refused at the edge)."""
    cfg = parse_run_config({"model": {"arch": "decoder", "width": 32, "heads": 2, "depth": 1, "dropout": 0.0},
                            "attention": {"kind": "gated_deltanet", "gated_deltanet": {"chunk_size": 8}},
                            "tasks": [{"kind": "mqar", "seq_len": 32, "n_pairs": 4, "vocab": 64}]})
    specs = [task_spec(t) for t in cfg.tasks]
    torch.manual_seed(0)
    model = build_model(cfg, specs).eval()
    x, mask = example_inputs(specs[0], 2)
    fp32, g8 = onnxrt.graphs(model, specs[0].name, x, mask, 8)  # check_graph passed on the fp32 graph
    assert onnxrt.count_ops(g8).get("MatMulInteger", 0) > 0
    ms = onnxrt.measure_session(fp32, x, mask, onnxrt.OrtSettings(threads=1), warmup=0, repeats=1)
    assert ms["latency_ms"] > 0


def test_settings_reach_the_session_and_the_metrics():
    cfg = _cfg(deploy={"ort_mem_arena": False, "threads": 2})
    specs = [task_spec(t) for t in cfg.tasks]
    per = measure_model(build_model(cfg, specs), specs, cfg.deploy)
    assert per["_model"]["ort_mem_arena"] == 0.0 and per["_model"]["ort_threads"] == 2.0
    import onnxruntime as ort

    seen = {}
    real = ort.InferenceSession

    def spy(graph, opts, providers):
        seen.update(threads=opts.intra_op_num_threads, inter=opts.inter_op_num_threads,
                    mode=opts.execution_mode, arena=opts.enable_cpu_mem_arena)
        return real(graph, opts, providers=providers)

    ort.InferenceSession = spy
    try:
        onnxrt.measure_ort(build_model(cfg, specs), specs[0].name, *example_inputs(specs[0], 1), threads=2,
                           mem_arena=False, warmup=0, repeats=1)
    finally:
        ort.InferenceSession = real
    assert seen == {"threads": 2, "inter": 1, "mode": ort.ExecutionMode.ORT_SEQUENTIAL, "arena": False}


def test_graph_cache_tells_families_with_the_same_weights_apart():
    """full and linear attention hold the same parameters: the second must not get the first's graph."""
    cfgs = [_cfg(attention={"kind": k}) for k in ("full", "linear")]
    specs = [task_spec(t) for t in cfgs[0].tasks]
    models = []
    for c in cfgs:
        torch.manual_seed(0)
        models.append(build_model(c, specs).eval())
    assert all(torch.equal(a, b) for a, b in zip(models[0].state_dict().values(), models[1].state_dict().values()))
    x, mask = example_inputs(specs[0], 1)
    g = [onnxrt.graphs(m, specs[0].name, x, mask, 32)[0] for m in models]
    assert g[0] != g[1]


def test_a_graph_that_differs_from_pytorch_is_not_measured(monkeypatch):
    cfg = _cfg()
    specs = [task_spec(t) for t in cfg.tasks]
    model = build_model(cfg, specs)
    real = onnxrt.export_graph

    def wrong(model, task, x, mask):  # the graph of another model
        other = build_model(cfg, specs)
        with torch.no_grad():
            for p in other.parameters():
                p.add_(1.0)
        return real(other, task, x, mask)

    monkeypatch.setattr(onnxrt, "export_graph", wrong)
    onnxrt.clear_cache()
    with pytest.raises(onnxrt.OrtUnsupported, match="does not match PyTorch"):
        measure_model(model, specs, cfg.deploy)


def test_untraceable_family_fails_its_trial_and_the_search_goes_on(tmp_path, repo, monkeypatch):
    """A model torch.export cannot trace (every built-in family traces: torch.export is made to
    fail for the second trial, as it fails on data-dependent control flow): the trial is failed
    with the reason, the others complete."""
    from autoeff import run_search

    real = torch.export.export
    calls = []

    def export(module, args, **kw):
        calls.append(1)
        if len(calls) == 2:  # as torch.export fails on data-dependent control flow
            raise RuntimeError("Could not guard on data-dependent expression u0")
        return real(module, args, **kw)

    monkeypatch.setattr(torch.export, "export", export)
    onnxrt.clear_cache()
    res = run_search(str(repo / "search_spaces" / "smoke.yaml"),
                     ["search.n_trials=3", "search.sampler=random", f"search.storage=sqlite:///{tmp_path}/s.db",
                      f"search.artifacts={tmp_path}/art", "train.max_steps=2", "deploy.runtime=onnxruntime"],
                     quiet=True, track=False)
    statuses = [r.status for r in res.records]
    assert statuses.count("failed") == 1 and statuses.count("complete") == 2, [(r.status, r.reason) for r in res.records]
    failed = next(r for r in res.records if r.status == "failed")
    assert "cannot run in onnxruntime: torch.export could not trace it" in failed.reason
    assert "data-dependent" in failed.reason
    for r in res.records:
        if r.status == "complete":
            assert r.metrics["ort_threads"] == 1.0 and math.isfinite(r.metrics["latency_ms"])
            assert r.metrics["measure_readings"] == 2.0


def test_reference_model_is_measured_under_the_same_runtime(repo, monkeypatch):
    """A relative budget's reference goes through the same protocol: two readings in onnxruntime."""
    from autoeff.search import objective
    from autoeff.search.space import load_space

    space = load_space(str(repo / "search_spaces" / "smoke.yaml"), ["deploy.runtime=onnxruntime"])
    calls = []
    real = onnxrt.measure_ort

    def spy(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(onnxrt, "measure_ort", spy)
    ref = objective.measure_reference(space)
    assert len(calls) == objective.MEASURE_READINGS and ref["readings"] == objective.MEASURE_READINGS
    assert ref["config"]["deploy"]["runtime"] == "onnxruntime" and math.isfinite(ref["metrics"]["latency_ms"])


def test_a_refusal_is_traced_once_and_named(monkeypatch):
    cfg = _cfg(attention={"kind": "linformer", "linformer": {"rank": 8}})
    specs = [task_spec(t) for t in cfg.tasks]
    model = build_model(cfg, specs)
    calls = []

    def export(*a, **k):
        calls.append(1)
        raise RuntimeError("Could not guard on data-dependent expression u0")

    monkeypatch.setattr(torch.export, "export", export)
    x, mask = example_inputs(specs[0], 1)
    msgs = set()
    for bits in (32, 32, 8):
        with pytest.raises(onnxrt.OrtUnsupported) as e:
            onnxrt.measure_ort(model, specs[0].name, x, mask, threads=1, warmup=0, repeats=1, bits=bits)
        msgs.add(str(e.value))
    assert len(calls) == 1 and len(msgs) == 1
    assert msgs.pop().startswith("family linformer cannot run in onnxruntime: torch.export could not trace it")
