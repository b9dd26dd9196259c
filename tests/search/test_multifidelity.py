"""The multi-objective early-stopping rule on hand-made fronts (no training, no backend)."""
import pytest

from autoeff.search.multifidelity import (EarlyStopping, check_early_stopping, decide, nondominated_fronts,
                                          priority_order, rung_steps)

ACC_LAT_MEM = ["maximize", "minimize", "minimize"]


def test_nondominated_fronts_peel_layers():
    pts = [
        [0.9, 10.0, 5.0],  # front 0
        [0.5, 1.0, 1.0],  # front 0 (fast and small)
        [0.8, 11.0, 6.0],  # dominated by the first only -> front 1
        [0.4, 2.0, 2.0],  # dominated by the second only -> front 1
        [0.3, 12.0, 7.0],  # dominated by the first and third -> front 2
    ]
    assert nondominated_fronts(pts, ACC_LAT_MEM).tolist() == [0, 0, 1, 1, 2]
    # identical points dominate neither each other
    assert nondominated_fronts([[0.5, 1, 1], [0.5, 1, 1]], ACC_LAT_MEM).tolist() == [0, 0]


def test_priority_order_fronts_first_then_spread_from_best_accuracy():
    pts = [
        [0.60, 5.0, 1.0],  # 0: middle of the front
        [0.90, 9.0, 1.0],  # 1: most accurate -> first
        [0.30, 1.0, 1.0],  # 2: fastest: farthest from the most accurate -> second
        [0.58, 5.5, 1.0],  # 3: dominated by 0 -> after the whole front
        [0.62, 5.2, 1.0],  # 4: on the front, close to 0
    ]
    order = priority_order(pts, ACC_LAT_MEM, seed_column=0)
    assert order[:2] == [1, 2]
    assert set(order[2:4]) == {0, 4}  # the rest of front 0 ...
    assert order[4] == 3  # ... before front 1


def test_priority_order_respects_directions():
    # the same numbers read as "minimize everything": the least accurate is now the best
    pts = [[0.9, 1.0], [0.1, 1.0]]
    assert priority_order(pts, ["maximize", "minimize"])[0] == 0
    assert priority_order(pts, ["minimize", "minimize"])[0] == 1


def test_first_trial_at_a_rung_continues():
    d = decide([0.1, 50.0, 9.0], [], ACC_LAT_MEM, eta=3)
    assert d.keep and d.position == 0 and d.population == 1 and d.allowed == 1


def test_dominated_point_stops_and_says_why():
    recorded = [[0.5, 2.0, 1.0], [0.6, 3.0, 1.0]]
    d = decide([0.4, 4.0, 2.0], recorded, ACC_LAT_MEM, eta=3)
    assert not d.keep and d.dominated_by == 2 and d.front == 1 and d.position == 2
    text = d.reason(3)
    assert "ranked 3 of 3" in text and "dominated by 2" in text and "best 1 (1/3)" in text


def test_best_one_over_eta_continue():
    # a chain where each point dominates the next: positions follow accuracy
    recorded = [[0.9 - 0.1 * i, 1.0 + i, 1.0 + i] for i in range(8)]  # 9 points with the new one
    keep = [decide([0.95 - 0.1 * k, 0.5 + k, 0.5 + k], recorded, ACC_LAT_MEM, eta=3) for k in range(9)]
    # the candidate at k lands at position k (it sits just above recorded[k])
    assert [d.position for d in keep] == list(range(9))
    assert [d.keep for d in keep] == [True, True, True] + [False] * 6  # 9 / 3 = 3 continue
    assert all(d.allowed == 3 for d in keep)
    # with eta = 2, ceil(9 / 2) = 5 continue
    assert [decide([0.95 - 0.1 * k, 0.5 + k, 0.5 + k], recorded, ACC_LAT_MEM, eta=2).keep
            for k in range(9)] == [True] * 5 + [False] * 4


def test_a_non_dominated_point_can_still_stop_when_the_front_is_crowded():
    # six mutually non-dominated points; the newcomer sits between two neighbours
    recorded = [[0.9, 10.0, 1.0], [0.1, 1.0, 1.0], [0.5, 5.0, 1.0], [0.3, 3.0, 1.0], [0.7, 7.0, 1.0]]
    d = decide([0.52, 5.2, 1.0], recorded, ACC_LAT_MEM, eta=3)
    assert d.front == 0 and d.dominated_by == 0
    assert not d.keep and d.allowed == 2  # the two ends of the front go first
    assert "outside the best spread" in d.reason(3)


def test_rung_steps_and_default_ladder():
    assert rung_steps(90, EarlyStopping(eta=3)) == [10, 30]  # 1/9 and 1/3
    assert rung_steps(12, EarlyStopping(rungs=[0.25, 0.5], eta=2)) == [3, 6]
    assert rung_steps(4, EarlyStopping(rungs=[0.01, 0.02, 0.99], eta=3)) == [1]  # distinct, >= 1, < budget


