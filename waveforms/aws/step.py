"""The driver every EMR step runs: ``spark-submit step.py --config s3://... STAGE FLAGS...``.

It copies the ``s3://`` config to a local file (the stage CLIs read local
files), then runs ``waveforms STAGE --config LOCAL FLAGS...``. Locations that a
stage only accepts as local paths (the training model folder, the generation
model and output) are mirrored through a temporary folder with
:func:`waveforms.aws.sync.sync`. This file is uploaded next to the wheel and
runs as a script, so it imports only the installed package.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Sequence

# Stage config keys that must be local paths: (stage, key) -> "in" (download
# before), "out" (upload after) or "inout" (both, e.g. resuming checkpoints).
LOCAL_ONLY: dict[tuple[str, str], str] = {
    ("train", "model_dir"): "inout",
    ("generate", "model"): "in",
    ("generate", "output"): "out",
    ("generate", "prime"): "in",
}
FILE_KEYS = ("output", "prime")


def _localise(stage: str, argv: list[str], tmp: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """Return argv plus ``--set key=LOCAL`` overrides, and the (local, s3) folders to sync after."""
    from waveforms import cli, storage
    from waveforms.aws.sync import sync

    cfg = cli.stage_config(stage, cli.build_parser().parse_args(argv))
    overrides: list[str] = []
    after: list[tuple[str, str]] = []
    for (st, key), direction in LOCAL_ONLY.items():
        value = getattr(cfg, key, "") if st == stage else ""
        if not storage.is_s3(value):
            continue
        folder = tmp / key
        if key in FILE_KEYS:  # a single object: mirror its parent "folder"
            remote_dir, _, name = value.rstrip("/").rpartition("/")
            local = folder / name
            if "in" in direction:
                storage.download_file(value, local)
        else:
            remote_dir, local = value, folder
            if "in" in direction:
                sync(value, str(folder), progress=False)
        if "out" in direction:
            after.append((str(folder), remote_dir))
        overrides += ["--set", f"{key}={local}"]
    return argv + overrides, after


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="step.py", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="config file, local or s3://")
    parser.add_argument("stage", choices=["scrape", "transform", "train", "generate"])
    known, rest = parser.parse_known_args(argv)
    from waveforms import cli, storage
    from waveforms.aws.sync import sync
    from waveforms.errors import UserError

    with tempfile.TemporaryDirectory(prefix="waveforms-step-") as tmpdir:
        tmp = Path(tmpdir)
        local_config = tmp / "config.toml"
        storage.download_file(known.config, local_config)
        stage_argv = [known.stage, "--config", str(local_config), *rest]
        try:
            stage_argv, after = _localise(known.stage, stage_argv, tmp)
        except UserError as exc:
            print(f"waveforms {known.stage}: error: {exc}", file=sys.stderr)
            return 2
        code = cli.main(stage_argv)
        if code == 0:
            for local, remote in after:
                sync(local, remote, progress=False)
        return code


if __name__ == "__main__":
    sys.exit(main())
