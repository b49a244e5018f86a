#!/usr/bin/env python3
"""The scrape stage: same flags as `waveforms scrape` (see README)."""
import sys

from waveforms.cli import main

if __name__ == "__main__":
    sys.exit(main(["scrape", *sys.argv[1:]]))
