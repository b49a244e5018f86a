"""The elephas engine (``--engine elephas``): elephas's parameter averaging on Spark.

:mod:`.env` hands a run to elephas's own environment (``.elephas``, elephas's pins), where :mod:`.engine`
trains it; :mod:`.worker` holds the Spark workers, which keep their compiled model between epochs.
"""
