"""The pipeline on AWS EMR: the launch plan, cluster sizing, launch, sync, and the driver every EMR step runs."""
