"""The built-in ``speech`` task: keywords re-derived from the raw waveforms by a separate decoder."""
import numpy as np
import pytest
import torch

from autoeff.config import parse_tasks
from autoeff.errors import ConfigError
from autoeff.tasks import get_task, task_spec
from autoeff.tasks.speech import CHUNK, KEYWORDS, clips, featurize

SMALL = {"kind": "speech", "seq_len": 160, "n_train": 30, "n_val": 10, "n_test": 10}
QUIET = {"min_snr_db": 200.0, "max_snr_db": 200.0}
# what the decoder expects to hear: tone units by their two frequencies (Hz), then the chirps
TONES = {(300, 1000): 0, (300, 2500): 1, (500, 1000): 2, (500, 1600): 3, (500, 2500): 4, (800, 1600): 5}
UP, DOWN = 6, 7


def cfg(**kw):
    return parse_tasks([{**SMALL, **kw}])[0]


def raw(**kw):
    """The train split's first chunk of waveforms, as the generator draws them."""
    o = cfg(**kw).options_typed()
    waves, y = next(clips(o, o.n_train, np.random.default_rng(o.seed)))
    return o, waves, y


def segments(wave, sr, lo, hi=np.inf):
    """Runs of 5 ms frames whose RMS lies in [lo, hi) times the loudest frame's: (start, end) samples."""
    f = int(0.005 * sr)
    n = len(wave) // f
    e = np.sqrt((wave[: n * f].reshape(n, f) ** 2).mean(1))
    on = (e >= lo * e.max()) & (e < hi * e.max())
    runs, start = [], None
    for i, v in enumerate(np.append(on, False)):
        if v and start is None:
            start = i
        elif not v and start is not None:
            if runs and start - runs[-1][1] < 3:  # a dip under 15 ms (the pitch buzz) is no gap
                start = runs.pop()[0]
            runs.append((start, i))
            start = None
    return [(a * f, b * f) for a, b in runs if b - a >= 4]  # at least 20 ms


def peak(x, sr):
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)), 8192))
    return spec, np.fft.rfftfreq(8192, 1 / sr)


def unit_of(x, sr):
    """Name one unit: a chirp by the direction of its sweep, a tone by its two strongest peaks."""
    third = len(x) // 3
    (s0, fr), (s1, _) = peak(x[:third], sr), peak(x[-third:], sr)
    f_start, f_end = fr[s0.argmax()], fr[s1.argmax()]
    if f_end > 1.8 * f_start:
        return UP, None
    if f_start > 1.8 * f_end:
        return DOWN, None
    spec, fr = peak(x, sr)
    a = spec.argmax()
    spec[np.abs(fr - fr[a]) < 120] = 0
    f1, f2 = sorted([fr[a], fr[spec.argmax()]])
    grid1, grid2 = np.array([300, 500, 800]), np.array([1000, 1600, 2500])
    g1 = grid1[np.abs(np.log(grid1 / f1)).argmin()]
    g2 = grid2[np.abs(np.log(grid2 / f2)).argmin()]
    assert abs(np.log(f1 / g1)) < np.log(1.12) and abs(np.log(f2 / g2)) < np.log(1.12), (f1, f2)
    return TONES.get((int(g1), int(g2)), -1), f1


def decode(wave, sr, lo=0.5):
    segs = segments(wave, sr, lo)
    return [unit_of(wave[a:b], sr)[0] for a, b in segs], segs


@pytest.mark.parametrize("opts", [{}, {"num_classes": 24, "seed": 3, "sample_rate": 16000, "hop": 128, "n_fft": 512}])
def test_keyword_decoded_from_the_waveform_is_the_label(opts):
    o, waves, y = raw(distractors=0, **QUIET, **opts)
    for wave, label in zip(waves, y):
        units, segs = decode(wave, o.sample_rate, lo=0.15)
        assert len(segs) == 3
        assert tuple(units) == KEYWORDS[label]


