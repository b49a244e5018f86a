#!/usr/bin/env python3
"""The train stage: same flags as `waveforms train` (see README)."""
import sys

from waveforms.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
