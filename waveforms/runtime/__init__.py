"""What every process of the pipeline runs with, below the stages and the formats.

:mod:`.errors` (errors a user reads without a traceback, full disks), :mod:`.progress` (log lines, the live
progress line, losses in bits), :mod:`.spark` (the one SparkSession factory), :mod:`.tflog` (TensorFlow's
start-up noise kept out of a command's output) and :mod:`.ports` (free ports for the servers a run starts).
None of them imports the rest of the package.
"""
