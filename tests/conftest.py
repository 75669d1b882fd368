"""What every pytest module of the suite shares (tests/harness/ holds the
code; this file hands it to the tests as fixtures):

  dsee         path of the dsee binary            (--dsee, default build/bin/dsee)
  parity       the dsee_parity driver, writing its requests into the test's
               temporary folder               (--dsee-parity, default build/bin/dsee_parity)
  mpiexec      the MPI launcher                   (--mpiexec, default mpiexec)
  tmp_path     pytest's own: a fresh folder per test, under --basetemp (ctest
               gives each test build/tests/pytest/<ctest name>)

The build folder is $DSEE_BUILD_DIR (default build) of this checkout. The
Python pieces that bench/ shares with the tests (the GreBsmo transcription,
the tokenizer corpus) are imported from bench/.

ctest runs one module (or one test of it) per ctest test and reads the exit
status: 0 passed, 77 skipped (SKIP_RETURN_CODE), anything else failed. A
session in which any test was skipped and none failed exits 77, so a skip
never reads as a pass; each skip also prints "SKIPPED: <reason>", the line
launch/test reports skipped tests by.
"""
import os
import pathlib
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
SKIPPED = 77


def pytest_addoption(parser):
    binaries = REPO / os.environ.get("DSEE_BUILD_DIR", "build") / "bin"
    group = parser.getgroup("dsee")
    group.addoption("--dsee", default=str(binaries / "dsee"), help="the dsee binary")
    group.addoption("--dsee-parity", default=str(binaries / "dsee_parity"),
                    help="the parity driver (tests/parity/dsee_parity.cpp)")
    group.addoption("--mpiexec", default="mpiexec", help="the MPI launcher of the mpi tests")


def pytest_configure(config):
    # pytest makes --basetemp itself but not the folders above it (ctest's build/tests/pytest/).
    basetemp = config.getoption("basetemp", None)
    if basetemp:
        pathlib.Path(basetemp).resolve().parent.mkdir(parents=True, exist_ok=True)


def _binary(config, option):
    path = config.getoption(option)
    if not os.access(path, os.X_OK):
        pytest.fail(f"{option}: no executable at {path}; build it with launch/setup or pass {option}=PATH")
    return path


@pytest.fixture(scope="session")
def dsee(pytestconfig):
    return _binary(pytestconfig, "--dsee")


@pytest.fixture
def parity(pytestconfig, tmp_path):
    from harness.parity import ParityDriver
    folder = tmp_path / "parity"
    folder.mkdir()
    return ParityDriver(_binary(pytestconfig, "--dsee-parity"), str(folder))


@pytest.fixture(scope="session")
def mpiexec(pytestconfig):
    return pytestconfig.getoption("--mpiexec")


def pytest_runtest_logreport(report):
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        print(f"\nSKIPPED: {reason.removeprefix('Skipped: ')}", flush=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """item.call_failed: whether the test's body failed (a fixture's teardown may print more then)."""
    outcome = yield
    if call.when == "call":
        item.call_failed = outcome.get_result().failed


def pytest_sessionfinish(session, exitstatus):
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if exitstatus == 0 and reporter is not None and reporter.stats.get("skipped"):
        session.exitstatus = SKIPPED
