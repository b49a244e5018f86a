"""The driver every EMR step runs: ``spark-submit step.py --config s3://... [--attempts N] STAGE FLAGS...``.

It copies the ``s3://`` config to a local file (the stage CLIs read local
files), then runs ``waveforms STAGE --config LOCAL FLAGS...``. Every stage reads
and writes ``s3://`` locations itself. This file is uploaded next to the wheel
and runs as a script, so it imports only the installed package.

With ``--attempts N`` a failed run (a lost core node fails the training's
barrier stage) is run again in the same Spark application, up to N runs in
all, ``--retry-wait`` seconds apart; the train stage then resumes from the
last checkpoint in its model folder (a retry never starts over, even where
the config asks for ``fresh``). Config errors and interrupts are not retried.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

from waveforms import cli, storage
from waveforms.stages import EMR_STEPS

log = logging.getLogger("waveforms.aws.step")

NOT_RETRIED = (0, 2, 130)  # success, config error, interrupt


def run_attempts(run: Callable[[int], int], attempts: int, wait_s: float,
                 sleep: Callable[[float], None] = time.sleep) -> int:
    """Call ``run(attempt)`` until it returns 0, a code in ``NOT_RETRIED``, or ``attempts`` runs are spent.

    An exception counts as a failed run (exit code 1); its traceback is logged.
    """
    code = 1
    for attempt in range(1, attempts + 1):
        try:
            code = run(attempt)
        except Exception:  # a failed Spark job surfaces as Py4JJavaError and the like
            log.exception("attempt %d of %d raised", attempt, attempts)
            code = 1
        if code in NOT_RETRIED:
            return code
        if attempt < attempts:
            log.warning("attempt %d of %d failed (exit code %d); running again in %.0f s, "
                        "resuming from the last checkpoint", attempt, attempts, code, wait_s)
            sleep(wait_s)
    log.error("giving up after %d attempt(s)", attempts)
    return code

def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="step.py", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="config file, local or s3://")
    parser.add_argument("--attempts", type=int, default=1, help="runs of the stage at most (retries resume)")
    parser.add_argument("--retry-wait", type=float, default=0.0, help="seconds between runs")
    parser.add_argument("stage", choices=EMR_STEPS)
    known, rest = parser.parse_known_args(argv)
    if known.attempts < 1 or known.retry_wait < 0:
        parser.error("--attempts must be >= 1 and --retry-wait >= 0")

    with tempfile.TemporaryDirectory(prefix="waveforms-step-") as tmpdir:
        local_config = Path(tmpdir) / "config.toml"
        storage.download_file(known.config, local_config)

        def run(attempt: int) -> int:
            again = ["--set", "fresh=false"] if attempt > 1 and known.stage == "train" else []
            return cli.main([known.stage, "--config", str(local_config), *rest, *again])

        return run_attempts(run, known.attempts, known.retry_wait)


if __name__ == "__main__":
    sys.exit(main())
