"""The terminal presenter of a search: its progress on stderr (a live block on a terminal,
plain lines in CI or a pipe, nothing when quiet). One of the search's presenters
(:mod:`autoeff.search.presenters`)."""
from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..metrics import get as metric_def
from .front import front_of
from .names import placement_label, run_name
from .pareto import pareto_front
from .presenters import Presenter
from .record import TrialRecord
from .space import Space


def _is_ci() -> bool:
    v = os.environ.get("CI", "")
    return bool(v) and v.lower() not in ("0", "false", "no")


def _clock(seconds: float) -> str:
    s = int(max(0, seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Progress(Presenter):
    """The one place a search reports its progress, on stderr.

    - **live** (stderr is a terminal, not in CI, ``TERM`` not ``dumb``): a block at the bottom of
      the terminal, redrawn every second: the running trial and its training step, trials done /
      running / pruned / failed, elapsed and estimated time left, the current front as a compact
      table. Messages scroll above it.
    - **plain** (CI, a pipe or a file): one line per event, as a log, plus a summary line after
      every trial.
    - **quiet**: nothing.
    """

    REFRESH_S = 1.0

    def __init__(self, total: int, stream=None, quiet: bool = False, *, space: Optional[Space] = None,
                 live: Optional[bool] = None):
        self.total = total
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.space = space
        self.t0 = time.perf_counter()
        if live is None:
            isatty = getattr(self.stream, "isatty", lambda: False)
            live = bool(isatty()) and not _is_ci() and os.environ.get("TERM", "") != "dumb"
        self.live = live and not quiet
        self.records: Dict[int, TrialRecord] = {}
        self.running: Dict[int, Tuple[float, str]] = {}  # number -> (start time, label)
        self.step = ""
        self._drawn = 0
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._ticker: Optional[threading.Thread] = None

    # ---- the presenter hooks (what a scheduler calls) -------------------------------------
    def on_search_start(self, space: Space, records: Sequence[TrialRecord], info: Mapping[str, Any]) -> None:
        self.begin(space, records)

    def on_message(self, msg: str) -> None:
        self(msg)

    def on_trial_start(self, number: int, params: Mapping[str, Any], *, done: int = 0, what: str = "") -> None:
        self.trial_start(done, number, params, what=what)

    def on_training_step(self, step: int, max_steps: int, loss: float) -> None:
        self.training(step, max_steps, loss)

    def on_trial_end(self, record: TrialRecord) -> None:
        self.trial_end(record)

    # ---- the display's own verbs ------------------------------------------------------------
    def begin(self, space: Space, records: Sequence[TrialRecord]) -> None:
        """The search starts (or resumes with ``records`` already stored)."""
        with self._lock:
            self.space = space
            for r in records:
                if r.status != "running":
                    self.records[r.number] = r
        if self.live and self._ticker is None:
            self._ticker = threading.Thread(target=self._tick, name="autoeff-progress", daemon=True)
            self._ticker.start()
        self._redraw()

    def __call__(self, msg: str) -> None:
        if self.quiet:
            return
        el = time.perf_counter() - self.t0
        line = f"[autoeff {el:6.0f}s] {msg}"
        if not self.live:
            print(line, file=self.stream, flush=True)
            return
        self._redraw(above=[line])

    def trial_start(self, done: int, number: int, params: Mapping[str, Any], what: str = "") -> None:
        short = " ".join(f"{_short(k)}={_fmt(v)}" for k, v in params.items())
        if any(str(k).startswith("attention.layers.") and str(k).endswith(".kind") for k in params):
            # hybrids: the placement at a glance first (one letter per layer, bottom first)
            short = f"[{placement_label(TrialRecord(number=number, status='running', params=dict(params)))}] {short}"
        with self._lock:
            self.running[number] = (time.perf_counter(), short)
            self.step = ""
        self(f"trial {number} ({what or f'{done + 1}/{self.total}'}): {short}")

    def training(self, step: int, max_steps: int, loss: float) -> None:
        if self.live:
            with self._lock:
                self.step = f"step {step}/{max_steps} loss {loss:.3f}"
            self._redraw()
        elif step in {max_steps // 4, max_steps // 2, (3 * max_steps) // 4}:
            self(f"    step {step}/{max_steps} loss {loss:.3f}")

    def trial_end(self, rec: TrialRecord) -> None:
        with self._lock:
            self.running.pop(rec.number, None)
            self.records[rec.number] = rec
            self.step = ""
        m = rec.metrics
        if rec.status in ("complete", "proxy"):
            acc = "accuracy" if rec.status == "complete" else "proxy_accuracy"
            per_task = tuple((o.name, o.name) for o in (self.space.objectives if self.space else ()) if "." in o.name)
            decoder = "".join(f"  {label} {m[k]:.3g}" for k, label in (("bpb", "bpb"), *per_task, ("decode_ms", "decode ms"),
                                                                        ("cache_mb", "cache MiB")) if k in m)
            self(f"    -> trial {rec.number}: {acc} {m.get(acc, float('nan')):.3f}{decoder}  latency {m.get('latency_ms', 0):.2f} ms  "
                 f"memory {m.get('peak_memory_mb', 0):.2f} MiB  ({rec.duration_s:.0f}s)")
        else:
            self(f"    -> trial {rec.number}: {rec.status}: {rec.reason}")
        if not self.live:
            self(f"    [{self.summary_line()}]")

    def close(self) -> None:
        """Stop redrawing; the last block stays on the terminal."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=2)
            self._ticker = None
        if self.live and self._drawn:
            self._redraw()
            with self._lock:
                self._drawn = 0  # what follows prints below the block

    # ---- what the display shows ---------------------------------------------------------
    def counts(self) -> Dict[str, int]:
        c = {s: 0 for s in ("complete", "infeasible", "pruned", "failed", "interrupted", "proxy")}
        for r in self.records.values():
            c[r.status] = c.get(r.status, 0) + 1
        return c

    def eta_s(self) -> Optional[float]:
        """Estimated seconds left: the mean duration of finished trials times the trials to go
        (at most what ``search.timeout_s`` leaves, plus one trial)."""
        durs = [r.duration_s for r in self.records.values() if r.duration_s > 0 and r.status != "interrupted"]
        if not durs:
            return None
        mean = sum(durs) / len(durs)
        done = sum(1 for r in self.records.values() if r.status != "interrupted")
        now = time.perf_counter()
        left = max(0, self.total - done - len(self.running)) * mean
        left += sum(max(0.0, mean - (now - t)) for t, _ in self.running.values())
        timeout = self.space.search.timeout_s if self.space is not None else 0.0
        if timeout:  # no trial starts after search.timeout_s; the one running then still finishes
            left = min(left, max(0.0, timeout - (now - self.t0)) + mean)
        return left

    def summary_line(self) -> str:
        with self._lock:
            c = self.counts()
            done = sum(v for k, v in c.items() if k != "interrupted")
            parts = [f"{done}/{self.total} done", *([f"{c['proxy']} proxy"] if c["proxy"] else []),
                     f"{c['complete']} complete", f"{c['infeasible']} infeasible", f"{c['pruned']} pruned",
                     f"{c['failed']} failed", f"{len(self.running)} running"]
            eta = self.eta_s()
            line = ", ".join(parts) + f"; elapsed {_clock(time.perf_counter() - self.t0)}"
            if eta is not None and done < self.total:
                line += f", about {_clock(eta)} left"
            front = self.front()
            if front:
                line += "; front: trial" + ("s " if len(front) > 1 else " ") + ", ".join(str(r.number) for r in front)
            return line

    def front(self) -> List[TrialRecord]:
        if self.space is None:
            return []
        return front_of(self.space, list(self.records.values()))

    def proxy_front(self) -> List[TrialRecord]:
        """One-shot proxy trials that no other feasible proxy dominates (their values carry the
        proxy accuracy): what the live display shows before any real trial completes."""
        if self.space is None:
            return []
        cand = [r for r in self.records.values() if r.status == "proxy" and r.values is not None
                and r.constraints_met]
        if not cand:
            return []
        idx = pareto_front([r.values for r in cand], self.space.directions)
        return [cand[i] for i in idx]

    def block(self) -> List[str]:
        """The live display's lines (also what tests read)."""
        with self._lock:
            name = self.space.name if self.space is not None else "search"
            now = time.perf_counter()
            lines = []
            for number, (t, label) in sorted(self.running.items()):
                lines.append(f"> {name}: trial {number} running {_clock(now - t)}  {label}"
                             + (f"  [{self.step}]" if self.step else ""))
            if not self.running:
                lines.append(f"> {name}")
            lines.append("  " + self.summary_line())
            front, what = self.front(), "search-time figures"
            if not front:
                front, what = self.proxy_front(), "proxy accuracy, inherited weights"
            if front and self.space is not None:
                lines.append(f"  current front ({len(front)} point{'s' if len(front) != 1 else ''}, {what}):")
                lines += ["    " + ln for ln in compact_front(self.space, front)]
            return lines

    # ---- terminal drawing -----------------------------------------------------------------
    def _tick(self) -> None:
        while not self._stop.wait(self.REFRESH_S):
            self._redraw()

    def _redraw(self, above: Sequence[str] = ()) -> None:
        if not self.live:
            return
        width = max(20, shutil.get_terminal_size((100, 24)).columns - 1)
        with self._lock:
            out = []
            if self._drawn:
                out.append(f"\x1b[{self._drawn}F\x1b[J")  # up to the block's first line, clear below
            out += [ln + "\n" for ln in above]
            lines = [ln[:width] for ln in self.block()]  # no wrapping: the redraw counts lines
            out += ["\x1b[2m" + ln + "\x1b[0m\n" for ln in lines]
            self._drawn = len(lines)
            try:
                self.stream.write("".join(out))
                self.stream.flush()
            except (OSError, ValueError):  # the terminal went away
                self.live = False


def _short(name: str) -> str:
    """'attention.layers.1.linformer.rank' -> 'L1.rank', 'model.width' -> 'width'."""
    parts = name.split(".")
    if parts[:2] == ["attention", "layers"] and len(parts) > 3:
        return f"L{parts[2]}.{parts[-1]}"
    return parts[-1]


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def compact_front(space: Space, front: Sequence[TrialRecord], max_rows: int = 6) -> List[str]:
    """A few lines for the live display: the front's points, best first by the first objective."""
    names = space.objective_names
    shown = list(front)[:max_rows]
    cols = ["trial", *[(metric_def(n).label if metric_def(n) else n) for n in names]]
    rows = [[str(r.number), *[_fmt(r.metrics.get(n)) for n in names]] for r in shown]
    widths = [max(len(c), *(len(row[i]) for row in rows)) if rows else len(c) for i, c in enumerate(cols)]
    fmt = lambda vals: "  ".join(v.rjust(w) for v, w in zip(vals, widths))  # noqa: E731
    out = [fmt(cols) + "  run"] + [fmt(row) + "  " + run_name(r) for row, r in zip(rows, shown)]
    if len(front) > max_rows:
        out.append(f"... and {len(front) - max_rows} more")
    return out

