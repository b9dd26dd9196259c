"""Plugins: a user's attention family and task, registered through the entry-point groups
``autoeff.attention`` and ``autoeff.tasks`` (autoeff/registry.py), exist in every process that
looks a name up, and a broken plugin is one clear error naming its entry point.

The plugin is a tiny distribution written into a tmp folder: a package plus a ``*.dist-info``
with ``entry_points.txt``, put on sys.path (or PYTHONPATH for a fresh interpreter), no pip.
"""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from autoeff.errors import ConfigError
from autoeff.registry import PluginError, Registry

REPO = Path(__file__).resolve().parents[1]

ATTN = '''
"""Full softmax attention with a temperature knob: a user's family, as a plugin."""
from dataclasses import dataclass
import torch
from torch import nn
from autoeff.attention import AttentionBase


@dataclass
class TempOptions:
    temperature: float = 1.0


class TempAttention(AttentionBase):
    options = TempOptions

    def __init__(self, dim, heads, opts=None, **kw):
        super().__init__(dim, heads, opts, **kw)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x, mask=None):
        b, n, d = x.shape  # (B, N, D)
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 3 x (B, H, N, Dh)
        s = q @ k.transpose(-1, -2) / (self.head_dim ** 0.5 * self.opts.temperature)  # (B, H, N, N)
        if mask is not None:
            s = s.masked_fill(~mask[:, None, None, :], float("-inf"))
        return self.out(self.merge_heads(s.softmax(-1) @ v))  # (B, N, D)

    @classmethod
    def problems(cls, opts, *, seq_len, width, heads):
        return [("temperature", opts.temperature, "must be > 0", "> 0")] if opts.temperature <= 0 else []
'''

TASK = '''
"""Parity of the number of 2s in a random token sequence: a user's task, as a plugin."""
from dataclasses import dataclass
import torch
from autoeff.tasks import Task, register_task
from autoeff.tasks.base import Split, TaskSpec


@dataclass
class ParityOptions:
    seq_len: int = 16
    n_train: int = 64
    n_val: int = 16
    n_test: int = 16
    seed: int = 0


@register_task("parity")   # registered by its module: the entry point names the module
class Parity(Task):
    options = ParityOptions

    @classmethod
    def spec(cls, o):
        return TaskSpec(input_kind="tokens", seq_len=o.seq_len, num_classes=2, vocab_size=4)

    @classmethod
    def build(cls, o):
        g = torch.Generator().manual_seed(o.seed)
        out = {}
        for split, n in (("train", o.n_train), ("val", o.n_val), ("test", o.n_test)):
            x = torch.randint(1, 4, (n, o.seq_len), generator=g)
            out[split] = Split(x, x != 0, ((x == 2).sum(1) % 2).long())
        return out
'''


def make_dist(root: Path, name: str, files: dict, entry_points: str) -> Path:
    """A distribution ``name`` 0.1 in ``root``: the package files and its dist-info."""
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
    info = root / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    return root


@pytest.fixture
def demo_site(tmp_path):
    return make_dist(tmp_path / "site", "autoeff-demo-plugin", {
        "autoeff_demo_plugin/__init__.py": "",
        "autoeff_demo_plugin/attn.py": ATTN,
        "autoeff_demo_plugin/task.py": TASK,
    }, """
    [autoeff.attention]
    temp = autoeff_demo_plugin.attn:TempAttention

    [autoeff.tasks]
    parity = autoeff_demo_plugin.task
    """)