def test_distractors_are_quieter_and_away_from_the_keyword():
    o, waves, y = raw(distractors=2, **QUIET)
    n_weak = 0
    for wave, label in zip(waves, y):
        units, strong = decode(wave, o.sample_rate)
        assert tuple(units) == KEYWORDS[label]  # the loud units are still exactly the keyword
        weak = segments(wave, o.sample_rate, 0.15, 0.5)
        span = (strong[0][0], strong[-1][1])
        for a, b in weak:
            if b - a > 0.03 * o.sample_rate:  # not just the fade of a keyword unit
                n_weak += 1
                assert b <= span[0] or a >= span[1]
    assert n_weak >= len(y)  # most clips have their two distractors


def test_clips_vary_in_position_tempo_pitch_and_noise():
    o, waves, y = raw(distractors=0, **QUIET, n_train=60)
    starts, durations, f1s = [], [], []
    for wave, label in zip(waves, y):
        segs = segments(wave, o.sample_rate, 0.5)
        starts.append(segs[0][0] / o.sample_rate)
        durations.append((segs[-1][1] - segs[0][0]) / o.sample_rate)
        for (a, b), unit in zip(segs, KEYWORDS[label]):
            if unit == 3:  # the (500, 1600) tone: its F1 moves with the speaker
                f1s.append(unit_of(wave[a:b], o.sample_rate)[1])
    assert np.std(starts) > 0.15 and max(durations) > 1.3 * min(durations)
    assert max(f1s) > 1.08 * min(f1s)
    # noise: the same clips at 0 dB and at 20 dB differ only in the scale of the noise (first 40 ms: noise only)
    _, loud, _ = raw(min_snr_db=0.0, max_snr_db=0.0)
    _, soft, _ = raw(min_snr_db=20.0, max_snr_db=20.0)
    edge = int(0.04 * o.sample_rate)
    assert np.abs(soft[:, :edge]).mean() > 1e-3
    assert np.allclose(loud[:, :edge], 10 * soft[:, :edge], rtol=1e-3, atol=1e-5)


def test_features_are_the_log_spectrogram_of_the_clips():
    o, waves, y = raw()
    train = get_task("speech").build(o)["train"]
    x, m = featurize(o, waves)
    assert torch.allclose(train.x[: len(y)], x) and torch.equal(train.y[: len(y)], torch.from_numpy(y))


def test_spec_shapes_and_balance():
    spec = task_spec(cfg(n_bins=16))
    assert (spec.input_kind, spec.seq_len, spec.num_classes, spec.feature_dim) == ("features", 160, 10, 16)
    for name, split in get_task("speech").build(cfg(n_bins=16, n_train=CHUNK + 20).options_typed()).items():
        n = CHUNK + 20 if name == "train" else SMALL[f"n_{name}"]
        assert split.x.shape == (n, 160, 16) and split.x.dtype == torch.float32
        assert split.mask.shape == (n, 160) and split.mask.dtype == torch.bool and split.mask.all()
        assert torch.isfinite(split.x).all()
        assert torch.bincount(split.y, minlength=10).tolist() == [n // 10 + (k < n % 10) for k in range(10)]


@pytest.mark.parametrize("bad, key", [
    ({"n_train": 0}, "n_train"), ({"num_classes": 25}, "num_classes"), ({"num_classes": 1}, "num_classes"),
    ({"sample_rate": 4000}, "sample_rate"), ({"n_bins": 200}, "n_bins"), ({"hop": 512}, "hop"),
    ({"seq_len": 50}, "seq_len"), ({"distractors": -1}, "distractors"),
    ({"min_snr_db": 30.0, "max_snr_db": 10.0}, "min_snr_db"),
])
def test_check_options_rejects(bad, key):
    with pytest.raises(ConfigError) as e:
        cfg(**bad)
    assert f"tasks[0].{key}" in str(e.value)
