import sys

from theory.cli.main import entry_point

sys.exit(entry_point())
