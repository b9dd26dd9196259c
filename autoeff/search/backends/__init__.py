"""Former home of the search backends, kept so that existing imports still work: the study store
is :mod:`autoeff.search.store`, the schedulers (formerly backends) are
:mod:`autoeff.search.schedulers`. Importing this package stays light (no Optuna)."""
from __future__ import annotations

from typing import List

from ..record import TrialRecord
from ..space import Space


def make_backend(space: Space):
    """:func:`autoeff.search.schedulers.make_scheduler`."""
    from ..schedulers import make_scheduler

    return make_scheduler(space)


def load_records(space: Space) -> List[TrialRecord]:
    """:func:`autoeff.search.store.load_records`."""
    from ..store import load_records as _load

    return _load(space)
