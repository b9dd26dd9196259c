"""The decoder LM (docs/decoders.md section 3): cached decoding equals one causal pass for every
causal family and a hybrid, tied head, create_model, padding, generation, config validation."""
import dataclasses

import pytest
import torch

import autoeff
from autoeff.attention import get_attention, list_attentions
from autoeff.config import parse_run_config
from autoeff.errors import ConfigError
from autoeff.model import AutoEffModel, DecoderLM, example_inputs
from autoeff.tasks import task_spec

CAUSAL = [n for n in list_attentions() if get_attention(n).supports_causal]
#: small knobs so that short test sequences cross window / chunk / bucket boundaries
SMALL = {"window": 4, "chunk_size": 4, "chunk": 4, "bucket_size": 4}
TASK = {"kind": "mqar", "seq_len": 32, "n_pairs": 4, "vocab": 24, "n_train": 8, "n_val": 4, "n_test": 4}


def small_options(kind):
    names = {f.name for f in dataclasses.fields(get_attention(kind).options)}
    return {k: v for k, v in SMALL.items() if k in names}


def attention_section(kind):
    opts = small_options(kind)
    return {"kind": kind, **({kind: opts} if opts else {})}


def decoder_cfg(attention, depth=2, tasks=(TASK,), **model):
    m = {"arch": "decoder", "depth": depth, "width": 32, "heads": 4, "dropout": 0.0}
    m.update(model)
    return parse_run_config({"model": m, "attention": attention, "tasks": list(tasks)})


def hybrid():
    """Every causal family once, then full again: layers of different families in one stack."""
    kinds = CAUSAL + ["full"]
    return {"layers": [attention_section(k) for k in kinds]}, len(kinds)


CASES = [pytest.param(attention_section(k), 2, id=k) for k in CAUSAL] + [pytest.param(*hybrid(), id="hybrid")]


def test_there_is_a_causal_family():
    assert "full" in CAUSAL


@pytest.mark.parametrize("prompt", [1, 3, 4, 5, 9])
@pytest.mark.parametrize("attention,depth", CASES)
def test_prefill_then_decode_equals_one_causal_pass(attention, depth, prompt):
    torch.manual_seed(0)
    model = autoeff.create_model(decoder_cfg(attention, depth=depth)).eval()
    n = 13
    x = torch.randint(1, 24, (2, n))
    with torch.no_grad():
        want = model(x)  # (B, N, V)
        cache = model.init_cache(2)
        got = [model.forward_cached(x[:, :prompt], cache)]
        for i in range(prompt, n):
            got.append(model.forward_cached(x[:, i:i + 1], cache))
    got = torch.cat(got, 1)
    assert got.shape == want.shape == (2, n, 24)
    assert cache.length == n
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4), (got - want).abs().max()


@pytest.mark.parametrize("attention,depth", CASES)
def test_causal_future_tokens_change_nothing_before(attention, depth):
    model = autoeff.create_model(decoder_cfg(attention, depth=depth)).eval()
    x = torch.randint(1, 24, (2, 12))
    x2 = x.clone()
    x2[:, 7:] = torch.randint(1, 24, (2, 5))
    with torch.no_grad():
        a, b = model(x), model(x2)
    assert torch.allclose(a[:, :7], b[:, :7], atol=1e-5)
    assert not torch.allclose(a[:, 7:], b[:, 7:], atol=1e-3)


def test_cache_holds_every_layer_and_its_size_is_analytic():
    model = autoeff.create_model(decoder_cfg({"kind": "full"})).eval()
    cache = model.init_cache(3)
    with torch.no_grad():
        model.forward_cached(torch.randint(1, 24, (3, 10)), cache)
    assert len(cache.layers) == 2 and cache.length == 10
    nbytes = sum(t.numel() * t.element_size() for t in cache.tensors())
    assert nbytes == model.cache_bytes(3, 10, 4) > 0


def test_create_model_returns_a_decoder_and_rotary_is_set():
    model = autoeff.create_model(decoder_cfg({"kind": "full"}))
    assert isinstance(model, DecoderLM)
    assert all(b.attn.rotary is not None for b in model.encoder.blocks)
    assert model.encoder.blocks[0].attn.rotary.base == 10000.0
    enc = autoeff.create_model(parse_run_config({"model": {"depth": 1, "width": 16, "heads": 2},
                                                "tasks": [{"kind": "listops", "seq_len": 32, "min_len": 8, "n_train": 4}]}))
    assert isinstance(enc, AutoEffModel)
    # rope_base reaches the layers, and positions matter: a decoder is not a bag of tokens
    m2 = autoeff.create_model(decoder_cfg({"kind": "full"}, rope_base=500.0))
    assert m2.encoder.blocks[1].attn.rotary.base == 500.0


