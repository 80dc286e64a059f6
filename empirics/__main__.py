import sys

from empirics.cli import entry_point

sys.exit(entry_point())
