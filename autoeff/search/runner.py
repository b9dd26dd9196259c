"""Former home of what the search backends shared, kept so that existing imports still work.

New code imports from where each part lives now: the front and its re-measurement from
:mod:`autoeff.search.front`, the terminal progress from :mod:`autoeff.search.progress`, the
presenter hooks (formerly ``SearchCallback``) from :mod:`autoeff.search.presenters`."""
from __future__ import annotations

from .front import (SearchResult, finalize, front_of, hypervolume_history, reference_point,  # noqa: F401
                    search_time_front, summarize)
from .presenters import Presenter
from .progress import Progress, compact_front  # noqa: F401

#: the presenter hooks under their former name
SearchCallback = Presenter
