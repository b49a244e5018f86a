"""Helpers the tests share: data and model makers, servers, clusters, reference implementations (not fixtures: those live in conftest.py)."""
