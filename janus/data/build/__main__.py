"""`python -m janus.data.build`: see `janus.data.build.cli`."""

import sys

from janus.data.build.cli import main

sys.exit(main())
