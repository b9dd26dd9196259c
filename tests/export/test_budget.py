"""`autoeff export` writes a config that trains at its full budget: the search's wall-clock cap
(train.max_time_s) is dropped and the export says so, unless the export: section sets a cap."""
from autoeff.export import exported_config
from autoeff.search.record import TrialRecord
from autoeff.search.space import load_space

PARAMS = {"model.depth": 1, "model.width": 32, "model.heads": 2, "attention.kind": "full"}


def trial_of(space):
    return TrialRecord(number=3, status="complete", params=PARAMS, config=space.materialize(PARAMS).to_dict())


def test_the_search_time_cap_is_dropped_and_said(repo):
    space = load_space(repo / "search_spaces" / "smoke.yaml", ["train.max_time_s=100"], check=False)
    rec = trial_of(space)
    assert rec.config["train"]["max_time_s"] == 100  # what the trial ran under
    notes = []
    cfg = exported_config(space, rec, notes)
    assert cfg.train.max_steps == 50 and cfg.train.max_time_s == 0  # the export budget, uncapped
    assert len(notes) == 1 and "100 s" in notes[0] and "dropped" in notes[0] and "50 steps" in notes[0]


def test_a_cap_set_in_the_export_section_is_kept(repo):
    space = load_space(repo / "search_spaces" / "smoke.yaml", ["train.max_time_s=100", "export.train.max_time_s=900"],
                       check=False)
    notes = []
    cfg = exported_config(space, trial_of(space), notes)
    assert cfg.train.max_time_s == 900 and notes == []


def test_no_cap_nothing_to_say(repo):
    space = load_space(repo / "search_spaces" / "smoke.yaml", check=False)
    notes = []
    assert exported_config(space, trial_of(space), notes).train.max_time_s == 0 and notes == []
