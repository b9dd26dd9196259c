"""The real CLI on the smoke decoder space: search -> decoder figures in MLflow -> export -> train -> generate."""
import math
import subprocess

import pytest
import yaml

pytestmark = pytest.mark.slow

MIB = 2 ** 20


def run(cmd, cwd, timeout=600):
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{cmd}\nSTDOUT:\n{r.stdout}\nSTDERR:\n{r.stderr[-4000:]}"
    return r


def test_decoder_search_export_train_generate(tmp_path, repo, autoeff_cmd):
    space = str(repo / "search_spaces" / "smoke_lm.yaml")
    r = run(autoeff_cmd + ["search", "--space", space], tmp_path)
    assert "Pareto front" in r.stdout

    from autoeff.tracking import read_search

    store = read_search(f"sqlite:///{tmp_path / 'mlflow.db'}", "smoke_lm")
    trials = [t for t in store["trials"] if t.data.tags["status"] == "complete"]
    assert len(trials) == 4
    ctx = yaml.safe_load(open(space))["deploy"]["context_len"]
    seen_sliding = False
    for t in trials:
        m = t.data.metrics
        for k in ("bpb", "prefill_ms", "decode_ms", "tokens_per_s", "cache_mb", "cache_mb_analytic"):
            assert k in m, (k, sorted(m))
        # trained for real: below the 8 bits of a uniform guess over bytes
        assert m["bpb"] < 7.0
        assert m["tokens_per_s"] == pytest.approx(1000.0 / m["decode_ms"], rel=1e-6)  # deploy.batch_size 1
        assert m["cache_mb"] == pytest.approx(m["cache_mb_analytic"], rel=1e-3)
        p = t.data.params
        layers = [p[f"attention.layers.{i}.kind"] for i in range(2)]
        if all(k == "sliding_window" for k in layers):
            # a rolling buffer of `window` keys and values per layer (kv_heads = heads), whatever the context
            width = int(p["model.width"])
            windows = [int(p[f"attention.layers.{i}.sliding_window.window"]) for i in range(2)]
            expect = sum(2 * width * min(ctx, w) * 4 for w in windows) / MIB
            assert m["cache_mb"] == pytest.approx(expect, rel=1e-6), p
            seen_sliding = True
    assert seen_sliding  # the seeded smoke search proposes one all-sliding_window model (trial 3)

    run(autoeff_cmd + ["export", "--space", space, "--rule", "lowest bpb", "-o", "model.yaml"], tmp_path)
    doc = yaml.safe_load((tmp_path / "model.yaml").read_text())
    assert doc["model"]["arch"] == "decoder"
    run(autoeff_cmd + ["train", "--config", "model.yaml", "train.max_steps=20"], tmp_path)
    out = tmp_path / "runs" / "model"
    g = run(autoeff_cmd + ["generate", "--config", str(out / "config.yaml"), "--prompt", "import ",
                           "--max-new-tokens", "12", "--seed", "0"], tmp_path)
    assert g.stdout.startswith("import ")
    assert "tokens/s" in g.stderr
    rate = float(g.stderr.split("tokens/s")[0].split("(")[-1])
    assert math.isfinite(rate) and rate > 0
