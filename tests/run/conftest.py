"""The engine fixtures (a small digits split, one thread) for the run-directory fault tests."""

from tests.train.conftest import _one_thread, digits_small  # noqa: F401  (fixtures)
