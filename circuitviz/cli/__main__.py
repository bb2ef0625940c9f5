"""``python -m circuitviz.cli`` runs the same CLI as the ``circuitviz`` console script."""

import sys

from circuitviz.cli import main

sys.exit(main())
