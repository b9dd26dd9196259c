"""The `autoeff` command line.

    autoeff search   --space SPACE.yaml [--backend ray] [--ray-address ADDR] [key=value ...]   run or resume a search
    autoeff pareto   --space SPACE.yaml [--all]           print the front (or every trial)
    autoeff export   --space SPACE.yaml (--trial N | --rule "highest accuracy with latency_ms <= 20") [-o OUT.yaml]
                     [--onnx [PATH]]                      also write its deployed model as ONNX, checked
                     [--register NAME [--alias ALIAS]]    also log the trial's model to MLflow's registry
    autoeff report   --space SPACE.yaml [-o REPORT.html]  one self-contained HTML page of the search
    autoeff train    --config OUT.yaml [--out DIR] [key=value ...]
    autoeff generate --config OUT.yaml [--checkpoint MODEL.pt] --prompt TEXT --max-new-tokens N
                     [--temperature T --top-k K --seed S]   sample from a trained decoder
    autoeff validate --space SPACE.yaml                   check a space file, print its dimensions
    autoeff list     [attentions|tasks]
    autoeff bench    attention [...]                      benchmark attention families
    autoeff bench    decode [...]                         decoders against context length, vs transformers
    autoeff bench    deploy [--quick]                     eager PyTorch vs ONNX Runtime fp32 vs int8, per family

Bad input exits with status 2 and one line naming the file, key, value and what is allowed.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

from .errors import ConfigError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="autoeff", description="Search deployable efficient transformers.")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    s = sub.add_parser("search", help="run (or resume) an architecture search")
    s.add_argument("--space", required=True, help="search-space YAML file")
    s.add_argument("overrides", nargs="*", help="dotlist overrides, e.g. search.n_trials=8 train.max_steps=100")
    s.add_argument("--quiet", action="store_true",
                   help="no progress (by default: a live display on a terminal, plain lines in CI or a pipe)")
    s.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    s.add_argument("--backend", choices=("optuna", "ray"), help="= search.backend (optuna: trials in this process; "
                   "ray: Ray Tune trials, locally or on a cluster)")
    s.add_argument("--ray-address", metavar="ADDR", help="= search.ray.address: join this Ray cluster "
                   "('auto' or host:port; implies --backend ray)")

    s = sub.add_parser("pareto", help="print the Pareto front of a search")
    s.add_argument("--space", required=True)
    s.add_argument("overrides", nargs="*")
    s.add_argument("--all", action="store_true", help="every trial, not only the front")
    s.add_argument("--format", choices=("text", "markdown", "csv", "json"), default="text")
    s.add_argument("--plot", metavar="PNG", help="also write the front plot (accuracy vs each cost) to this file")

    s = sub.add_parser("export", help="write one point as a training config")
    s.add_argument("--space", required=True)
    s.add_argument("overrides", nargs="*")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--trial", type=int, help="trial number (see `autoeff pareto` or the MLflow UI)")
    g.add_argument("--rule", help="e.g. \"highest accuracy with latency_ms <= 20 and peak_memory_mb <= 8\"")
    s.add_argument("-o", "--out", help="output YAML (default: <space name>-trial<N>.yaml)")
    s.add_argument("--register", metavar="NAME",
                   help="also log the trial's trained model to MLflow (signature, input example) and register it as NAME")
    s.add_argument("--alias", default="chosen", help="alias of the registered version (default: chosen)")
    s.add_argument("--onnx", nargs="?", const="", metavar="PATH",
                   help="also write the trial's deployed model as ONNX (fp32, and int8 where supported; default "
                        "path: the YAML's, .onnx) and check it against PyTorch with onnxruntime")

    s = sub.add_parser("report", help="write one self-contained HTML page of a search (front, plots, tables)")
    s.add_argument("--space", required=True)
    s.add_argument("overrides", nargs="*")
    s.add_argument("-o", "--out", help="output HTML (default: <study>-report.html)")

    s = sub.add_parser("train", help="train an exported config with its full budget")
    s.add_argument("--config", required=True)
    s.add_argument("overrides", nargs="*")
    s.add_argument("--out", help="output folder (default: runs/<config name>)")

    s = sub.add_parser("generate", help="continue a prompt with a trained decoder (model.arch: decoder)")
    s.add_argument("--config", required=True, help="the decoder's config (e.g. the config.yaml `autoeff train` wrote)")
    s.add_argument("overrides", nargs="*")
    s.add_argument("--checkpoint", help="model.pt written by `autoeff train` (default: model.pt next to --config)")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--prompt", help="text, encoded as bytes (byte-level tasks such as lm_text)")
    g.add_argument("--prompt-ids", help="token ids separated by spaces or commas (any token task)")
    s.add_argument("--max-new-tokens", type=int, default=64)
    s.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    s.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens (0 = all)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--task", help="which task's vocabulary (default: the first task)")

    s = sub.add_parser("validate", help="check a space file and print its dimensions")
    s.add_argument("--space", required=True)
    s.add_argument("overrides", nargs="*")

    s = sub.add_parser("list", help="list registered attention families or tasks")
    s.add_argument("what", nargs="?", choices=("attentions", "tasks"), default="attentions")

    s = sub.add_parser("bench", help="benchmarks (e.g. `autoeff bench attention --help`)")
    s.add_argument("which", choices=("attention", "decode", "deploy"))
    s.add_argument("args", nargs=argparse.REMAINDER)
    return p


def _cmd_search(a) -> int:
    from .api import run_search
    from .tracking.tables import to_text

    res = run_search(a.space, _backend_overrides(a) + list(a.overrides), quiet=a.quiet, track=not a.no_mlflow)
    s = res.space.search
    print(f"\nPareto front of '{s.study_name}' ({len(res.front)} of {len(res.records)} trials):")
    print(to_text(res.space, res.front))
    print(", ".join(f"{k}={v:.4g}" for k, v in res.summary.items()))
    if not a.no_mlflow:
        from .tracking import ui_link

        print(f"\nReview it: mlflow ui --backend-store-uri {s.mlflow_uri}   (experiment '{s.experiment}'), then open")
        print(f"  {ui_link(s.mlflow_uri, s.experiment)}")
    print(f"A page to share: autoeff report --space {a.space} -o {s.study_name}-report.html")
    print(f"Export one: autoeff export --space {a.space} --trial N -o model.yaml")
    return 0


def _backend_overrides(a) -> List[str]:
    """--backend / --ray-address as dotlist overrides (explicit overrides after them win)."""
    out = []
    if a.backend == "optuna" and a.ray_address:
        raise ConfigError("--ray-address needs the ray backend", key="--backend", value="optuna", allowed=["ray"],
                          has_value=True)
    if a.backend or a.ray_address:
        out.append(f"search.backend={a.backend or 'ray'}")
    if a.ray_address:
        out.append(f"search.ray.address={a.ray_address}")
    return out


def _cmd_pareto(a) -> int:
    from .search.backends import load_records
    from .search.runner import front_of
    from .search.space import load_space
    from .tracking.tables import front_rows, to_csv, to_text

    space = load_space(a.space, a.overrides, check=False)
    recs = load_records(space)
    front = front_of(space, recs)
    rows = recs if a.all else front
    if a.plot:
        import matplotlib.pyplot as plt

        from .tracking.plots import front_figure

        fig = front_figure(space, recs, front)
        Path(a.plot).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(a.plot, dpi=120)
        plt.close(fig)
        print(f"plot: {a.plot}", file=sys.stderr)
    if a.format == "csv":
        print(to_csv(front_rows(space, rows)), end="")
    elif a.format == "json":
        print(json.dumps(front_rows(space, rows), indent=1, default=str))
    elif a.all and a.format == "text":
        from .tracking.tables import arch_summary, shown_value

        for r in recs:
            flag = "*" if r.pareto else " "
            vals = "  ".join(f"{o.name}={_short(shown_value(r, o.name))}" for o in space.objectives
                             if shown_value(r, o.name) is not None)
            print(f"{flag} trial {r.number:3d}  {r.status:11s} {arch_summary(r):38s} {vals}  {r.reason}")
    else:
        print(to_text(space, rows, markdown=a.format == "markdown", status=a.all), end="")
    return 0


def _short(v) -> str:
    return f"{v:.4g}" if isinstance(v, (int, float)) else str(v)


def _cmd_export(a) -> int:
    from .export import export_point

    rec, path, notes = export_point(a.space, a.overrides, trial=a.trial, rule=a.rule, out=a.out)
    m = rec.metrics
    print(f"exported trial {rec.number} (accuracy {m.get('accuracy', float('nan')):.4g}, "
          f"latency {m.get('latency_ms', float('nan')):.4g} ms, memory {m.get('peak_memory_mb', float('nan')):.4g} MiB) -> {path}")
    for note in notes:
        print(f"  {note}")
    print(f"train it: autoeff train --config {path}")
    if a.register:
        from .search.space import load_space
        from .tracking.model_registry import register_trial_model  # mlflow and torch: only here

        space = load_space(a.space, a.overrides, check=False)
        reg = register_trial_model(space, rec, a.register, a.alias)
        for r in [reg, *reg.also]:  # a multi-task model: one registered model per task
            print(f"registered {r.name} version {r.version} (alias '{r.alias}') from trial {rec.number}'s "
                  f"checkpoint in {space.search.mlflow_uri} ({r.serialization}, task '{r.task}')")
            print(f"load it: mlflow.pytorch.load_model(\"{r.model_uri}\")  # forward(x, mask) -> logits")
    if a.onnx is not None:
        return _export_onnx(rec, path, a.onnx)
    return 0


def _cmd_report(a) -> int:
    from .search.backends import load_records
    from .search.runner import front_of
    from .search.space import load_space
    from .tracking.report import write_report

    space = load_space(a.space, a.overrides, check=False)
    recs = load_records(space)  # no study: ConfigError, exit 2 (as `autoeff pareto` and `autoeff export`)
    if not recs:
        raise ConfigError(f"the study '{space.search.study_name}' in {space.search.storage} has no trials yet; run "
                          f"`autoeff search --space {space.file}` first", file=space.file, key="search.study_name",
                          value=space.search.study_name, has_value=True)
    front = front_of(space, recs)
    out = write_report(space, recs, front, Path(a.out or f"{space.search.study_name}-report.html"))
    print(f"report: {out} ({len(recs)} trials, {len(front)} on the front; opens offline in any browser)")
    return 0


def _export_onnx(rec, yaml_path, onnx_path: str) -> int:
    """The chosen trial's checkpoint to ONNX (imports torch: only with --onnx)."""
    from .config import parse_run_config
    from .errors import ConfigError

    if not rec.checkpoint or not Path(rec.checkpoint).exists():
        raise ConfigError("the trial has no checkpoint on this machine (train the exported config, then export "
                          "its model.pt)", key="--onnx", value=rec.checkpoint or None, has_value=True)
    from .export.onnx import ExportError, describe, export_onnx

    cfg = parse_run_config(rec.config, file=f"trial {rec.number}")
    try:
        report = export_onnx(cfg, rec.checkpoint, onnx_path or str(Path(yaml_path).with_suffix(".onnx")))
    except ExportError as e:
        print(f"autoeff: onnx: {e}", file=sys.stderr)
        return 1
    for line in describe(report):
        print(line)
    return 0 if all(f.ok for f in report.files) else 1


