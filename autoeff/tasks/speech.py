"""Keyword-like classification of long audio clips, synthesized locally.

Long Range Arena (Tay et al. 2020) has no audio task; this one follows the keyword-spotting
setting of Speech Commands (Warden 2018) at LRA-like lengths: a clip of ``seq_len``
spectrogram frames (about 2 s at the defaults) holds one short keyword somewhere in it, and
the model reads the clip as a sequence of frame vectors (``features.log_spectrogram``, the
same featurization the loader of users' WAV folders uses).

A keyword is a sequence of three sound units (``KEYWORDS[label]``) from an inventory of
eight (``UNITS``): six vowel-like dual tones (two "formants" F1 < F2, amplitude-modulated at
a glottal pitch f0, so each shows as a carrier with pitch side bands) and a rising and a
falling chirp. Keywords reuse units in different orders and differ from each other in at
least two of their three places; from 10 classes on (the default) every unit occurs in two
keywords or more, so no single unit names the class: the model must find the keyword (among
distractor units) and read its units together. Per clip the generator varies

* pitch (f0 90-260 Hz, with a glide) and speaker (all frequencies scaled by 0.9-1.1),
* tempo (units 110 ms and gaps 35 ms, times 0.75-1.35, each unit jittered by 15%),
* position (the keyword starts anywhere it fits, 50 ms from either end),
* background: white noise at an SNR of ``min_snr_db``..``max_snr_db`` (relative to the
  keyword), plus ``distractors`` single units at a third of the keyword's level, away from
  it and from each other (where the clip has room).

Clips are ``(seq_len - 1) * hop`` samples at ``sample_rate``, so the STFT gives exactly
``seq_len`` frames; features are ``n_bins`` log-magnitude bands per frame, normalized per
clip. Classes are exactly balanced within each split.
"""
from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass
from typing import Dict, Iterator, List, Tuple

import numpy as np
import torch

from ..errors import ConfigError
from . import register_task
from .base import Split, Task, TaskSpec, check_positive
from .features import log_spectrogram

#: unit -> ("tone", F1, F2) or ("chirp", f_start, f_end), in Hz before the speaker scaling
UNITS: Tuple[Tuple[str, float, float], ...] = (
    ("tone", 300.0, 1000.0),
    ("tone", 300.0, 2500.0),
    ("tone", 500.0, 1000.0),
    ("tone", 500.0, 1600.0),
    ("tone", 500.0, 2500.0),
    ("tone", 800.0, 1600.0),
    ("chirp", 400.0, 2400.0),
    ("chirp", 2400.0, 400.0),
)
UNIT_S, GAP_S, EDGE_S = 0.110, 0.035, 0.050  # unit, gap and clip-margin durations (seconds)
TEMPO = (0.75, 1.35)
SPEAKER = (0.9, 1.1)
PITCH = (90.0, 260.0)
DISTRACTOR_LEVEL = 1 / 3
CHUNK = 256  # clips synthesized at once


def _keywords(n: int = 24) -> List[Tuple[int, int, int]]:
    """Three-unit sequences without repeated neighbours, pairwise different in >= 2 places."""
    cands = [k for k in itertools.product(range(len(UNITS)), repeat=3) if k[0] != k[1] and k[1] != k[2]]
    random.Random(8000).shuffle(cands)
    out: List[Tuple[int, int, int]] = []
    for k in cands:
        if all(sum(a != b for a, b in zip(k, o)) >= 2 for o in out):
            out.append(k)
        if len(out) == n:
            break
    return out


KEYWORDS: List[Tuple[int, int, int]] = _keywords()
MAX_CLASSES = len(KEYWORDS)


@dataclass
class SpeechOptions:
    n_train: int = 1500
    n_val: int = 300
    n_test: int = 300
    seq_len: int = 256  # STFT frames per clip
    num_classes: int = 10
    sample_rate: int = 8000
    n_fft: int = 256
    hop: int = 64
    n_bins: int = 32  # feature size per frame
    min_snr_db: float = 0.0
    max_snr_db: float = 20.0
    distractors: int = 3  # single units at a lower level elsewhere in the clip
    seed: int = 0


def clip_samples(o: SpeechOptions) -> int:
    return (o.seq_len - 1) * o.hop


def unit_wave(unit: int, n: int, sr: int, f0: np.ndarray, speaker: float) -> np.ndarray:
    """One unit of ``n`` samples: two tones or a chirp, buzzing at pitch ``f0`` (n,), faded in and out."""
    t = np.arange(n) / sr
    kind, fa, fb = UNITS[unit]
    fa, fb = fa * speaker, fb * speaker
    if kind == "tone":
        w = np.sin(2 * np.pi * fa * t) + 0.6 * np.sin(2 * np.pi * fb * t + 1.0)
    else:  # exponential sweep fa -> fb
        k = math.log(fb / fa) / max(t[-1], 1e-6)
        w = 1.3 * np.sin(2 * np.pi * fa * np.expm1(k * t) / k)
    glottal = 1 + 0.5 * np.cos(2 * np.pi * np.cumsum(f0) / sr)
    fade = min(n // 2, int(0.015 * sr))
    env = np.ones(n)
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(fade) / fade)
    env[:fade], env[n - fade:] = ramp, ramp[::-1]
    return w * glottal * env


def _free_spans(taken: List[Tuple[int, int]], lo: int, hi: int, d: int) -> List[Tuple[int, int]]:
    """Ranges of start positions p in [lo, hi - d] where [p, p + d) misses every taken interval."""
    out, pos = [], lo
    for a, b in sorted(taken):
        if a - d >= pos:
            out.append((pos, a - d))
        pos = max(pos, b)
    if hi - d >= pos:
        out.append((pos, hi - d))
    return out


