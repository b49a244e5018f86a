"""``python -m waveforms.config``: print or rewrite the key tables of docs/config.md."""
import sys

from waveforms.config.reference import main

sys.exit(main())
