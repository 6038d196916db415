"""``python -m supervisor._pytest CONFIG``: a sandbox's worker (:mod:`.worker`)."""

import sys

from .worker import main

sys.exit(main(sys.argv))
