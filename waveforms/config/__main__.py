"""``python -m waveforms.config``: print or rewrite the README's key tables."""
import sys

from waveforms.config.readme import main

sys.exit(main())
