"""Shared fixtures. Real data sets come from CNBERT_DATA (CI sets it and CNBERT_REQUIRE_DATA=1,
so a missing file fails there instead of skipping)."""
import importlib.util
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def pytest_configure(config):
    # The library runs without TensorFlow (an optional extra), but the suite checks the TensorFlow
    # mirror against the PyTorch path throughout: say so once, rather than in a hundred errors.
    # CNBERT_TESTS_WITHOUT_TENSORFLOW=1 is for a run of tests that need none (bench/gpu_run.sh runs
    # the kernel tests on a GPU machine that has no TensorFlow).
    if importlib.util.find_spec("tensorflow") is None and os.environ.get("CNBERT_TESTS_WITHOUT_TENSORFLOW") != "1":
        raise pytest.UsageError("the test suite needs TensorFlow: install cnbert's tf-cpu extra (or tf-gpu), "
                                "as `make test` does")


def data_file(relative):
    """Path of a real data file under CNBERT_DATA; skip (or fail in CI) when it is missing."""
    root = os.environ.get("CNBERT_DATA")
    required = os.environ.get("CNBERT_REQUIRE_DATA") == "1"
    if not root:
        reason = "CNBERT_DATA is not set: point it at the shared data folder to run the real-data tests"
        if required:
            pytest.fail(reason)
        pytest.skip(reason)
    path = Path(root) / relative
    if not path.exists():
        reason = f"{path} is missing (CNBERT_DATA={root})"
        if required:
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """For modules of tiny tensors (`pytestmark = pytest.mark.usefixtures("one_torch_thread")`): a second
    thread only adds synchronisation (10x slower on a busy machine)."""
    import torch  # here, so that the framework-neutral tests never import it

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
