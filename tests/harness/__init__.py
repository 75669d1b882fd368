"""The shared harness of the Python tests (pytest): checks, the dsee_parity
driver, tiny models and vocabularies, tiny pipeline runs. The fixtures that
hand these to tests are in tests/conftest.py."""
from harness.checks import check, check_close, check_equal  # noqa: F401
