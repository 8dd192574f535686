"""Regenerate or check the shipped noise floors of the scorecard (``floors.json``).

``python -m gmbook.metrics --write`` recomputes every configuration of
:data:`gmbook.metrics.floors.CONFIGURATIONS` and writes the file (about 2 minutes on the
book's 2-core CPU); ``python -m gmbook.metrics --check`` recomputes the first pairs of every
shipped entry and compares (:func:`gmbook.metrics.floors.main`).
"""

import sys

from gmbook.metrics.floors import main

if __name__ == "__main__":
    sys.exit(main())
