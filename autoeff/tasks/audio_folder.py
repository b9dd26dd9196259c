"""The user's own audio clips: a folder of WAV files per class.

Layout: ``path/<class name>/<clip>.wav`` (hidden files, non-``.wav`` files and sub-folders of
class folders are skipped). Each clip is read with the standard-library ``wave`` module (PCM,
8/16/24/32-bit, channels averaged to mono), cut or zero-padded to ``clip_seconds``, and framed
with :func:`autoeff.tasks.features.log_spectrogram` exactly like the built-in speech task:
``n_fft`` / ``hop`` STFT, frequency bins averaged down to ``n_bins`` features, each clip
normalized. The sequence length is ``seq_len`` frames, or (0) all the frames of a clip.

Sample rates: with ``sample_rate: 0`` every file must have the same rate; a mismatch is an
error listing the rates found. With ``sample_rate: 16000`` (say) every file must have that
rate, unless ``resample: true``, which converts other rates by linear interpolation.

Space-file entry::

    tasks:
      - kind: audio_folder
        path: data/commands          # data/commands/yes/*.wav, data/commands/no/*.wav, ...
        clip_seconds: 2.0
        sample_rate: 16000
        resample: true
"""
from __future__ import annotations

import wave
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch

from ..errors import ConfigError
from . import register_task
from .base import Split, TaskSpec
from .features import log_spectrogram, n_frames, read_wav, resample_linear, spectrogram_bins
from .userdata import (ClassName, UserDataTask, check_fractions, check_positive, flatten, index_labels, listing,
                       plan_splits, source_key, sources)

AUDIO_EXTENSIONS = (".wav", ".wave")


@dataclass
class AudioFolderOptions:
    path: str = ""  # root folder with one sub-folder of WAV files per class, split into train/val/test
    train_path: str = ""  # or one such tree per split (val/test optional: carved from train)
    val_path: str = ""
    test_path: str = ""
    classes: List[ClassName] = field(default_factory=list)  # empty = the sorted folder names
    sample_rate: int = 0  # Hz; 0 = the files' common rate
    resample: bool = False  # convert files whose rate differs from sample_rate
    clip_seconds: float = 1.0  # clips are cut / zero-padded to this length
    n_fft: int = 256
    hop: int = 128
    n_bins: int = 64  # frequency features per frame
    seq_len: int = 0  # frames fed to the model; 0 = every frame of a clip
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0


@dataclass
class AudioScan:
    classes: List[str]
    files: Dict[str, List[Path]]
    rates: Dict[str, List[int]]
    y: Dict[str, np.ndarray]
    plan: Dict[str, Tuple[str, np.ndarray]]
    sample_rate: int  # the rate every clip is brought to


def clip_samples(o: AudioFolderOptions, rate: int) -> int:
    return max(1, int(round(o.clip_seconds * rate)))