def _cmd_train(a) -> int:
    from .config import load_config
    from .training.run import train_config

    cfg = load_config(a.config, a.overrides)
    out = a.out or str(Path("runs") / Path(a.config).stem)

    def progress(step, total, loss):
        if step % max(1, total // 10) == 0 or step == total:
            print(f"  step {step}/{total} loss {loss:.3f}", file=sys.stderr, flush=True)

    metrics = train_config(cfg, out, log=lambda s: print(s, file=sys.stderr, flush=True), progress=progress)
    print(json.dumps({k: round(v, 4) for k, v in metrics.items()}, indent=1))
    print(f"checkpoint: {Path(out) / 'model.pt'}")
    return 0


def _cmd_generate(a) -> int:
    from .training.generate import generate_text

    out = generate_text(a.config, a.overrides, checkpoint=a.checkpoint, prompt=a.prompt, prompt_ids=a.prompt_ids,
                        max_new_tokens=a.max_new_tokens, temperature=a.temperature, top_k=a.top_k, seed=a.seed,
                        task=a.task)
    print(out.text)
    print(f"{len(out.new_ids)} tokens in {out.seconds:.3f} s ({out.tokens_per_s:.1f} tokens/s, prefill of "
          f"{out.prompt_tokens} tokens included)", file=sys.stderr)
    return 0


def _cmd_validate(a) -> int:
    from .search.space import load_space

    space = load_space(a.space, a.overrides)
    print(f"{a.space}: OK — {len(space.dims)} dimensions, objectives "
          + ", ".join(f"{o.name} ({o.direction}, {o.aggregate})" for o in space.objectives))
    for d in space.dims:
        rng = list(d.choices) if d.type == "categorical" else f"[{d.low}, {d.high}]" + (" log" if d.log else "")
        cond = ("  when " + ", ".join(f"{k} in {list(v)}" for k, v in d.when.items())) if d.when else ""
        print(f"  {d.name:34s} {d.type:11s} {rng}{cond}")
    for c in space.constraints:
        print(f"  constraint: {c.label}")
    if space.reference:
        print(f"  reference model (measured when a search starts): {json.dumps(space.reference)}")
    return 0


_DECODE_COST = {  # what one decoding step costs, by AttentionBase.decode_cost (docs/decoders.md)
    "kv": "KV cache growing with the context",
    "window": "KV cache bounded by the window",
    "state": "fixed-size state",
    "recompute": "re-runs over the whole stored context every token (slower)",
}


def _cmd_list(a) -> int:
    if a.what == "attentions":
        from .attention import get_attention, list_attentions

        for name in list_attentions():
            fam = get_attention(name)
            flags = [f for f, on in (("fixed-length", fam.needs_fixed_length), ("padding", fam.supports_padding_mask),
                                     ("causal", fam.supports_causal), ("causal-only", fam.causal_only),
                                     ("gqa", fam.supports_kv_heads), ("subquadratic", fam.subquadratic)) if on]
            import dataclasses

            knobs = ", ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(fam.options))
            decode = _DECODE_COST.get(fam.decode_cost, "no decoding (not causal)")
            print(f"{name:14s} [{', '.join(flags)}]  {knobs}\n{'':14s} decode: {decode}")
    else:
        from .tasks import get_task, list_tasks

        for name in list_tasks():
            doc = (get_task(name).__doc__ or sys.modules[get_task(name).__module__].__doc__ or "").strip().splitlines()
            print(f"{name:14s} {doc[0] if doc else ''}")
    return 0


def _cmd_bench(a) -> int:
    if a.which == "attention":
        from .bench.attention import main as bench_main

        return int(bench_main(a.args) or 0)
    if a.which == "decode":
        from .bench.decode import main as decode_main

        return int(decode_main(a.args) or 0)
    if a.which == "deploy":
        from .bench.deploy import main as deploy_main

        return int(deploy_main(a.args) or 0)
    return 2


COMMANDS = {"search": _cmd_search, "pareto": _cmd_pareto, "export": _cmd_export, "report": _cmd_report,
            "train": _cmd_train, "generate": _cmd_generate,
            "validate": _cmd_validate, "list": _cmd_list, "bench": _cmd_bench}


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.cmd](args)
    except ConfigError as e:
        print(f"autoeff: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("autoeff: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
