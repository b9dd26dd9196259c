"""`autoeff export --onnx`: every family (Longformer and Reformer through their traceable
formulations, attention/_traceable.py), hybrid and decoder prefill graph is written to ONNX and
onnxruntime reproduces the eager PyTorch model within the stated tolerance; a graph that cannot
be traced or translated says why."""
from __future__ import annotations

import pytest
import torch

import autoeff
from autoeff.config import parse_run_config
from autoeff.export.onnx import ExportError, export_onnx
from autoeff.measure.onnx_graph import DECOMPOSITIONS, solve_triangular
from autoeff.model import build_model
from autoeff.tasks import load_task
from autoeff.training.run import train_and_evaluate

pytest.importorskip("onnxruntime")

EXPORTS = {"full": {}, "linformer": {"rank": 16}, "synthesizer": {"mode": "dense", "mix": True},
           "linear": {"feature_map": "favor", "features": 16}, "sliding_window": {"window": 8},
           # their traceable formulations (attention/_traceable.py), entered by the exporter
           "longformer": {"window": 8, "global_tokens": 2, "dilation": 2},
           "reformer": {"bucket_size": 8, "n_hashes": 2}}
# decoders: the graph is the prefill pass (token ids and mask in, logits (B, N, V) out)
DECODER_EXPORTS = {"full": {"kv_heads": 2}, "sliding_window": {"window": 8},
                   "longformer": {"window": 8, "global_tokens": 2}, "reformer": {"bucket_size": 8, "n_hashes": 2},
                   "linear": {"feature_map": "favor", "features": 16}, "synthesizer": {"mode": "dense"},
                   # its chunk's triangular solve as fixed-step forward substitution (onnx_graph.solve_triangular)
                   "gated_deltanet": {"chunk_size": 8}}


def _trained(tmp_path, kind, opts, compress):
    cfg = parse_run_config({"model": {"width": 64, "heads": 4, "depth": 1, "dropout": 0.0},
                            "attention": {"kind": kind, **({kind: opts} if opts else {})},
                            "tasks": [{"kind": "listops", "seq_len": 32, "min_len": 8, "max_depth": 3,
                                       "n_train": 256, "n_val": 32, "n_test": 16}],
                            "train": {"max_steps": 20, "lr": 3e-3, "warmup_steps": 2},
                            "deploy": {"batch_size": 4}, "compress": compress})
    model = build_model(cfg)  # fp32; train_and_evaluate compresses it as configured
    train_and_evaluate(model, [load_task(t) for t in cfg.tasks], cfg)
    path = tmp_path / f"{kind}.pt"
    torch.save({"state_dict": model.state_dict()}, path)
    return cfg, str(path)


def test_every_family_is_classified():
    from autoeff.attention import get_attention

    names = set(autoeff.list_attentions())
    causal_only = {k for k in names if get_attention(k).causal_only}  # decoders only: classified below
    assert set(EXPORTS) | causal_only == names, "classify the new family here"
    causal = {k for k in names if get_attention(k).supports_causal}
    assert causal == set(DECODER_EXPORTS), "classify the new causal family here"


def _decoder(tmp_path, kind, opts):
    cfg = parse_run_config({"model": {"arch": "decoder", "width": 32, "heads": 4, "depth": 1, "dropout": 0.0},
                            "attention": {"kind": kind, kind: opts},
                            "tasks": [{"kind": "mqar", "seq_len": 32, "n_pairs": 4, "vocab": 64,
                                       "n_train": 64, "n_val": 16, "n_test": 16}],
                            "deploy": {"batch_size": 2}})
    path = tmp_path / f"{kind}.pt"
    torch.save({"state_dict": build_model(cfg).state_dict()}, path)
    return cfg, str(path)


@pytest.mark.parametrize("kind", sorted(DECODER_EXPORTS))
def test_decoder_prefill_graph_exports_and_onnxruntime_matches_pytorch(tmp_path, kind):
    cfg, ckpt = _decoder(tmp_path, kind, DECODER_EXPORTS[kind])
    report = export_onnx(cfg, ckpt, str(tmp_path / "model.yaml"))
    fp32 = report.files[0]
    assert fp32.precision == "fp32" and fp32.ok and fp32.max_abs_diff < 1e-4, fp32


def test_the_exported_file_is_the_graph_onnxruntime_measures(tmp_path):
    """One graph builder (measure/onnx_graph.py): ``export --onnx``'s files are byte for byte the
    graphs ``deploy.runtime: onnxruntime`` measures, fp32 and int8, here for a traceable-form family."""
    from autoeff.compress import build_deployed
    from autoeff.config import task_spec
    from autoeff.measure import onnxrt

    cfg = parse_run_config({"model": {"width": 32, "heads": 2, "depth": 1, "dropout": 0.0},
                            "attention": {"kind": "longformer", "longformer": {"window": 8, "global_tokens": 1}},
                            "tasks": [{"kind": "listops", "seq_len": 32, "min_len": 8, "max_depth": 3,
                                       "n_train": 8, "n_val": 8, "n_test": 8}],
                            "deploy": {"batch_size": 2}, "compress": {"bits": 8}})
    torch.manual_seed(0)
    model = build_deployed(cfg).eval()
    path = tmp_path / "lf.pt"
    torch.save({"state_dict": model.state_dict()}, path)
    report = export_onnx(cfg, str(path), str(tmp_path / "model.yaml"), examples=4)
    assert [f.precision for f in report.files] == ["fp32", "int8"] and all(f.ok for f in report.files), report.files
    from autoeff.model import example_inputs

    x, mask = example_inputs(task_spec(cfg.tasks[0]), 2)
    onnxrt.clear_cache()
    fp32, g8 = onnxrt.graphs(model, task_spec(cfg.tasks[0]).name, x, mask, 8)
    assert _graph(((tmp_path / "model.onnx").read_bytes())) == _graph(fp32)
    assert _graph((tmp_path / "model.int8.onnx").read_bytes()) == _graph(g8)


