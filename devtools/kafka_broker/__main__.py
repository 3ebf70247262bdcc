"""``python -m devtools.kafka_broker [--port N] [--data-dir DIR] [--fetch-only]``."""

import sys

from devtools.kafka_broker import main

sys.exit(main())
