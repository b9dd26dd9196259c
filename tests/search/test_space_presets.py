"""Presets (extends:): null removes a dimension the parent searches."""
import textwrap

from autoeff import load_space


def test_null_removes_an_inherited_dimension(tmp_path):
    (tmp_path / "parent.yaml").write_text(textwrap.dedent("""
        tasks: [{kind: listops, seq_len: 64, min_len: 8, n_train: 8, n_val: 4, n_test: 4}]
        space:
          model.width: [16, 32]
          compress.bits: [32, 8]
        objectives: {accuracy: max}
    """))
    (tmp_path / "child.yaml").write_text("extends: parent.yaml\nspace: {compress.bits: null}\n")
    assert [d.name for d in load_space(tmp_path / "parent.yaml").dims] == ["model.width", "compress.bits"]
    assert [d.name for d in load_space(tmp_path / "child.yaml").dims] == ["model.width"]


def test_the_oneshot_default_searches_the_default_less_what_a_supernet_cannot(repo):
    std = load_space(repo / "search_spaces" / "longseq.yaml")
    one = load_space(repo / "search_spaces" / "longseq_oneshot.yaml")
    assert [d.name for d in one.dims] == [d.name for d in std.dims if d.name != "compress.bits"]
    assert {"compress.bits", "attention.layers.0.reformer.n_hashes"} <= {d.name for d in std.dims}