def fresh(site: Path, code: str, *args: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter that has the plugin on its path (as a Ray worker or
    a second search worker would: nothing of this process's registries carries over)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                          cwd=site, timeout=300)


# ---- in a fresh process: the whole way from a name to a trained model -------------------

def test_plugin_family_and_task_exist_in_a_fresh_process(demo_site):
    code = textwrap.dedent("""
    import sys, torch, autoeff
    print("families", autoeff.list_attentions())
    print("tasks", autoeff.list_tasks())
    cfg = autoeff.load_config({"tasks": [{"kind": "parity", "seq_len": 16}],
                               "model": {"depth": 1, "width": 16, "heads": 2},
                               "attention": {"kind": "temp", "temp": {"temperature": 2.0}},
                               "train": {"max_steps": 2, "batch_size": 8}})
    model = autoeff.create_model(cfg).eval()
    data = autoeff.load_task(cfg.tasks[0])
    x, mask = autoeff.example_inputs(autoeff.task_spec(cfg.tasks[0]), batch=3)
    print("logits", tuple(model(x, mask).shape), "train", len(data.splits["train"]))
    print("layer", sorted({type(m).__name__ for m in model.modules() if type(m).__name__ == "TempAttention"}))
    """)
    r = fresh(demo_site, code)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "'temp'" in r.stdout and "'full'" in r.stdout, r.stdout
    assert "'parity'" in r.stdout and "'listops'" in r.stdout, r.stdout
    assert "logits (3, 2) train 64" in r.stdout and "layer ['TempAttention']" in r.stdout, r.stdout


def test_plugin_options_are_validated_like_a_builtin_in_the_cli(demo_site, tmp_path):
    """The CLI of a fresh process validates a space over the plugin's family and task: knobs
    are checked (its ``problems``), unknown knobs refused, the same exit status 2."""
    good = tmp_path / "plug.yaml"
    good.write_text(textwrap.dedent("""
    name: plug
    tasks: [{kind: parity, seq_len: 16}]
    space:
      attention.kind: [full, temp]
      attention.temp.temperature: [0.5, 2.0]
    """))
    r = fresh(demo_site, "import sys; from autoeff.cli import main; sys.exit(main(sys.argv[1:]))",
              "validate", "--space", str(good))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "attention.temp.temperature" in r.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace("[0.5, 2.0]", "[0.0, 2.0]"))
    r = fresh(demo_site, "import sys; from autoeff.cli import main; sys.exit(main(sys.argv[1:]))",
              "validate", "--space", str(bad))
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "temperature" in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.slow
def test_ray_workers_find_the_plugin(demo_site, tmp_path):
    """A Ray search over the plugin's family and task: every trial runs in a Ray worker process,
    which finds both through the entry points (the driver hands it plain config values only)."""
    pytest.importorskip("ray")
    (tmp_path / "ray.yaml").write_text(textwrap.dedent("""
    name: plugray
    tasks: [{kind: parity, seq_len: 16}]
    model: {depth: 1, width: 16, heads: 2, dropout: 0.0}
    train: {max_steps: 4, batch_size: 16, warmup_steps: 1}
    deploy: {batch_size: 1, warmup: 1, repeats: 3, threads: 1}
    space:
      attention.kind: [temp]
      attention.temp.temperature: [0.5, 2.0]
    search: {backend: ray, n_trials: 2, sampler: random, remeasure_front: false,
             ray: {num_cpus: 2, cpus_per_trial: 1}}
    """))
    code = "import sys; from autoeff.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(demo_site), str(REPO)])}
    r = subprocess.run([sys.executable, "-c", code, "search", "--space", "ray.yaml", "--no-mlflow", "--quiet"],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "n_complete=2" in r.stdout and "temp(temperature=" in r.stdout, r.stdout


def test_a_broken_plugin_is_one_error_naming_its_entry_point(tmp_path):
    site = make_dist(tmp_path / "site", "broken-plugin", {"broken_plugin/__init__.py": "import not_installed_dep\n"},
                     "[autoeff.attention]\nbroken = broken_plugin:Attention\n")
    r = fresh(site, "import sys; from autoeff.cli import main; sys.exit(main(sys.argv[1:]))", "list", "attentions")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    line = r.stderr.strip()
    assert line.count("\n") == 0, line
    assert "broken = broken_plugin:Attention" in line and "autoeff.attention" in line, line
    assert "broken-plugin 0.1" in line and "not_installed_dep" in line, line


# ---- in this process: the loading rules, on a registry of its own -----------------------

def _registry(group: str) -> Registry:
    return Registry("attention type", "attention.kind", group=group, base="autoeff.attention.base:AttentionBase")


PLAIN = '''
from autoeff.attention.base import AttentionBase
class Good(AttentionBase):
    pass
class NotAFamily:
    pass
'''


def _site(tmp_path, monkeypatch, eps: str, files=None) -> None:
    site = make_dist(tmp_path / "site", "unit-plugin", {"unit_plugin/__init__.py": PLAIN, **(files or {})}, eps)
    monkeypatch.syspath_prepend(str(site))
    for m in [m for m in sys.modules if m.startswith("unit_plugin")]:
        monkeypatch.delitem(sys.modules, m)


def test_a_class_entry_point_is_registered_under_its_name(tmp_path, monkeypatch):
    _site(tmp_path, monkeypatch, "[autoeff_test.a]\nmine = unit_plugin:Good\n")
    reg = _registry("autoeff_test.a")
    assert reg.names() == ["mine"]
    assert reg.get("mine").__name__ == "Good" and reg.get("mine").name == "mine"
    with pytest.raises(ConfigError, match="allowed: mine"):
        reg.get("other")


@pytest.mark.parametrize("eps, files, message", [
    ("x = unit_plugin:Missing\n", None, r"'x = unit_plugin:Missing'.*failed to load: AttributeError"),
    ("x = unit_plugin:NotAFamily\n", None, r"'x = unit_plugin:NotAFamily'.*does not subclass autoeff.attention.base"),
    ("x = unit_plugin.empty\n", {"unit_plugin/empty.py": ""}, r"'x = unit_plugin.empty'.*registered no attention type named 'x'"),
    ("x = unit_plugin.boom\n", {"unit_plugin/boom.py": "raise RuntimeError('kaput')"},
     r"'x = unit_plugin.boom'.*distribution unit-plugin 0.1.*RuntimeError: kaput"),
])
def test_plugin_errors_name_the_entry_point(tmp_path, monkeypatch, eps, files, message):
    _site(tmp_path, monkeypatch, "[autoeff_test.b]\n" + eps, files)
    reg = _registry("autoeff_test.b")
    with pytest.raises(PluginError, match=message) as e:
        reg.names()
    assert isinstance(e.value, ConfigError)  # the CLI prints it as one line, exit status 2
    with pytest.raises(PluginError):  # reported again on the next lookup, never half-filled silently
        reg.get("x")


def test_a_plugin_cannot_take_a_registered_name(tmp_path, monkeypatch):
    _site(tmp_path, monkeypatch, "[autoeff_test.c]\nfull = unit_plugin:Good\n")
    reg = _registry("autoeff_test.c")

    @reg.register("full")
    class Builtin:
        pass

    with pytest.raises(PluginError, match=r"'full' is already registered by .*Builtin"):
        reg.names()


def test_entry_point_name_must_be_the_registered_name(tmp_path, monkeypatch):
    _site(tmp_path, monkeypatch, "[autoeff_test.d]\nalias = unit_plugin:Good\n")
    reg = _registry("autoeff_test.d")
    import unit_plugin

    reg.register("good")(unit_plugin.Good)
    with pytest.raises(PluginError, match="registered as 'good'"):
        reg.names()


def test_the_builtin_registries_read_the_documented_groups():
    from autoeff.registry import ATTENTIONS, TASKS

    assert (ATTENTIONS.group, TASKS.group) == ("autoeff.attention", "autoeff.tasks")
