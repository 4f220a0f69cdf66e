"""What to label next: rank unlabelled images by how much labelling them is expected to help.

See :func:`suggest` (library), ``graft suggest`` (command line) and :mod:`graft.suggest.rank` (the methods).
"""

from graft.suggest.core import Suggestions, suggest
from graft.suggest.options import SuggestOptions
from graft.suggest.output import write_csv, write_html, write_json
from graft.suggest.rank import STRATEGIES

__all__ = ["STRATEGIES", "SuggestOptions", "Suggestions", "suggest", "write_csv", "write_html", "write_json"]
