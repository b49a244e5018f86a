"""Where ``--engine elephas`` runs: elephas's own Python environment, apart from the main one.

elephas 7.3.0 pins ``tensorflow<2.20``, ``pyspark<=4.0.0``, ``numpy<2`` and ``flask==2.3.3``,
so it does not share an environment with the rest of waveforms (TensorFlow 2.21, NumPy 2,
PySpark 4.1). ``make setup`` builds it as ``.elephas/`` beside ``.venv/`` from
``waveforms/elephas-requirements.txt``; on EMR the bootstrap builds it on every node when a
step trains with elephas. A process that cannot import elephas hands the run to that
environment's interpreter (``WAVEFORMS_ELEPHAS_PYTHON``, else ``.elephas/bin/python`` next to
this checkout or this venv) with the config as JSON, and Spark's executors use it too.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from waveforms.config import TrainConfig, from_json, to_json
from waveforms.runtime.errors import UserError

PYTHON_VAR = "WAVEFORMS_ELEPHAS_PYTHON"
FOLDER = ".elephas"
REQUIREMENTS = Path(__file__).resolve().parents[2] / "elephas-requirements.txt"
USER_ERROR = 2


def here() -> bool:
    """Whether elephas is installed for this interpreter (the elephas environment, or a user's own)."""
    try:
        importlib.metadata.version("elephas")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def candidates() -> list[Path]:
    """Where an ``.elephas`` environment may be: beside this checkout's package, and beside this venv."""
    checkout = Path(__file__).resolve().parents[2]
    return [checkout / FOLDER / "bin" / "python", Path(sys.prefix).parent / FOLDER / "bin" / "python"]


def interpreter() -> str:
    """The elephas environment's Python; a :class:`UserError` naming the install command when there is none."""
    named = os.environ.get(PYTHON_VAR)
    if named:
        if not (os.path.isfile(named) and os.access(named, os.X_OK)):
            raise UserError(f"{PYTHON_VAR}={named} is not an executable Python interpreter")
        return named
    for path in candidates():
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    raise UserError(
        "--engine elephas runs in an environment of its own (elephas 7.3.0 needs TensorFlow < 2.20, NumPy < 2 "
        f"and PySpark <= 4.0), and none was found at {candidates()[0].parent.parent}: run `make setup` "
        f"(scripts/setup.sh) in the waveforms checkout to build {FOLDER}/, or set {PYTHON_VAR} to an "
        f"interpreter with the pins of {REQUIREMENTS.name} installed")


def child_env(python: str) -> dict[str, str]:
    """This process's environment with Spark's Python set to ``python``; a SPARK_HOME inside this
    environment (its own PySpark) is dropped, so the child's PySpark finds its own Spark."""
    env = dict(os.environ, PYSPARK_PYTHON=python, PYSPARK_DRIVER_PYTHON=python)
    spark_home = env.get("SPARK_HOME", "")
    if spark_home and Path(spark_home).resolve().is_relative_to(Path(sys.prefix).resolve()):
        del env["SPARK_HOME"]
    return env


def train_there(cfg: TrainConfig) -> dict[str, Any]:
    """Train with elephas in its environment; returns the summary, re-raises its user errors here."""
    python = interpreter()
    with tempfile.TemporaryDirectory(prefix="waveforms-elephas-") as work:
        config, result = os.path.join(work, "config.json"), os.path.join(work, "result.json")
        Path(config).write_text(to_json(cfg, "train"))
        proc = subprocess.run([python, "-m", "waveforms.train.elephas.env", config, result], env=child_env(python))
        outcome = json.loads(Path(result).read_text()) if os.path.exists(result) else {}
    if proc.returncode == 0 and "summary" in outcome:
        return outcome["summary"]
    if proc.returncode == USER_ERROR:
        raise UserError(outcome.get("error", "elephas training failed (its error is above)"))
    raise RuntimeError(f"elephas training in {python} failed (exit {proc.returncode}): "
                       f"{outcome.get('error', 'see the log above')}")


def main(argv: list[str] | None = None) -> int:
    """``python -m waveforms.train.elephas.env CONFIG RESULT``, in the elephas environment."""
    import logging
    import traceback

    config, result = argv if argv is not None else sys.argv[1:]
    logging.basicConfig(level=logging.INFO, format="elephas %(levelname)s %(name)s: %(message)s")
    try:
        from waveforms.train.elephas.engine import train

        outcome, code = {"summary": train(from_json(Path(config).read_text(), config))}, 0
    except UserError as exc:
        outcome, code = {"error": str(exc)}, USER_ERROR
    except BaseException as exc:  # reported to the parent, which raises it there
        logging.getLogger(__name__).error("%s", traceback.format_exc())
        outcome, code = {"error": f"{type(exc).__name__}: {exc}"}, 1
    Path(result).write_text(json.dumps(outcome, default=str))
    return code


if __name__ == "__main__":
    sys.exit(main())
