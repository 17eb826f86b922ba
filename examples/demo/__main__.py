"""``python3 -m examples.demo``: see examples/demo/run.py."""

import sys

from examples.demo.run import main

sys.exit(main())
