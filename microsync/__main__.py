"""``python -m microsync`` runs the command line."""

import sys

from microsync.cli.main import main

sys.exit(main())
