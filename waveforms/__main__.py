"""``python -m waveforms``: the command line, as the ``waveforms`` script runs it."""
import sys

from waveforms.cli import main

sys.exit(main())
