"""`python -m janus.data.build`: the builder's command-line name (`janus.data.ingest.cli`).

The package is `janus.data.ingest` (offline, raw sources -> records); this module only keeps the
command's name, which the docs and launchers use.
"""

import sys

from janus.data.ingest.cli import main

if __name__ == "__main__":
    sys.exit(main())
