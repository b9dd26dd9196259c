"""`autoeff generate`: a decoder checkpoint as `autoeff train` writes it, continued from a text
prompt; bad input is one line and exit 2."""
import subprocess

import pytest
import torch

import autoeff
from autoeff.attention import get_attention
from autoeff.cli import main
from autoeff.config import load_config, save_config
from autoeff.training.generate import decode_ids, encode_text
from autoeff.training.run import save_checkpoint

DECODER = """model: {arch: decoder, depth: 1, width: 32, heads: 4, dropout: 0.0}
attention: {kind: full}
tasks: [{kind: lm_text, path: CORPUS, seq_len: 32}]
"""


@pytest.fixture
def trained(tmp_path):
    """A decoder's config.yaml + model.pt in one folder, as `autoeff train --out` leaves them."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(4):
        (corpus / f"d{i}.txt").write_text("hello world. " * 20)
    src = tmp_path / "dec.yaml"
    src.write_text(DECODER.replace("CORPUS", str(corpus)))
    cfg = load_config(src)
    run = tmp_path / "run"
    run.mkdir()
    model = autoeff.build_model(cfg)
    save_checkpoint(model, cfg, run / "model.pt")
    save_config(cfg, run / "config.yaml")
    return run, model


def test_generate_prints_the_greedy_continuation(trained, capsys):
    run, model = trained
    rc = main(["generate", "--config", str(run / "config.yaml"), "--prompt", "hello", "--max-new-tokens", "12"])
    out, err = capsys.readouterr()
    assert rc == 0
    want = model.eval().generate(torch.tensor(encode_text("hello")), 12)
    assert out == "hello" + decode_ids(want.tolist()) + "\n"
    assert "12 tokens" in err and "tokens/s" in err


def test_generate_sampling_is_seeded_and_ids_work(trained, capsys):
    run, model = trained
    args = ["generate", "--config", str(run / "config.yaml"), "--checkpoint", str(run / "model.pt"),
            "--max-new-tokens", "10", "--temperature", "1.0", "--top-k", "20"]
    outs = []
    for seed in ("1", "1", "2"):
        assert main([*args, "--prompt", "hel", "--seed", seed]) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1] != outs[2]
    assert main([*args, "--prompt-ids", "105 102", "--seed", "1"]) == 0
    ids = capsys.readouterr().out.split()
    assert ids[:2] == ["105", "102"] and len(ids) == 12


def one_error_line(capsys, *needles):
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("autoeff: error:") and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], lines[0]


def test_no_checkpoint(trained, capsys):
    run, _ = trained
    (run / "model.pt").unlink()
    assert main(["generate", "--config", str(run / "config.yaml"), "--prompt", "hi", "--max-new-tokens", "3"]) == 2
    one_error_line(capsys, "--checkpoint", "model.pt", "autoeff train")


def test_an_encoder_config(tmp_path, capsys):
    p = tmp_path / "enc.yaml"
    p.write_text("model: {depth: 1, width: 16, heads: 2}\ntasks: [{kind: listops, seq_len: 32, min_len: 8}]\n")
    assert main(["generate", "--config", str(p), "--prompt", "hi", "--max-new-tokens", "3"]) == 2
    one_error_line(capsys, "model.arch", "encoder", "decoder")


def test_a_prompt_longer_than_a_fixed_length_family_allows(trained, capsys, monkeypatch):
    run, _ = trained
    monkeypatch.setattr(get_attention("full"), "needs_fixed_length", True)  # a fixed-length causal family
    args = ["generate", "--config", str(run / "config.yaml"), "--max-new-tokens", "10"]
    assert main([*args, "--prompt", "x" * 23]) == 0  # 23 + 10 - 1 = 32 tokens: fits
    capsys.readouterr()
    assert main([*args, "--prompt", "x" * 24]) == 2
    one_error_line(capsys, "--prompt", "24 tokens", "32")


def test_the_real_command_line(trained, autoeff_cmd):
    run, _ = trained
    ok = subprocess.run([*autoeff_cmd, "generate", "--config", str(run / "config.yaml"), "--prompt", "hello",
                         "--max-new-tokens", "5"], capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0 and ok.stdout.startswith("hello") and "tokens/s" in ok.stderr, ok.stderr
    bad = subprocess.run([*autoeff_cmd, "generate", "--config", str(run / "config.yaml"), "--checkpoint",
                          str(run / "nope.pt"), "--prompt", "hi"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "--checkpoint" in bad.stderr
