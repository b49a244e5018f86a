#!/usr/bin/env python3
"""The transform stage: same flags as `waveforms transform` (see README)."""
import sys

from waveforms.cli import main

if __name__ == "__main__":
    sys.exit(main(["transform", *sys.argv[1:]]))
