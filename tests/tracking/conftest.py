"""A real `mlflow server` on loopback for the tracking tests, one per module (tests/tracking/server_helpers.py)."""
from __future__ import annotations

import pytest
from server_helpers import running_server


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    with running_server(tmp_path_factory.mktemp("server")) as address:
        yield address