def _graph(serialized: bytes) -> bytes:
    """The computation of an ONNX model: its graph without the exporter's metadata (which records
    e.g. the trace's symbol names)."""
    import onnx

    m = onnx.load_from_string(serialized)
    del m.metadata_props[:]
    del m.graph.metadata_props[:]
    for n in m.graph.node:
        del n.metadata_props[:]
    return m.graph.SerializeToString()


def test_a_graph_that_cannot_be_traced_or_translated_says_why(tmp_path, monkeypatch):
    cfg, ckpt = _decoder(tmp_path, "full", {})

    def refuse(*a, **k):
        raise RuntimeError("Could not guard on data-dependent expression")

    monkeypatch.setattr(torch.export, "export", refuse)
    with pytest.raises(ExportError) as e:
        export_onnx(cfg, ckpt, str(tmp_path / "model.yaml"))
    assert "attention family 'full' cannot be exported to ONNX" in str(e.value)
    assert "torch.export could not trace it (RuntimeError: Could not guard" in str(e.value)
    assert not (tmp_path / "model.onnx").exists()


@pytest.mark.parametrize("upper", [False, True])
@pytest.mark.parametrize("left", [True, False])
@pytest.mark.parametrize("unit", [True, False])
def test_forward_substitution_solves_what_torch_solves(upper, left, unit):
    g = torch.Generator().manual_seed(0)
    n = 16
    A = torch.randn(3, 2, n, n, generator=g) * 0.3 + 2 * torch.eye(n)
    A = A.triu() if upper else A.tril()
    B = torch.randn(3, 2, n, 5, generator=g) if left else torch.randn(3, 2, 5, n, generator=g)
    want = torch.linalg.solve_triangular(A, B, upper=upper, left=left, unitriangular=unit)
    got = solve_triangular(A, B, upper=upper, left=left, unitriangular=unit)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_gated_deltanet_graph_matches_the_eager_kernel_at_deployment_length():
    """The decomposed graph (its triangular solves as forward substitution), run in PyTorch at
    length 1024 with the default chunk size, against the eager chunkwise kernel."""
    from autoeff.attention import get_attention

    fam = get_attention("gated_deltanet")
    torch.manual_seed(0)
    m = fam(32, 2, fam.options(), max_len=1024).eval()
    x = torch.randn(2, 1024, 32)
    mask = torch.ones(2, 1024, dtype=torch.bool)
    mask[1, 900:] = False
    prog = torch.export.export(m, (x, mask), strict=False).run_decompositions(DECOMPOSITIONS)
    assert "linalg_solve_triangular" not in str(prog.graph)
    with torch.no_grad():
        torch.testing.assert_close(prog.module()(x, mask)[mask], m(x, mask)[mask], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", sorted(EXPORTS))
def test_family_exports_and_onnxruntime_matches_pytorch(tmp_path, kind):
    cfg, ckpt = _trained(tmp_path, kind, EXPORTS[kind], {"bits": 8})
    report = export_onnx(cfg, ckpt, str(tmp_path / "model.yaml"))
    fp32, int8 = report.files
    assert fp32.precision == "fp32" and fp32.path.endswith("model.onnx") and fp32.ok, fp32
    assert int8.precision == "int8" and int8.path.endswith("model.int8.onnx")
    assert int8.size_bytes < fp32.size_bytes  # the linear weights are stored as int8
    # int8 activations are quantized at run time: close (the stated tolerance), not equal
    assert int8.ok and int8.max_abs_diff > fp32.max_abs_diff, int8
    assert any("stored at 8 bits" in n for n in report.notes)


def test_hybrid_of_the_traceable_families_exports_at_deployment_length(tmp_path):
    """A hybrid (one family per layer) of the two families with an export-only formulation, at a
    deployment length (1024, padded examples) and 4 bits (the fp32 file holds the dequantized
    weights): onnxruntime against the fast eager kernels, fp32 and int8."""
    cfg = parse_run_config({"model": {"width": 16, "heads": 2, "depth": 2, "dropout": 0.0},
                            "attention": {"layers": [
                                {"kind": "longformer", "longformer": {"window": 64, "global_tokens": 1}},
                                {"kind": "reformer", "reformer": {"bucket_size": 32, "n_hashes": 2}}]},
                            "tasks": [{"kind": "listops", "seq_len": 1024, "min_len": 100, "max_depth": 10,
                                       "n_train": 8, "n_val": 8, "n_test": 8}],
                            "deploy": {"batch_size": 4}, "compress": {"bits": 4}})
    from autoeff.compress import build_deployed

    path = tmp_path / "hybrid.pt"
    torch.save({"state_dict": build_deployed(cfg).state_dict()}, path)
    report = export_onnx(cfg, str(path), str(tmp_path / "model.yaml"), examples=8)
    assert [f.precision for f in report.files] == ["fp32", "int8"]
    assert all(f.ok for f in report.files), report.files
