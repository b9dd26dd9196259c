"""The ``oneshot:`` section is checked where the space is read (autoeff/search/space.py)."""
import pytest
import yaml

from autoeff.errors import ConfigError
from autoeff.search.space import load_space


def _space(tmp_path, repo, **oneshot):
    doc = yaml.safe_load((repo / "search_spaces" / "smoke_oneshot.yaml").read_text())
    doc["oneshot"].update(oneshot)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


@pytest.mark.parametrize("sandwich", [["largest", "smalest"], ["Largest"], [], ["random", "best"]])
def test_a_bad_sandwich_entry_is_refused_naming_key_value_and_choices(tmp_path, repo, sandwich):
    # before the check, an unknown entry silently meant a random subnet (OneShot.sample's fallback)
    with pytest.raises(ConfigError) as e:
        load_space(_space(tmp_path, repo, sandwich=sandwich))
    msg = str(e.value)
    assert "oneshot.sandwich" in msg and "largest" in msg and "smallest" in msg and "random" in msg
    assert str(sandwich) in msg  # the bad value, as written
    assert "space.yaml" in msg


def test_a_good_sandwich_is_kept(tmp_path, repo):
    space = load_space(_space(tmp_path, repo, sandwich=["largest", "random", "smallest", "random"]))
    assert space.oneshot.sandwich == ["largest", "random", "smallest", "random"]
