"""The pipeline on AWS EMR: the launch plan and cluster sizing, launching, syncing, and the step driver every EMR step runs."""
