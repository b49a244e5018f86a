#!/usr/bin/env python3
"""The generate stage: same flags as `waveforms generate` (see README)."""
import sys

from waveforms.cli import main

if __name__ == "__main__":
    sys.exit(main(["generate", *sys.argv[1:]]))
