"""Shared input featurization for tasks and loaders: bytes, pixels, patches, audio frames.

Every built-in generator and every loader of users' data turns its raw examples into model
inputs through these functions, so a user's WAV folder and the built-in speech task (say)
produce the same kind of features.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch

BYTE_VOCAB = 257  # 0 = padding, byte b -> b + 1
PIXEL_VOCAB = 257  # 0 = padding, intensity v in 0..255 -> v + 1


def bytes_to_tokens(texts: Sequence[str], seq_len: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """UTF-8 bytes as token ids (byte + 1), truncated / zero-padded to ``seq_len``.

    Returns x (n, seq_len) int64 and mask (n, seq_len) bool.
    """
    x = torch.zeros(len(texts), seq_len, dtype=torch.long)
    for i, t in enumerate(texts):
        b = t.encode("utf-8")[:seq_len]
        if b:
            x[i, : len(b)] = torch.frombuffer(bytearray(b), dtype=torch.uint8).long() + 1
    return x, x != 0


def pixels_to_tokens(images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Grayscale images (n, H, W) with values in [0, 1] -> pixel tokens (n, H*W) as in LRA Image."""
    n = images.shape[0]
    v = (images.clamp(0, 1) * 255).round().long().reshape(n, -1) + 1  # (n, H*W)
    return v, torch.ones_like(v, dtype=torch.bool)


def patchify(images: torch.Tensor, patch: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Images (n, C, H, W) or (n, H, W) -> non-overlapping patches (n, (H/p)*(W/p), C*p*p), as in ViT."""
    if images.dim() == 3:
        images = images[:, None]
    n, c, h, w = images.shape
    if h % patch or w % patch:
        raise ValueError(f"patch size {patch} must divide the image size {h}x{w}")
    x = images.unfold(2, patch, patch).unfold(3, patch, patch)  # (n, C, H/p, W/p, p, p)
    x = x.permute(0, 2, 3, 1, 4, 5).reshape(n, (h // patch) * (w // patch), c * patch * patch)
    return x.float(), torch.ones(x.shape[:2], dtype=torch.bool)


def log_spectrogram(waves: torch.Tensor, *, n_fft: int = 256, hop: int = 128, n_bins: int = 64,
                    seq_len: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Waveforms (n, T) -> log-magnitude STFT frames (n, frames, n_bins) via ``torch.stft``.

    Frequency bins are averaged down to ``n_bins``; frames are cut or zero-padded to
    ``seq_len`` (0 = keep all). Each clip is normalized to zero mean, unit variance.
    """
    window = torch.hann_window(n_fft)
    spec = torch.stft(waves.float(), n_fft=n_fft, hop_length=hop, window=window, return_complex=True)
    mag = spec.abs().clamp_min(1e-6).log()  # (n, n_fft//2+1, frames)
    f = mag.shape[1] - 1  # drop the Nyquist bin so the rest splits evenly
    if n_bins < f and f % n_bins == 0:
        mag = mag[:, :f].reshape(mag.shape[0], n_bins, f // n_bins, -1).mean(2)
    elif n_bins < f:
        mag = torch.nn.functional.adaptive_avg_pool1d(mag.transpose(1, 2), n_bins).transpose(1, 2)
    x = mag.transpose(1, 2)  # (n, frames, bins)
    x = (x - x.mean(dim=(1, 2), keepdim=True)) / x.std(dim=(1, 2), keepdim=True).clamp_min(1e-5)
    n, frames, bins = x.shape
    mask = torch.ones(n, frames, dtype=torch.bool)
    if seq_len:
        if frames >= seq_len:
            x, mask = x[:, :seq_len], mask[:, :seq_len]
        else:
            pad = seq_len - frames
            x = torch.cat([x, x.new_zeros(n, pad, bins)], 1)
            mask = torch.cat([mask, mask.new_zeros(n, pad)], 1)
    return x.contiguous(), mask


def n_frames(n_samples: int, n_fft: int = 256, hop: int = 128) -> int:
    """Frames ``torch.stft`` (center=True) gives for ``n_samples`` samples."""
    return n_samples // hop + 1


def spectrogram_bins(n_fft: int = 256, n_bins: int = 64) -> int:
    """Feature size ``log_spectrogram`` gives: ``n_bins``, or all ``n_fft // 2 + 1`` bins when
    ``n_bins`` is not below ``n_fft // 2``."""
    return n_bins if n_bins < n_fft // 2 else n_fft // 2 + 1


def read_wav(path, *, max_samples: int = 0) -> Tuple["np.ndarray", int]:
    """A PCM WAV file (8/16/24/32-bit, any channel count) -> mono float32 samples in [-1, 1]
    and its sample rate, with the standard-library ``wave`` module. ``max_samples`` > 0 reads
    at most that many frames. Raises ``wave.Error`` / ``EOFError`` / ``OSError`` on bad files."""
    import wave

    import numpy as np

    with wave.open(str(path), "rb") as w:
        ch, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
        raw = w.readframes(min(n, max_samples) if max_samples > 0 else n)
    if width == 1:  # unsigned 8-bit
        a = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        a = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif width == 3:  # little-endian 24-bit: widen to 32-bit
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3)
        a = (b[:, 0].astype(np.int32) | (b[:, 1].astype(np.int32) << 8)
             | (b[:, 2].astype(np.int8).astype(np.int32) << 16))  # top byte carries the sign
        a = a.astype(np.float32) / 8388608.0
    elif width == 4:
        a = np.frombuffer(raw, "<i4").astype(np.float32) / 2147483648.0
    else:
        raise wave.Error(f"unsupported sample width {width} bytes")
    a = a[: len(a) - len(a) % ch].reshape(-1, ch).mean(1)  # (frames,) mono
    return a.astype(np.float32), rate


def resample_linear(a: "np.ndarray", rate: int, target: int) -> "np.ndarray":
    """Resample 1-D samples from ``rate`` to ``target`` Hz by linear interpolation (no
    anti-aliasing filter: fine for features averaged into a few dozen frequency bins)."""
    import numpy as np

    if rate == target or len(a) == 0:
        return a
    n = max(1, int(round(len(a) * target / rate)))
    t = np.arange(n, dtype=np.float64) * (rate / target)
    return np.interp(t, np.arange(len(a)), a).astype(np.float32)
