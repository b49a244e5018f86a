"""``python -m waveforms.config``: print or rewrite the key tables of docs/config.md."""
import sys

from waveforms.config.readme import main

sys.exit(main())
