"""The driver every EMR step runs: ``spark-submit step.py --config s3://... STAGE FLAGS...``.

It copies the ``s3://`` config to a local file (the stage CLIs read local
files), then runs ``waveforms STAGE --config LOCAL FLAGS...``. Every stage reads
and writes ``s3://`` locations itself. This file is uploaded next to the wheel
and runs as a script, so it imports only the installed package.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from waveforms import cli, storage
from waveforms.stages import EMR_STEPS


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="step.py", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="config file, local or s3://")
    parser.add_argument("stage", choices=EMR_STEPS)
    known, rest = parser.parse_known_args(argv)

    with tempfile.TemporaryDirectory(prefix="waveforms-step-") as tmpdir:
        local_config = Path(tmpdir) / "config.toml"
        storage.download_file(known.config, local_config)
        return cli.main([known.stage, "--config", str(local_config), *rest])


if __name__ == "__main__":
    sys.exit(main())
