import sys

from ftsweep.cli import main

sys.exit(main())
