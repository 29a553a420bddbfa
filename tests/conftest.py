"""Shared test fixtures."""

import os

import pytest
import torch

from fmlab import labkit

SHARED_CACHE_ENV = "FMLAB_TEST_SHARED_CACHE"


@pytest.fixture(scope="session", autouse=True)
def disk_cache_in_a_temp_dir(tmp_path_factory):
    """fmlab's disk cache of trained results (fmlab.diskcache) goes to a fresh temporary directory for the test
    session: tests never read or write the user's cache, and a warm cache from an earlier run cannot hide a failure.

    With FMLAB_TEST_SHARED_CACHE=1 the session keeps $FMLAB_CACHE instead: scripts/test.sh points it to a directory
    that is fresh for the whole run, so that its test workers and its two phases share what the labs trained (the
    browser suite and the site export then load the runs that the nbval phase trained). Tests of the cache itself
    use the `cache` fixture, an empty directory of their own, either way."""
    if os.environ.get(SHARED_CACHE_ENV) == "1" and os.environ.get("FMLAB_CACHE"):
        yield
        return
    old = os.environ.get("FMLAB_CACHE")
    os.environ["FMLAB_CACHE"] = str(tmp_path_factory.mktemp("fmlab_cache"))
    yield
    if old is None:
        os.environ.pop("FMLAB_CACHE", None)
    else:
        os.environ["FMLAB_CACHE"] = old


@pytest.fixture
def float64():
    """Run one test in float64 and restore the default dtype afterwards (never set it at import time:
    that would leak into every test collected after)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread (and OMP_NUM_THREADS=1, which the trainer reads for its default) for a module of small
    models: faster on tiny tensors, and the 2-core CI machine runs two test workers. Restored afterwards.
    Use with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    threads, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    yield
    torch.set_num_threads(threads)
    if env is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = env


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty disk cache of its own and an empty memory cache, restored empty afterwards (disk-cache tests)."""
    monkeypatch.setenv("FMLAB_CACHE", str(tmp_path))
    monkeypatch.setenv("FMLAB_FAST", "1")
    labkit.clear_cache()
    yield tmp_path
    labkit.clear_cache()
