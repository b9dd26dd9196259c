"""Checking a space tries tens of candidates over the same tasks: inside ``load_space`` a user-data
task's files are walked and hashed once (``files_unchanged``), outside it every scan looks again."""
from autoeff import load_space
from autoeff.tasks import userdata
from autoeff.tasks.lm_text import LMText

SPACE = """name: scope
tasks:
  - {kind: lm_text, path: %s, seq_len: 32, n_train: 8, n_val: 2, n_test: 2}
model: {arch: decoder, depth: 2, width: 32, heads: 2}
attention: {per_layer: true}
space:
  attention.kind: [full, sliding_window, gated_deltanet]
  attention.sliding_window.window: [8, 16]
objectives: {bpb: min, decode_ms: min}
"""


def test_one_walk_of_the_files_per_space_check_and_a_fresh_one_after(tmp_path, monkeypatch):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(6):
        (corpus / f"d{i}.txt").write_text(f"document {i} " * 20)
    f = tmp_path / "scope.yaml"
    f.write_text(SPACE % corpus)
    calls = []
    real = LMText.fingerprint.__func__
    monkeypatch.setattr(LMText, "fingerprint", classmethod(lambda cls, o: calls.append(1) or real(cls, o)))
    load_space(f)  # every combination of three families over two layers is tried
    assert len(calls) == 1
    assert userdata._FROZEN is None  # the scope ends with the call
    opts = LMText.options(path=str(corpus), seq_len=32, n_train=8, n_val=2, n_test=2)
    assert len(LMText.scan(opts).names) == 6
    (corpus / "d6.txt").write_text("a new document " * 20)  # outside the scope, an added file is seen
    assert len(LMText.scan(opts).names) == 7
    load_space(f)
    assert len(calls) == 4  # two scans above, one more space check