def test_rotary_makes_positions_matter():
    model = autoeff.create_model(decoder_cfg({"kind": "full"}, depth=1)).eval()
    x = torch.tensor([[5, 6, 7, 9]])
    y = torch.tensor([[6, 5, 7, 9]])  # the same tokens before the last one, in another order
    with torch.no_grad():
        a, b = model(x)[0, -1], model(y)[0, -1]
    assert not torch.allclose(a, b, atol=1e-4)
    for blk in model.encoder.blocks:
        blk.attn.rotary = None  # without positions, causal attention over a set is order-blind
    with torch.no_grad():
        a, b = model(x)[0, -1], model(y)[0, -1]
    assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("tie", [True, False])
def test_tied_head(tie):
    model = autoeff.create_model(decoder_cfg({"kind": "full"}, tie_embeddings=tie)).eval()
    emb = model.embed[model.vocab_key["mqar"]].weight
    n_params = sum(p.numel() for p in model.parameters())
    untied_extra = 0 if tie else 24 * 32
    assert (model.lm_head is None) == tie
    base = autoeff.create_model(decoder_cfg({"kind": "full"}, tie_embeddings=True))
    assert n_params == sum(p.numel() for p in base.parameters()) + untied_extra
    # token 20 never appears in the input: only a tied head lets its embedding row move its logit
    x = torch.randint(1, 20, (2, 6))
    with torch.no_grad():
        before = model(x)
        emb[20] += 1.0
        after = model(x)
    changed = not torch.allclose(before[..., 20], after[..., 20])
    assert changed == tie
    assert torch.allclose(before[..., :20], after[..., :20])


def test_padding_mask_right_padded_rows_match_unpadded():
    model = autoeff.create_model(decoder_cfg({"kind": "full"})).eval()
    x = torch.randint(1, 24, (2, 10))
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 6:] = False
    xp = x.clone()
    xp[1, 6:] = 0
    with torch.no_grad():
        padded = model(xp, mask)
        alone = model(x[1:, :6])
    assert torch.allclose(padded[1, :6], alone[0], atol=1e-5)
    assert padded.shape == (2, 10, 24) and torch.isfinite(padded).all()


def test_example_inputs_for_token_targets():
    spec = task_spec(decoder_cfg({"kind": "full"}).tasks[0])
    x, mask = example_inputs(spec, 3)
    assert x.shape == (3, 32) and mask.all() and int(x.min()) >= 1 and int(x.max()) < 24


def test_generate_greedy_matches_uncached_argmax_and_sampling_is_seeded():
    model = autoeff.create_model(decoder_cfg(attention_section("sliding_window"))).eval()
    prompt = torch.tensor([3, 4, 5, 6, 7])
    new = model.generate(prompt, 9)
    seq = prompt.clone()
    with torch.no_grad():
        for _ in range(9):  # the slow way: a full causal pass per token
            seq = torch.cat([seq, model(seq[None])[0, -1].argmax()[None]])
    assert new.tolist() == seq[5:].tolist()
    a = model.generate(prompt, 12, temperature=1.5, seed=7)
    assert a.tolist() == model.generate(prompt, 12, temperature=1.5, seed=7).tolist()
    draws = {tuple(model.generate(prompt, 12, temperature=1.5, seed=s).tolist()) for s in range(4)}
    assert len(draws) > 1  # a seed changes the sample
    assert model.generate(prompt, 9, temperature=1.0, top_k=1, seed=3).tolist() == new.tolist()
    batch = model.generate(prompt.expand(2, 5), 4)
    assert batch.shape == (2, 4) and batch[0].tolist() == new[:4].tolist() == batch[1].tolist()
    assert model.training is False


def test_multitask_decoder_shares_the_trunk_and_the_vocabulary_when_it_can():
    other = dict(TASK, name="other", seed=1)
    wide = dict(TASK, name="wide", vocab=40)
    model = autoeff.create_model(decoder_cfg({"kind": "full"}, tasks=(TASK, other, wide)))
    assert set(model.embed) == {"v24", "v40"}
    x = torch.randint(1, 24, (2, 8))
    assert model(x, task="other").shape == (2, 8, 24)
    assert model(x, task="wide").shape == (2, 8, 40)