@pytest.mark.parametrize("es, objectives, key", [
    (EarlyStopping(eta=1.0), ["accuracy"], "search.early_stopping.eta"),
    (EarlyStopping(rungs=[0.5, 0.2]), ["accuracy"], "search.early_stopping.rungs[1]"),
    (EarlyStopping(rungs=[1.0]), ["accuracy"], "search.early_stopping.rungs[0]"),
    (EarlyStopping(), ["latency_ms", "peak_memory_mb"], "search.early_stopping"),
    (EarlyStopping(signal="perplexity"), ["accuracy"], "search.early_stopping.signal"),
])
def test_bad_settings_name_the_key(es, objectives, key):
    assert check_early_stopping(es, objectives)[0] == key
    assert check_early_stopping(EarlyStopping(rungs=[0.1, 0.3]), ["accuracy", "latency_ms"]) is None


def test_space_file_errors_are_one_line(tmp_path, repo):
    from autoeff.errors import ConfigError
    from autoeff.search.space import load_space

    smoke = str(repo / "search_spaces" / "smoke.yaml")
    with pytest.raises(ConfigError) as e:
        load_space(smoke, ["search.early_stopping.rungs=[0.5,2]"], check=False)
    assert "search.early_stopping.rungs[1]" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_space(smoke, ["search.backend=dask"], check=False)
    assert "ray" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_space(smoke, ["search.ray.resources={CPU: 1}"], check=False)
    assert "search.ray.resources.CPU" in str(e.value)
    with pytest.raises(ConfigError) as e:  # the old place: a clear pointer, not an unknown key
        load_space(smoke, ["deploy.resources={bench_node: 1}"], check=False)
    assert e.value.key == "deploy.resources" and "search.ray.resources" in str(e.value)
    assert load_space(smoke, ["search.ray.resources={bench_node: 1}"], check=False).search.ray.resources == {"bench_node": 1}
    space = load_space(smoke, ["search.early_stopping.eta=4", "search.backend=ray", "search.ray.cpus_per_trial=2"],
                       check=False)
    assert space.search.early_stopping.eta == 4 and space.search.ray.cpus_per_trial == 2.0
    assert load_space(smoke, check=False).search.early_stopping is None  # off unless set


@pytest.mark.parametrize("signal, quality, said", [("accuracy", 0.4, "accuracy 0.4"),
                                                    ("loss", -1.25, "validation loss 1.25")])
