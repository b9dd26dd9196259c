"""`autoeff generate`: load a decoder trained by `autoeff train` (its config + ``model.pt``) and
continue a prompt with :meth:`autoeff.model.decoder.DecoderLM.generate` (cached decoding).

Byte-level tasks (``lm_text`` on text: ``bytes_per_token`` 1 and its 258-token vocabulary) take
the prompt as text, encoded as UTF-8 bytes (byte ``b`` -> token ``b + 1``); the continuation is
decoded back, up to the first end-of-document token. Any token task takes ``prompt_ids``.
Bad input raises one :class:`~autoeff.errors.ConfigError` (the CLI prints it and exits 2)."""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

import torch

from ..config import TaskSpec, load_config, task_spec
from ..errors import ConfigError
from ..tasks.lm_text import EOD, VOCAB


@dataclass
class Generated:
    text: str  # the prompt and its continuation, as text (bytes) or as ids
    prompt_ids: List[int]
    new_ids: List[int]
    seconds: float  # prefill + decoding

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    @property
    def tokens_per_s(self) -> float:
        return len(self.new_ids) / self.seconds if self.seconds > 0 else float("inf")


def is_byte_level(spec: TaskSpec) -> bool:
    """Whether a task's tokens are lm_text's bytes (0 pad, 1..256 bytes, 257 end of document)."""
    return spec.target == "token" and spec.bytes_per_token == 1.0 and spec.vocab_size == VOCAB


def encode_text(text: str) -> List[int]:
    return [b + 1 for b in text.encode("utf-8")]


def decode_ids(ids: Sequence[int]) -> str:
    """Byte tokens -> text, up to the first end-of-document token (padding dropped)."""
    out = bytearray()
    for i in ids:
        if i == EOD:
            break
        if 1 <= i <= 256:
            out.append(i - 1)
    return out.decode("utf-8", errors="replace")


def generate_text(config: str, overrides: Sequence[str] = (), *, checkpoint: Optional[str] = None,
                  prompt: Optional[str] = None, prompt_ids: Optional[str] = None, max_new_tokens: int = 64,
                  temperature: float = 0.0, top_k: int = 0, seed: int = 0, task: Optional[str] = None) -> Generated:
    """Continue ``prompt`` (text) or ``prompt_ids`` ("3 4 5") with the decoder of ``config``."""
    from ..compress import build_deployed

    for key, v in (("--max-new-tokens", max_new_tokens), ("--temperature", temperature), ("--top-k", top_k)):
        if v < (1 if key == "--max-new-tokens" else 0):
            raise ConfigError(f"must be >= {1 if key == '--max-new-tokens' else 0}", key=key, value=v, has_value=True)
    cfg = load_config(config, overrides)
    if cfg.model.arch != "decoder":
        raise ConfigError("generate needs a decoder (a language model)", file=config, key="model.arch",
                          value=cfg.model.arch, allowed=["decoder"], has_value=True)
    ckpt = Path(checkpoint) if checkpoint else Path(config).with_name("model.pt")
    if not ckpt.is_file():
        raise ConfigError(f"no checkpoint (train the model first: autoeff train --config {config})",
                          key="--checkpoint", value=str(ckpt), has_value=True)
    names = [t.name for t in cfg.tasks]
    name = task or names[0]
    if name not in names:
        raise ConfigError("unknown task", key="--task", value=name, allowed=names, has_value=True)
    spec = task_spec(cfg.tasks[names.index(name)])
    if prompt is not None:
        if not is_byte_level(spec):
            raise ConfigError(f"task {name!r} is not byte-level text: give the prompt as token ids (--prompt-ids)",
                              key="--prompt", value=prompt, has_value=True)
        ids = encode_text(prompt)
    else:
        try:
            ids = [int(t) for t in re.split(r"[,\s]+", (prompt_ids or "").strip()) if t]
        except ValueError:
            raise ConfigError("expected integers separated by spaces or commas", key="--prompt-ids",
                              value=prompt_ids, has_value=True) from None
        if any(not 0 <= i < spec.vocab_size for i in ids):
            raise ConfigError(f"token ids must be in [0, {spec.vocab_size})", key="--prompt-ids", value=prompt_ids,
                              has_value=True)
    if not ids:
        raise ConfigError("the prompt is empty", key="--prompt" if prompt is not None else "--prompt-ids", value="",
                          has_value=True)
    model = build_deployed(cfg)
    try:
        model.load_state_dict(torch.load(ckpt, weights_only=True)["state_dict"])
    except Exception as e:  # not a checkpoint, or one of another model
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ConfigError(f"cannot load this checkpoint into the config's model ({first})", key="--checkpoint",
                          value=str(ckpt), has_value=True) from None
    limit = model.max_context
    if limit is not None and len(ids) + max_new_tokens - 1 > limit:
        raise ConfigError(f"prompt ({len(ids)} tokens) + {max_new_tokens} new tokens exceed the {limit} tokens the "
                          f"model's fixed-length attention ({cfg.attention.kind}) holds",
                          key="--prompt" if prompt is not None else "--prompt-ids", value=f"{len(ids)} tokens",
                          allowed=f"prompt + max-new-tokens <= {limit + 1}", has_value=True)
    model.eval()
    t0 = time.perf_counter()
    new = model.generate(torch.tensor(ids), max_new_tokens, temperature=temperature, top_k=top_k, seed=seed,
                         task=name).tolist()
    seconds = time.perf_counter() - t0
    text = (prompt + decode_ids(new)) if prompt is not None else " ".join(str(i) for i in ids + new)
    return Generated(text=text, prompt_ids=ids, new_ids=new, seconds=seconds)
