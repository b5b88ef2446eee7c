"""`python -m fcl.serving MODEL_TYPE`: run one champion watcher, print a JSON line per swap."""

import sys

from fcl.serving.cli import main

sys.exit(main())
