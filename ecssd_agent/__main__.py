"""``python -m ecssd_agent``: the same as the ``ecssd-agent`` command."""

import sys

from ecssd_agent.agent.cli import main

sys.exit(main())