def mq(**kw):
    return dict(TASK, **kw)


def test_config_rejects_a_non_causal_family_in_a_decoder():
    with pytest.raises(ConfigError) as e:
        decoder_cfg({"kind": "linformer", "linformer": {"rank": 8}})
    msg = str(e.value)
    assert "attention.kind" in msg and "linformer" in msg and "full" in msg and "sliding_window" in msg
    with pytest.raises(ConfigError, match=r"attention\.layers\[1\]\.kind"):
        decoder_cfg({"layers": [{"kind": "full"}, {"kind": "linformer"}]})


def test_config_rejects_mismatched_targets():
    with pytest.raises(ConfigError, match=r"tasks\[0\]\.kind.*listops"):
        decoder_cfg({"kind": "full"}, tasks=({"kind": "listops", "seq_len": 32, "min_len": 8},))
    with pytest.raises(ConfigError, match=r"model\.arch.*encoder.*decoder"):
        parse_run_config({"model": {"width": 32, "heads": 4}, "tasks": [TASK]})
    with pytest.raises(ConfigError, match=r"compress\.distill"):
        parse_run_config({"model": {"arch": "decoder", "width": 32, "heads": 4}, "tasks": [TASK],
                          "compress": {"distill": True}})


def test_config_rejects_a_context_longer_than_a_fixed_length_family(monkeypatch):
    cfg = decoder_cfg({"kind": "full"})
    assert cfg.deploy.context_len == 0  # 0 = the task's seq_len
    ok = parse_run_config({"model": {"arch": "decoder", "width": 32, "heads": 4}, "tasks": [TASK],
                           "deploy": {"context_len": 64, "prompt_len": 16}})
    assert autoeff.create_model(ok).max_context is None  # no fixed-length layer: any length
    fam = get_attention("full")
    monkeypatch.setattr(fam, "needs_fixed_length", True)  # a fixed-length causal family
    with pytest.raises(ConfigError, match=r"deploy\.context_len.*64.*<= 32"):
        parse_run_config({"model": {"arch": "decoder", "width": 32, "heads": 4}, "tasks": [TASK],
                          "deploy": {"context_len": 64}})
    with pytest.raises(ConfigError, match=r"deploy\.prompt_len"):
        parse_run_config({"model": {"arch": "decoder", "width": 32, "heads": 4}, "tasks": [TASK],
                          "deploy": {"prompt_len": 40, "context_len": 32}})
    fixed = autoeff.create_model(decoder_cfg({"kind": "full"}))
    assert fixed.max_context == 32
    with pytest.raises(ValueError, match="32"):
        fixed.generate(torch.tensor([1, 2, 3]), 31)
    with pytest.raises(ConfigError, match=r"deploy\.context_len"):
        parse_run_config({"model": {"arch": "decoder"}, "tasks": [TASK], "deploy": {"context_len": -1}})


def test_config_rejects_a_causal_only_family_in_an_encoder():
    only = [k for k in list_attentions() if getattr(get_attention(k), "causal_only", False)]
    if not only:
        pytest.skip("no causal-only family registered")
    with pytest.raises(ConfigError, match=rf"attention\.kind.*{only[0]}.*decoder"):
        parse_run_config({"model": {"width": 32, "heads": 4}, "attention": {"kind": only[0]},
                          "tasks": [{"kind": "listops", "seq_len": 32, "min_len": 8}]})
    assert isinstance(autoeff.create_model(decoder_cfg(attention_section(only[0]))), DecoderLM)


def test_a_real_fixed_length_causal_family_is_held_to_its_length():
    fixed = [k for k in CAUSAL if get_attention(k).needs_fixed_length]
    if not fixed:
        pytest.skip("no fixed-length causal family registered")
    kind = fixed[0]
    with pytest.raises(ConfigError, match=r"deploy\.context_len"):
        parse_run_config({"model": {"arch": "decoder", "width": 32, "heads": 4}, "attention": attention_section(kind),
                          "tasks": [TASK], "deploy": {"context_len": 33}})
    model = autoeff.create_model(decoder_cfg(attention_section(kind))).eval()
    assert model.max_context == 32
    cache = model.init_cache(1)
    with torch.no_grad():
        model.forward_cached(torch.randint(1, 24, (1, 32)), cache)
        with pytest.raises(ValueError, match="32"):
            model.forward_cached(torch.randint(1, 24, (1, 1)), cache)
