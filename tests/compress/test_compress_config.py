"""The compress section at the edge: bad values and impossible combinations are one ConfigError
naming the file, key, value and what is allowed; bits is a space dimension like any other."""
from __future__ import annotations

import subprocess
import sys

import pytest

from autoeff.config import parse_run_config
from autoeff.errors import ConfigError
from autoeff.search.space import load_space


@pytest.mark.parametrize("compress,key,allowed", [
    ({"bits": 5}, "compress.bits", "32, 16, 8, 4"),
    ({"half": "fp8"}, "compress.half", "bf16, fp16"),
    ({"prune": "random"}, "compress.prune", "none, structured, magnitude"),
    ({"qat": True}, "compress.qat", "False"),
    ({"bits": 16, "qat": True}, "compress.qat", "False"),
    ({"sparsity": 0.5}, "compress.sparsity", "0.0"),
    ({"prune": "structured"}, "compress.sparsity", "0 < sparsity"),
    ({"sparsity": 0.99, "prune": "magnitude"}, "compress.sparsity", None),
    ({"distill": True, "teacher": {"width": 100, "heads": 3}}, "compress.teacher.heads", "1, 2, 4"),
    ({"colour": 1}, "compress.colour", "bits"),
])
def test_bad_compress_values(compress, key, allowed):
    with pytest.raises(ConfigError) as e:
        parse_run_config({"compress": compress}, file="model.yaml")
    err = e.value
    assert err.file == "model.yaml" and err.key == key, str(err)
    if allowed:
        assert allowed in str(err), str(err)


def _space(tmp_path, space: str, extra: str = "") -> str:
    p = tmp_path / "s.yaml"
    p.write_text(f"""
tasks: [{{kind: listops, seq_len: 64, n_train: 64, n_val: 32, n_test: 32}}]
model: {{width: 32, heads: 2, depth: 1}}
{extra}
space:
{space}
search: {{storage: sqlite:///{tmp_path}/a.db, mlflow_uri: sqlite:///{tmp_path}/m.db}}
""")
    return str(p)


class _First:
    def categorical(self, name, choices):
        return choices[-1]

    def int(self, name, low, high, *, log, step):
        return low

    def float(self, name, low, high, *, log, step):
        return high


def test_bits_is_a_dimension_and_conditions_make_combinations_valid(tmp_path):
    space = load_space(_space(tmp_path, """  compress.bits: [32, 16, 8, 4]
  compress.qat: {choices: [false, true], when: {compress.bits: [8, 4]}}
  compress.prune: [none, structured]
  compress.sparsity: {type: float, low: 0.25, high: 0.5, when: {compress.prune: [structured, magnitude]}}
  compress.distill: [false, true]"""))
    params = space.sample(_First())
    assert params == {"compress.bits": 4, "compress.qat": True, "compress.prune": "structured",
                      "compress.sparsity": 0.5, "compress.distill": True}
    cfg = space.materialize(params)
    assert (cfg.compress.bits, cfg.compress.qat, cfg.compress.sparsity, cfg.compress.distill) == (4, True, 0.5, True)
    assert cfg.to_dict()["compress"]["bits"] == 4


def test_unconditioned_impossible_combination_is_reported_before_training(tmp_path):
    f = _space(tmp_path, "  compress.bits: [32, 8]\n  compress.qat: [false, true]")
    with pytest.raises(ConfigError) as e:
        load_space(f)
    assert e.value.key == "space.compress.qat" and "impossible combination" in str(e.value)


def test_cli_bad_bits_is_one_line_exit_2(tmp_path, autoeff_cmd):
    f = _space(tmp_path, "  compress.bits: [32, 3]")
    r = subprocess.run(autoeff_cmd + ["validate", "--space", f], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "compress.bits" in lines[0] and "(got 3)" in lines[0] and "32, 16, 8, 4" in lines[0], r.stderr
