import sys

from waveforms.cli import main

sys.exit(main())
