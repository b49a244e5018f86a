"""One rank of the allreduce engine, as its own process: ``python -m waveforms.train.rank CONFIG RESULT``.

Started by the engine's barrier task (:mod:`waveforms.train.allreduce`) with
``TF_CONFIG`` (every rank's ``host:port`` and this one's index) and
``WAVEFORMS_THREADS`` in its environment. It makes the collective before
TensorFlow runs anything, runs the training loop, and writes its result
(rank 0: the training summary) or its error as JSON to ``RESULT``. Exit status
0 on success, 1 on an error, 2 on a :class:`~waveforms.runtime.errors.UserError`
(bad input: the engine does not retry it).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from typing import Any

from waveforms import storage
from waveforms.config import TrainConfig, from_json
from waveforms.runtime import tflog
from waveforms.runtime.errors import UserError

log = logging.getLogger(__name__)
USER_ERROR = 2


def read_config(path: str) -> TrainConfig:
    """The TrainConfig of a file written by :func:`waveforms.config.to_json`."""
    with open(path) as fh:
        return from_json(fh.read(), path)


def train(cfg: TrainConfig, threads: int) -> dict[str, Any]:
    # imported when a rank runs: the loop loads TensorFlow, in the rank process only
    from waveforms.storage import OutputDir
    from waveforms.train import collective, loop

    collective.set_threads(threads)
    team = collective.from_env(cfg.allreduce.timeout_s, cfg.allreduce.pack_kb * 1024)  # before TensorFlow's first op
    peers = json.loads(os.environ["TF_CONFIG"])["cluster"]["worker"] if team.count > 1 else ["this process"]
    log.info("rank %d of %d at %s, %d CPU threads, GPUs: %s", team.rank, team.count, peers[team.rank], threads,
             os.environ.get("CUDA_VISIBLE_DEVICES", "as TensorFlow finds them"))
    if not team.lead:
        return loop.run(cfg, None, team, engine="allreduce")
    with OutputDir(cfg.model_dir) as out:
        return loop.run(cfg, out, team, engine="allreduce")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m waveforms.train.rank")
    ap.add_argument("config", help="the train config as JSON (waveforms.config.to_json)")
    ap.add_argument("result", help="where to write this rank's result or error as JSON")
    ap.add_argument("--rank", type=int, default=0, help="this rank (for the process list and logs)")
    ap.add_argument("--model-dir", default="", help="the run's model folder (for the process list)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"rank {args.rank} %(levelname)s %(name)s: %(message)s")
    tflog.quiet_import()  # an entry point: TensorFlow's start-up lines filtered by TF_CPP_MIN_LOG_LEVEL
    result: dict[str, Any]
    code = 0
    try:
        result = train(read_config(args.config), int(os.environ.get("WAVEFORMS_THREADS", "0")))
    except UserError as exc:
        result, code = {"error": str(exc), "user_error": True}, USER_ERROR
        log.error("%s", exc)
    except BaseException as exc:  # reported to the barrier task, which fails the stage
        result, code = {"error": f"{type(exc).__name__}: {exc}"}, 1
        log.error("%s", traceback.format_exc())
    storage.write_text(args.result, json.dumps(result))
    return code


if __name__ == "__main__":
    status = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # without TensorFlow's teardown, which can wait on collective threads of dead peers
