"""``python -m loss_landscape COMMAND ...`` equals ``loss-landscape COMMAND ...``."""

import sys

from loss_landscape.cli.main_entry import main

sys.exit(main())
