"""``python -m taskrank.config > docs/config.md``: print the reference page of the experiment file."""

import sys

from .docs import config_page

sys.stdout.write(config_page())
