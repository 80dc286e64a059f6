import sys

from theory.cli import entry_point

sys.exit(entry_point())