@register_task("audio_folder")
class AudioFolder(UserDataTask):
    """Audio classification from the user's folder-per-class tree(s) of WAV files."""

    options = AudioFolderOptions
    version = 1

    @classmethod
    def data_files(cls, o: AudioFolderOptions) -> List[Path]:
        files, _ = flatten(listing(o, f"task {cls.kind}", AUDIO_EXTENSIONS, "WAV"))
        return [f for fs in files.values() for f in fs]

    @classmethod
    def check_numbers(cls, o: AudioFolderOptions, key: str) -> None:
        check_positive(o, key, "clip_seconds", "n_fft", "hop", "n_bins")
        check_positive(o, key, "sample_rate", "seq_len", zero_ok=("sample_rate", "seq_len"))
        if o.n_fft < 2:
            raise ConfigError("must be >= 2", key=f"{key}.n_fft", value=o.n_fft, has_value=True)
        if o.n_bins > o.n_fft // 2 + 1:
            raise ConfigError(f"must be <= n_fft / 2 + 1 ({o.n_fft // 2 + 1}), the STFT's frequency bins",
                              key=f"{key}.n_bins", value=o.n_bins, has_value=True)
        if o.resample and not o.sample_rate:
            raise ConfigError("resample: true needs the target rate in sample_rate", key=f"{key}.sample_rate",
                              value=o.sample_rate, has_value=True)
        if o.sample_rate and clip_samples(o, o.sample_rate) <= o.n_fft // 2:
            raise ConfigError(f"clips of {o.clip_seconds} s at {o.sample_rate} Hz are too short for n_fft "
                              f"{o.n_fft}", key=f"{key}.clip_seconds", value=o.clip_seconds, has_value=True)
        check_fractions(o, key, sources(o, key))

    @classmethod
    def _scan(cls, o: AudioFolderOptions, key: str) -> AudioScan:
        tree = listing(o, key, AUDIO_EXTENSIONS, "WAV")
        files, names = flatten(tree)
        rates: Dict[str, List[int]] = {}
        for s, fs in files.items():
            rates[s] = []
            for f in fs:  # headers only
                try:
                    with wave.open(str(f), "rb") as w:
                        rate, width, frames = w.getframerate(), w.getsampwidth(), w.getnframes()
                    if width not in (1, 2, 3, 4):
                        raise wave.Error(f"unsupported sample width {width} bytes")
                    if frames < 1:
                        raise wave.Error("no audio frames")
                except (wave.Error, EOFError, OSError) as e:
                    raise ConfigError(f"unreadable WAV file {f} ({e}); expected uncompressed PCM",
                                      key=source_key(key, s), value=str(f)) from None
                rates[s].append(rate)
        target = cls._check_rates(o, key, files, rates)
        if clip_samples(o, target) <= o.n_fft // 2:
            raise ConfigError(f"clips of {o.clip_seconds} s at {target} Hz are too short for n_fft {o.n_fft}",
                              key=f"{key}.clip_seconds", value=o.clip_seconds, has_value=True)
        where = {s: str(p) for s, p in sources(o, key).items()}
        classes, y = index_labels(names, where, o.classes, key, "path", where.get("all", where.get("train")),
                                  row="clip")
        return AudioScan(classes, files, rates, y, plan_splits(y, o, key, where), target)

    @classmethod
    def _check_rates(cls, o: AudioFolderOptions, key: str, files, rates) -> int:
        all_rates = Counter(r for rs in rates.values() for r in rs)
        example = {}
        for s in files:
            for f, r in zip(files[s], rates[s]):
                example.setdefault(r, f)
        if o.sample_rate:
            if o.resample:
                return o.sample_rate
            odd = sorted(r for r in all_rates if r != o.sample_rate)
            if odd:
                found = ", ".join(f"{r} Hz ({all_rates[r]} file(s), e.g. {example[r]})" for r in odd)
                raise ConfigError(f"WAV files with another sample rate: {found}; set resample: true to convert them",
                                  key=f"{key}.sample_rate", value=o.sample_rate, has_value=True)
            return o.sample_rate
        if len(all_rates) > 1:
            found = ", ".join(f"{r} Hz ({n} file(s), e.g. {example[r]})" for r, n in sorted(all_rates.items()))
            raise ConfigError(f"WAV files have different sample rates: {found}; set sample_rate to one rate "
                              "and resample: true to convert the others", key=f"{key}.sample_rate",
                              value=o.sample_rate, has_value=True, allowed=sorted(all_rates))
        return next(iter(all_rates))

    @classmethod
    def spec(cls, o: AudioFolderOptions) -> TaskSpec:
        scan = cls.scan(o)
        seq_len = o.seq_len or n_frames(clip_samples(o, scan.sample_rate), o.n_fft, o.hop)
        return TaskSpec(input_kind="features", seq_len=seq_len, num_classes=len(scan.classes),
                        feature_dim=spectrogram_bins(o.n_fft, o.n_bins))

    @classmethod
    def load_clips(cls, o: AudioFolderOptions, files: List[Path], rates: List[int], target: int,
                   key: str) -> torch.Tensor:
        """Files -> (n, T) mono waveforms at ``target`` Hz, cut / zero-padded to the clip length."""
        t = clip_samples(o, target)
        out = np.zeros((len(files), t), np.float32)
        for i, (f, r) in enumerate(zip(files, rates)):
            need = int(np.ceil(t * r / target)) + 1
            try:
                a, rate = read_wav(f, max_samples=need)
            except (wave.Error, EOFError, OSError) as e:
                raise ConfigError(f"unreadable WAV file {f} ({e})", key=key, value=str(f)) from None
            a = resample_linear(a, rate, target)[:t]
            out[i, : len(a)] = a
        return torch.from_numpy(out)

    @classmethod
    def build(cls, o: AudioFolderOptions) -> Dict[str, Split]:
        key = f"task {cls.kind}"
        scan = cls.scan(o)
        seq_len = cls.spec(o).seq_len
        out = {}
        for split, (src, rows) in scan.plan.items():
            waves = cls.load_clips(o, [scan.files[src][i] for i in rows], [scan.rates[src][i] for i in rows],
                                   scan.sample_rate, source_key(key, src))
            x, mask = log_spectrogram(waves, n_fft=o.n_fft, hop=o.hop, n_bins=o.n_bins, seq_len=seq_len)
            out[split] = Split(x, mask, torch.from_numpy(scan.y[src][rows]))
        return out