def synthesize(o: SpeechOptions, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Waveforms (n, clip_samples) float32 of the given classes."""
    n, T, sr = len(labels), clip_samples(o), o.sample_rate
    out = np.zeros((n, T), np.float32)
    for i, y in enumerate(labels):
        tempo, speaker = rng.uniform(*TEMPO), rng.uniform(*SPEAKER)
        durs = (UNIT_S * tempo * rng.uniform(0.85, 1.15, 3) * sr).astype(int)
        gap = int(GAP_S * tempo * sr)
        total = int(durs.sum()) + 2 * gap
        edge = int(EDGE_S * sr)
        start = int(rng.integers(edge, max(edge, T - edge - total) + 1))
        f0 = rng.uniform(*PITCH) * np.linspace(1.0, rng.uniform(0.85, 1.15), total)
        wave = out[i]
        pos = start
        for unit, d in zip(KEYWORDS[y], durs):
            seg = wave[pos: pos + d]
            seg += unit_wave(unit, len(seg), sr, f0[pos - start: pos - start + len(seg)], speaker)
            pos += d + gap
        power = float(np.mean(wave[start: start + total] ** 2))
        taken = [(start - edge, start + total + edge)]  # the keyword and a margin around it
        for _ in range(o.distractors):  # away from the keyword and from each other, where there is room
            d = int(UNIT_S * rng.uniform(*TEMPO) * sr)
            room = _free_spans(taken, edge, T - edge, d)
            if not room:
                continue
            a, b = room[int(rng.integers(0, len(room)))]
            p = int(rng.integers(a, b + 1))
            taken.append((p - gap, p + d + gap))
            f0d = np.full(d, rng.uniform(*PITCH))
            wave[p: p + d] += DISTRACTOR_LEVEL * unit_wave(int(rng.integers(0, len(UNITS))), d, sr, f0d, speaker)
        snr = rng.uniform(o.min_snr_db, o.max_snr_db)
        wave += np.float32(math.sqrt(power / 10 ** (snr / 10))) * rng.standard_normal(T, dtype=np.float32)
    return out


def clips(o: SpeechOptions, n: int, rng: np.random.Generator) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """One split's (waveforms, labels), CHUNK clips at a time; labels exactly balanced."""
    labels = np.arange(n) % o.num_classes
    rng.shuffle(labels)
    for lo in range(0, n, CHUNK):
        y = labels[lo: lo + CHUNK]
        yield synthesize(o, y, rng), y


def featurize(o: SpeechOptions, waves: np.ndarray) -> Tuple[torch.Tensor, torch.Tensor]:
    return log_spectrogram(torch.from_numpy(waves), n_fft=o.n_fft, hop=o.hop, n_bins=o.n_bins, seq_len=o.seq_len)


@register_task("speech")
class Speech(Task):
    options = SpeechOptions
    version = 1

    @classmethod
    def spec(cls, o: SpeechOptions) -> TaskSpec:
        return TaskSpec(input_kind="features", seq_len=o.seq_len, num_classes=o.num_classes, feature_dim=o.n_bins)

    @classmethod
    def check_options(cls, o: SpeechOptions, key: str) -> None:
        check_positive(o, key, "n_train", "n_val", "n_test", "seq_len", "sample_rate", "n_fft", "hop", "n_bins")
        if not 2 <= o.num_classes <= MAX_CLASSES:
            raise ConfigError(f"must be between 2 and {MAX_CLASSES}", key=f"{key}.num_classes",
                              value=o.num_classes, has_value=True)
        if o.sample_rate < 7000:
            raise ConfigError("must be >= 7000 (the units reach about 3 kHz)", key=f"{key}.sample_rate",
                              value=o.sample_rate, has_value=True)
        if o.n_bins > o.n_fft // 2:
            raise ConfigError(f"must be <= n_fft // 2 ({o.n_fft // 2})", key=f"{key}.n_bins", value=o.n_bins,
                              has_value=True)
        if o.hop > o.n_fft:
            raise ConfigError(f"must be <= n_fft ({o.n_fft})", key=f"{key}.hop", value=o.hop, has_value=True)
        longest = 3 * UNIT_S * TEMPO[1] * 1.15 + 2 * GAP_S * TEMPO[1] + 2 * EDGE_S
        need = int(math.ceil(longest * o.sample_rate / o.hop)) + 1
        if o.seq_len < need:
            raise ConfigError(f"too short for the slowest keyword at this sample_rate and hop; must be >= {need}",
                              key=f"{key}.seq_len", value=o.seq_len, has_value=True)
        if o.distractors < 0:
            raise ConfigError("must be >= 0", key=f"{key}.distractors", value=o.distractors, has_value=True)
        if o.min_snr_db > o.max_snr_db:
            raise ConfigError(f"must be <= max_snr_db ({o.max_snr_db})", key=f"{key}.min_snr_db",
                              value=o.min_snr_db, has_value=True)

    @classmethod
    def build(cls, o: SpeechOptions) -> Dict[str, Split]:
        rng = np.random.default_rng(o.seed)
        out = {}
        for split, n in (("train", o.n_train), ("val", o.n_val), ("test", o.n_test)):
            xs, ms, ys = [], [], []
            for waves, y in clips(o, n, rng):
                x, m = featurize(o, waves)
                xs.append(x), ms.append(m), ys.append(torch.from_numpy(y).long())
            out[split] = Split(torch.cat(xs), torch.cat(ms), torch.cat(ys))
        return out
