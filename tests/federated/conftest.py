"""Every federated test runs with its own FLWR_HOME and Flower's CI-safe settings."""

import pytest


@pytest.fixture(autouse=True)
def flower_env(monkeypatch, tmp_path):
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "flwr-home"))
    for k, v in {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
                 "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
                 "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}.items():
        monkeypatch.setenv(k, v)


@pytest.fixture
def task_identity():
    """The task identity Flower's runtime sets, so tests can build Messages in-process."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id)
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 1
    yield
    TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id = saved


@pytest.fixture(scope="module")
def encoder_dir(tiny_encoder):
    """The directory of the session's tiny encoder."""
    return str(tiny_encoder[0])


@pytest.fixture
def spawned(monkeypatch):
    """The command line of every process a LocalFederation starts, by process name."""
    from hybnn.federated.deploy import LocalFederation

    commands: dict[str, list[str]] = {}
    spawn = LocalFederation._spawn

    def record(self, name, cmd):
        commands[name] = cmd
        return spawn(self, name, cmd)

    monkeypatch.setattr(LocalFederation, "_spawn", record)
    return commands
