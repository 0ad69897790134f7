"""``python -m training``: see training/cli.py."""

import sys

from training.cli import main

if __name__ == "__main__":  # not when a spawned worker process imports it
    sys.exit(main())
