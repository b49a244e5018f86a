"""Evaluation: log-mel window embeddings, the nearest-neighbour index of training audio (a Spark
stage), bits per sample on the validation split, a Fréchet mel distance and the memorisation check."""
