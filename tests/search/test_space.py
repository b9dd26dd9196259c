"""The space file: parsing, conditional dimensions, and clean errors for malformed files."""
import copy
import random
import subprocess

import pytest
import yaml

from autoeff.errors import ConfigError
from autoeff.search.space import load_space

BASE = {
    "name": "t",
    "tasks": [{"kind": "listops", "seq_len": 64, "min_len": 8, "n_train": 10, "n_val": 5, "n_test": 5}],
    "space": {
        "model": {"depth": {"type": "int", "low": 1, "high": 3}, "width": [32, 64], "heads": [2, 4]},
        "attention.kind": ["full", "linformer"],
        "attention.linformer.rank": {"type": "int", "low": 8, "high": 32, "log": True},
        "train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
    },
    "constraints": ["latency_ms <= 50"],
    "search": {"n_trials": 3},
}


def write(tmp_path, doc, name="space.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(doc, sort_keys=False) if not isinstance(doc, str) else doc)
    return p


class RandomSuggest:
    def __init__(self, seed):
        self.r = random.Random(seed)

    def categorical(self, name, choices):
        return self.r.choice(choices)

    def int(self, name, low, high, *, log, step):
        return self.r.randint(low, high)

    def float(self, name, low, high, *, log, step):
        return self.r.uniform(low, high)


def test_parses_dims_objectives_and_conditions(tmp_path):
    s = load_space(write(tmp_path, BASE))
    names = [d.name for d in s.dims]
    assert names[:4] == ["model.depth", "model.width", "model.heads", "attention.kind"]
    rank = next(d for d in s.dims if d.name == "attention.linformer.rank")
    assert rank.when == {"attention.kind": ("linformer",)} and rank.log
    assert [o.name for o in s.objectives] == ["accuracy", "latency_ms", "peak_memory_mb"]
    assert s.directions == ["maximize", "minimize", "minimize"]
    assert s.constraints[0].violation({"latency_ms": 60}) == pytest.approx(10)
    assert s.constraints[0].violation({"latency_ms": 40}) < 0


def test_conditional_dimension_only_under_its_parent(tmp_path):
    s = load_space(write(tmp_path, BASE))
    seen = set()
    for seed in range(40):
        p = s.sample(RandomSuggest(seed))
        seen.add(p["attention.kind"])
        assert ("attention.linformer.rank" in p) == (p["attention.kind"] == "linformer")
        cfg = s.materialize(p)
        assert cfg.attention.kind == p["attention.kind"]
        if cfg.attention.kind == "linformer":
            assert cfg.attention.options_for().rank == p["attention.linformer.rank"]
        assert cfg.train.lr == pytest.approx(p["train.lr"])
    assert seen == {"full", "linformer"}


def test_explicit_when_and_overrides(tmp_path):
    doc = copy.deepcopy(BASE)
    doc["space"]["model"]["ffn_mult"] = {"type": "float", "low": 1.0, "high": 4.0, "when": {"model.depth": [1]}}
    s = load_space(write(tmp_path, doc), ["search.n_trials=8", "train.max_steps=7"])
    assert s.search.n_trials == 8
    assert s.materialize(s.sample(RandomSuggest(0))).train.max_steps == 7
    assert any(d.name == "model.ffn_mult" and d.when == {"model.depth": (1,)} for d in s.dims)
    for seed in range(20):
        p = s.sample(RandomSuggest(seed))
        assert ("model.ffn_mult" in p) == (p["model.depth"] == 1)


def _mutations():
    """(description, mutate(doc) or raw text, expected words in the message)."""

    def m(fn):
        def apply(d):
            d = copy.deepcopy(d)
            fn(d)
            return d

        return apply

    return [
        ("unknown top-level key", m(lambda d: d.update(serach={})), ["serach", "allowed"]),
        ("unknown attention", m(lambda d: d["space"].update({"attention.kind": ["full", "linfomer"]})), ["attention.kind", "linfomer", "linformer"]),
        ("unknown family block", m(lambda d: d["space"].update({"attention.bogus.x": [1, 2]})), ["bogus"]),
        ("wrong type in fixed part", m(lambda d: d.update(train={"max_steps": "many"})), ["train.max_steps", "many"]),
        ("unknown train key", m(lambda d: d.update(train={"max_stepz": 3})), ["train.max_stepz", "max_steps"]),
        ("heads not dividing width", m(lambda d: d["space"]["model"].update(heads=[3, 4])), ["model.heads", "3"]),
        ("low above high", m(lambda d: d["space"]["model"].update(depth={"type": "int", "low": 4, "high": 2})), ["model.depth.low", "4"]),
        ("log with non-positive low", m(lambda d: d["space"].update({"train.lr": {"type": "float", "low": 0.0, "high": 1.0, "log": True}})), ["train.lr", "log"]),
        ("bad dim type", m(lambda d: d["space"]["model"].update(depth={"type": "integer", "low": 1, "high": 2})), ["integer", "categorical"]),
        ("rank longer than sequence", m(lambda d: d["space"].update({"attention.linformer.rank": {"type": "int", "low": 8, "high": 512}})), ["attention.linformer.rank", "512"]),
        ("unknown objective", m(lambda d: d.update(objectives={"acuracy": "max"})), ["acuracy", "accuracy"]),
        ("bad direction", m(lambda d: d.update(objectives={"accuracy": "up"})), ["direction", "up"]),
        ("bad constraint", m(lambda d: d.update(constraints=["latency_ms about 5"])), ["constraints[0]", "latency_ms about 5"]),
        ("unknown sampler", m(lambda d: d.update(search={"sampler": "cmaes"})), ["search.sampler", "cmaes", "tpe"]),
        ("unknown task", m(lambda d: d.update(tasks=[{"kind": "lisops"}])), ["lisops", "listops"]),
        ("bad task option", m(lambda d: d.update(tasks=[{"kind": "listops", "seq_len": -4}])), ["seq_len", "-4"]),
        ("empty categorical", m(lambda d: d["space"]["model"].update(width=[])), ["model.width"]),
        ("dimension outside the config", m(lambda d: d["space"].update({"tasks.seq_len": [1, 2]})), ["tasks.seq_len"]),
        ("condition on unknown dim", m(lambda d: d["space"]["model"].update(ffn_mult={"type": "float", "low": 1, "high": 2, "when": {"model.deep": [1]}})), ["model.deep"]),
        ("bad export override", m(lambda d: d.update(export={"train": {"max_stepz": 5}})), ["export.train.max_stepz"]),
        ("aggregate conflict", m(lambda d: d.update(train={"aggregate": "min"}, objectives={"accuracy": {"direction": "max", "aggregate": "mean"}})),
         ["train.aggregate", "objectives.accuracy.aggregate"]),
        ("no dimensions", m(lambda d: d.pop("space")), ["nothing to search", "'space'"]),
        ("empty space section", m(lambda d: d.update(space={})), ["nothing to search"]),
        ("empty file", "", ["nothing to search"]),
        ("only a comment", "# a search space, some day\n", ["nothing to search"]),
        ("relative constraint without a reference", m(lambda d: d.update(constraints=["latency_ms <= 0.5 * reference"])),
         ["constraints[0]", "reference:"]),
        ("relative constraint on accuracy", m(lambda d: d.update(constraints=["accuracy >= 0.9 * reference"],
                                                                   reference={"attention": {"kind": "full"}})),
         ["constraints[0]", "accuracy", "latency_ms"]),
        ("zero factor", m(lambda d: d.update(constraints=["latency_ms <= 0 * reference"],
                                             reference={"attention": {"kind": "full"}})), ["constraints[0]", "> 0"]),
        ("two numbers", m(lambda d: d.update(constraints=["latency_ms <= 2 * 3"])), ["constraints[0]", "2 * 3"]),
        ("reference sets training", m(lambda d: d.update(reference={"train": {"max_steps": 3}})),
         ["reference.train", "model"]),
        ("impossible reference", m(lambda d: d.update(reference={"model": {"width": 64, "heads": 3}})),
         ["reference.model.heads", "3"]),
        ("reference not a mapping", m(lambda d: d.update(reference="full")), ["reference", "full"]),
        ("extends a missing file", m(lambda d: d.update(extends="nowhere.yaml")), ["extends", "nowhere.yaml"]),
        ("extends itself", m(lambda d: d.update(extends="space.yaml")), ["extends", "cycle"]),
        ("not YAML", "name: [unclosed\n  - : :\n", ["YAML"]),
        ("not a mapping", "- just\n- a list\n", ["mapping"]),
    ]


@pytest.mark.parametrize("desc,mutate,words", _mutations(), ids=[m[0] for m in _mutations()])
def test_malformed_space_gives_one_clean_error(tmp_path, desc, mutate, words):
    doc = mutate if isinstance(mutate, str) else mutate(BASE)
    path = write(tmp_path, doc)
    with pytest.raises(ConfigError) as ei:
        load_space(path)
    msg = str(ei.value)
    assert str(path) in msg, msg
    for w in words:
        assert w in msg, (w, msg)


def test_longformer_window_longer_than_sequence_rejected(tmp_path):
    from autoeff.attention import list_attentions

    if "longformer" not in list_attentions():
        pytest.skip("longformer not registered")
    doc = copy.deepcopy(BASE)
    doc["space"]["attention.kind"] = ["full", "longformer"]
    del doc["space"]["attention.linformer.rank"]
    doc["space"]["attention.longformer.window"] = [16, 1024]
    with pytest.raises(ConfigError) as ei:
        load_space(write(tmp_path, doc))
    assert "attention.longformer.window" in str(ei.value) and "1024" in str(ei.value)


def test_cli_exit_2_without_traceback(tmp_path, autoeff_cmd):
    doc = copy.deepcopy(BASE)
    doc["space"]["attention.kind"] = ["full", "linfomer"]
    path = write(tmp_path, doc)
    for cmd in (["validate", "--space", str(path)], ["search", "--space", str(path)],
                ["search", "--space", str(tmp_path / "missing.yaml")],
                ["search", "--space", str(write(tmp_path, BASE, "ok.yaml")), "search.n_trials=zero"]):
        r = subprocess.run(autoeff_cmd + cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120)
        assert r.returncode == 2, (cmd, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr
        lines = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("autoeff: error:")]
        assert len(lines) == 1, r.stderr


def test_every_shipped_space_parses_and_samples(repo):
    # experiments also ship study configs that are not space files (experiments/compression/config.yaml)
    studies = [f for f in sorted((repo / "experiments").glob("*/*.yaml")) if "space" in yaml.safe_load(f.read_text())]
    files = sorted((repo / "search_spaces").glob("*.yaml")) + studies
    assert studies
    assert any(f.name == "longseq.yaml" for f in files) and any(f.name == "smoke.yaml" for f in files)
    for f in files:
        s = load_space(f)
        for seed in range(10):
            cfg = s.materialize(s.sample(RandomSuggest(seed)))
            assert cfg.model.width % cfg.model.heads == 0


@pytest.mark.parametrize("key,content", [
    ("search.storage", b"this is not a database, just text\n"),
    ("search.mlflow_uri", b"\x00\x01garbage"),
])
def test_a_store_that_is_not_a_database_is_refused_and_left_alone(tmp_path, autoeff_cmd, key, content):
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(content)
    space = write(tmp_path, BASE)
    r = subprocess.run(autoeff_cmd + ["search", "--space", str(space), f"{key}=sqlite:///{garbage}"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("autoeff: error:")]
    assert len(lines) == 1 and "not an SQLite database" in lines[0] and key in lines[0], r.stderr
    assert garbage.read_bytes() == content  # not modified


def test_a_database_of_something_else_is_refused(tmp_path):
    import sqlite3

    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("create table invoices (id integer)")
    con.commit()
    con.close()
    before = other.read_bytes()
    with pytest.raises(ConfigError, match="invoices"):
        load_space(write(tmp_path, BASE), [f"search.storage=sqlite:///{other}"])
    assert other.read_bytes() == before


def test_the_accuracy_objective_sets_how_trials_aggregate(tmp_path):
    doc = copy.deepcopy(BASE)
    doc["objectives"] = {"accuracy": {"direction": "max", "aggregate": "min"}, "latency_ms": "min"}
    s = load_space(write(tmp_path, doc))
    assert s.materialize(s.sample(RandomSuggest(0))).train.aggregate == "min"


def test_a_relative_constraint_takes_its_bound_from_the_reference(tmp_path):
    doc = copy.deepcopy(BASE)
    doc["constraints"] = ["latency_ms <= 0.5 * reference", "peak_memory_mb < reference", "latency_ms <= 50"]
    doc["reference"] = {"attention": {"kind": "full"}, "model": {"depth": 1, "width": 64, "heads": 4}}
    s = load_space(write(tmp_path, doc))
    half, mem, plain = s.constraints
    assert (half.factor, mem.factor, plain.factor) == (0.5, 1.0, None)
    assert not half.resolved and plain.resolved and half.label == "latency_ms <= 0.5 * reference"
    with pytest.raises(RuntimeError, match="not been measured"):
        half.violation({"latency_ms": 1.0})
    ref = s.reference_config()
    assert (ref.model.depth, ref.model.width, ref.model.heads, ref.attention.kind) == (1, 64, 4, "full")
    s.resolve_reference({"latency_ms": 8.0, "peak_memory_mb": 3.0})
    assert half.bound == pytest.approx(4.0) and mem.bound == pytest.approx(3.0) and plain.bound == 50
    assert half.violation({"latency_ms": 5.0}) == pytest.approx(1.0)
    assert half.satisfied({"latency_ms": 4.0}) and not mem.satisfied({"peak_memory_mb": 3.0})
    assert half.label == "latency_ms <= 0.5 * reference (= 4)"


def test_extends_merges_a_preset_over_its_parent(tmp_path):
    parent = copy.deepcopy(BASE)
    parent["search"] = {"n_trials": 3, "sampler": "random", "early_stopping": {"rungs": [0.5], "eta": 2}}
    parent["train"] = {"max_steps": 40, "batch_size": 8}
    write(tmp_path, parent, "parent.yaml")
    child = {"extends": "parent.yaml", "search": {"n_trials": 9, "early_stopping": None},
             "train": {"max_steps": 5}, "space": {"model": {"width": [64]}}}
    (tmp_path / "sub").mkdir()
    s = load_space(write(tmp_path / "sub", {**child, "extends": "../parent.yaml"}, "child.yaml"))
    assert s.name == "child"  # a preset is named by its own file, not its parent's name
    assert s.search.n_trials == 9 and s.search.sampler == "random" and s.search.early_stopping is None
    cfg = s.materialize(s.sample(RandomSuggest(0)))
    assert cfg.train.max_steps == 5 and cfg.train.batch_size == 8  # mappings merge key by key
    width = next(d for d in s.dims if d.name == "model.width")
    assert width.choices == (64,)  # lists are replaced
    assert [c.text for c in s.constraints] == ["latency_ms <= 50"]


def test_decoder_metrics_and_every_operator_are_accepted(tmp_path):
    """Objectives and constraints read the metric registry: the decoder figures of
    docs/decoders.md are one entry each, and a constraint takes every operator."""
    doc = copy.deepcopy(BASE)
    doc["objectives"] = {"bpb": "min", "decode_ms": "min", "tokens_per_s": {"direction": "max"}}
    doc["constraints"] = ["cache_mb <= 8", "prefill_ms < 0.5 * reference", "params == 1000", "bpb > 0.1"]
    doc["reference"] = {"attention": {"kind": "full"}}
    s = load_space(write(tmp_path, doc), check=False)
    assert [o.name for o in s.objectives] == ["bpb", "decode_ms", "tokens_per_s"]
    assert [o.aggregate for o in s.objectives] == ["mean", "max", "min"]  # the registry's defaults
    assert [c.op for c in s.constraints] == ["<=", "<", "==", ">"]
    assert s.constraints[1].factor == 0.5 and not s.constraints[1].resolved
    s.resolve_reference({"prefill_ms": 4.0})
    assert s.constraints[1].bound == pytest.approx(2.0)
    doc["constraints"] = ["bpb <= 0.5 * reference"]  # trained, not measured: never relative
    with pytest.raises(ConfigError, match="deployment figure"):
        load_space(write(tmp_path, doc), check=False)


@pytest.mark.parametrize("change,key,words", [
    ({"attention.kind": ["full", "linformer"]}, "space.attention.layers.0.kind", "a decoder needs a causal attention family"),
    ({"attention.full.kv_heads": [0, 3]}, "space.attention.layers.0.full.kv_heads", "must divide model.heads"),
])
def test_a_decoder_space_with_an_impossible_choice_fails_before_anything_runs(repo, tmp_path, change, key, words):
    """docs/decoders.md: a causal space that lists a non-causal family, or a kv_heads that does not
    divide heads, is one clear error when the space is read (exit 2 on the command line)."""
    doc = yaml.safe_load((repo / "search_spaces" / "smoke_lm.yaml").read_text())
    doc["space"].update(change)
    doc["space"]["model.heads"] = [2]
    with pytest.raises(ConfigError) as e:
        load_space(write(tmp_path, doc, "lm.yaml"))
    assert e.value.key == key and words in str(e.value)


def test_early_stopping_with_an_objective_known_only_after_training_is_refused(repo, tmp_path):
    """A rung's point holds the accuracy so far and the deployment figures: a bpb objective
    cannot be ranked there (it would fail every trial at its first rung)."""
    doc = yaml.safe_load((repo / "search_spaces" / "smoke_lm.yaml").read_text())
    doc["objectives"] = {"accuracy": "max", "bpb": "min", "decode_ms": "min"}
    doc["search"]["early_stopping"] = {"rungs": [0.3], "eta": 3}
    with pytest.raises(ConfigError) as e:
        load_space(write(tmp_path, doc, "lm.yaml"))
    assert e.value.key == "search.early_stopping" and "bpb is only known after training" in str(e.value)
    doc["objectives"] = {"accuracy": "max", "decode_ms": "min"}
    assert load_space(write(tmp_path, doc, "lm.yaml")).search.early_stopping is not None