def test_a_rung_ranks_on_the_signal_it_is_given(repo, signal, quality, said):
    """signal: loss puts the negated validation loss in the accuracy objective's column (it is
    maximized there), and the stop's reason names it."""
    from autoeff.search.objective import _early_stopping
    from autoeff.search.space import load_space

    space = load_space(repo / "search_spaces" / "smoke.yaml",
                       [f"search.early_stopping={{rungs: [0.5], eta: 3, signal: {signal}}}"], check=False)
    assert space.objective_names == ["accuracy", "latency_ms", "peak_memory_mb"]
    cfg = space.materialize({"model.width": 32, "model.heads": 2, "attention.kind": "full"})
    points = []
    judge = lambda i, step, point, learned: points.append(point) or "ranked 2 of 2"  # noqa: E731
    steps, on_rung, stop = _early_stopping(space, cfg, {"latency_ms": 3.0, "peak_memory_mb": 5.0}, judge)
    assert list(steps) == [cfg.train.max_steps // 2] and not on_rung(1, 6, 0.4, {"t": 0.4}, 1.25)
    assert points == [[quality, 3.0, 5.0]]
    assert f"ranked on {said}, latency_ms 3, peak_memory_mb 5: ranked 2 of 2" in stop[0]


DIRS = ["maximize", "minimize", "minimize"]


def test_a_cheap_model_that_learned_nothing_does_not_pass_on_cost():
    """Learned first: a point that has learned comes before every point that has not, however
    cheap; without the flags the cheap point wins on cost (the order issue 19 measured)."""
    from autoeff.search.multifidelity import decide

    learning = [-1.10, 9.0, 9.0]  # expensive, loss falling
    slower = [-1.15, 10.0, 10.0]  # learning too, dominated by the first
    cheap = [-1.31, 1.0, 1.0]  # far cheaper, loss at the class prior's
    d = decide(cheap, [learning, slower], DIRS, eta=1.5)  # 2 of 3 go on
    assert d.keep and d.position == 1  # no flags: not dominated, it goes on on its cost
    d = decide(cheap, [learning, slower], DIRS, eta=1.5, learned=False, recorded_learned=[True, True])
    assert not d.keep and d.position == 2 and d.n_learned == 2
    assert d.reason(1.5).startswith("has not learned yet") and "costs not compared" in d.reason(1.5)
    assert decide(slower, [learning, cheap], DIRS, eta=1.5, learned=True, recorded_learned=[True, False]).keep


def test_points_that_learned_nothing_rank_on_the_signal_alone():
    from autoeff.search.multifidelity import decide, learned_first_order

    rows = [[-1.30, 1.0, 1.0], [-1.29, 50.0, 50.0], [-1.31, 0.5, 0.5], [-0.9, 9.0, 9.0], [-0.8, 20.0, 20.0]]
    flags = [False, False, False, True, True]
    order = learned_first_order(rows, DIRS, flags)
    assert order[:2] in ([4, 3], [3, 4]) and order[2:] == [1, 0, 2]  # then the lowest loss first, costs ignored
    # the best not-learned point (the expensive one at 1.29) beats the cheaper ones at a rung of them alone
    assert decide(rows[1], [rows[0], rows[2]], DIRS, eta=3, learned=False, recorded_learned=[False, False]).keep
    assert not decide(rows[2], [rows[0], rows[1]], DIRS, eta=3, learned=False, recorded_learned=[False, False]).keep
    # among the learned ones it is the usual non-dominated rule, counted among them only
    d = decide([-0.95, 30.0, 30.0], rows[:4], DIRS, eta=3, learned=True, recorded_learned=flags[:4])
    assert d.dominated_by == 1 and "among the 2 that have learned" in d.reason(3)


@pytest.mark.parametrize("acc, loss, learned", [(0.385, 1.300, False), (0.396, 1.300, True),
                                                (0.385, 1.280, True), (0.394, 1.290, False)])
def test_has_learned_against_majority_and_prior(acc, loss, learned):
    from autoeff.search.multifidelity import EarlyStopping, has_learned

    # majority 0.385, prior loss 1.301 (the default study's tasks); margin 0.01: accuracy > 0.395
    # or loss < 1.288
    assert has_learned(EarlyStopping(), acc, 0.385, loss, 1.301) is learned


def test_prior_loss_is_the_cross_entropy_of_the_training_frequencies():
    import math

    import torch

    from autoeff.config import TaskSpec
    from autoeff.tasks.base import Split, TaskData

    def split(y):
        return Split(torch.zeros(len(y), 4, dtype=torch.long), torch.ones(len(y), 4, dtype=torch.bool), torch.tensor(y))

    data = TaskData(TaskSpec(input_kind="tokens", seq_len=4, num_classes=3, vocab_size=8, name="t"),
                    {"train": split([0, 0, 0, 1]), "val": split([0, 1, 1, 2]), "test": split([0])})
    p0, p1, p2 = 3 / 4, 1 / 4, 1 / 5  # class 2 never in training: 1 / (4 + 1)
    expected = -(math.log(p0) + 2 * math.log(p1) + math.log(p2)) / 4
    assert data.prior_loss("val") == pytest.approx(expected, rel=1e-9)
    assert data.prior_loss("train") == pytest.approx(-(3 * math.log(p0) + math.log(p1)) / 4, rel=1e-9)


@pytest.mark.parametrize("acc, loss, learned_first, flag", [(0.30, 1.09, True, False), (0.50, 1.09, True, True),
                                                            (0.30, 0.90, True, True), (0.50, 0.90, False, None)])
def test_the_rung_point_says_whether_it_learned(repo, acc, loss, learned_first, flag):
    """The judge hears, with each point, whether it shows learning against the tasks' own
    baselines (majority class 1/3, class prior loss ln 3 = 1.0986 here); none with learned_first off."""
    import torch

    from autoeff.config import TaskSpec
    from autoeff.search.objective import _early_stopping
    from autoeff.search.space import load_space
    from autoeff.tasks.base import Split, TaskData

    space = load_space(repo / "search_spaces" / "smoke.yaml",
                       [f"search.early_stopping={{rungs: [0.5], signal: loss, learned_first: {str(learned_first).lower()}}}"],
                       check=False)
    cfg = space.materialize({"model.width": 32, "model.heads": 2, "attention.kind": "full"})
    y = torch.tensor([0, 1, 2] * 4)
    sp = Split(torch.ones(12, 4, dtype=torch.long), torch.ones(12, 4, dtype=torch.bool), y)
    data = [TaskData(TaskSpec(input_kind="tokens", seq_len=4, num_classes=3, vocab_size=8, name=cfg.tasks[0].name),
                     {"train": sp, "val": sp, "test": sp})]
    heard = []
    judge = lambda i, step, point, learned: heard.append(learned)  # noqa: E731  (None: go on)
    _, on_rung, _ = _early_stopping(space, cfg, {"latency_ms": 3.0, "peak_memory_mb": 5.0}, judge, data)
    assert on_rung(1, 6, acc, {"t": acc}, loss) and heard == [flag]
