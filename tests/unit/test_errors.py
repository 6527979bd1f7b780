import inspect

import pytest

from aifactory import errors


def _error_classes() -> list[type[errors.AIFactoryError]]:
    return [
        obj
        for _, obj in inspect.getmembers(errors, inspect.isclass)
        if issubclass(obj, errors.AIFactoryError)
    ]


@pytest.mark.parametrize("cls", _error_classes(), ids=lambda c: c.__name__)
def test_every_error_builds_and_prints(cls: type[errors.AIFactoryError]) -> None:
    special = {
        errors.TaskTimeout: (lambda: errors.TaskTimeout(7, 2.5), "task 7 ran longer than"),
        errors.TaskLost: (lambda: errors.TaskLost(7, "worker lost 3 times"), "worker lost 3"),
        errors.RemoteError: (lambda: errors.RemoteError("KeyError", "'x'"), "KeyError: 'x'"),
        errors.BrokerUnavailable: (
            lambda: errors.BrokerUnavailable("tcp://h:1", 5),
            "no functions broker answered",
        ),
        errors.ExecutorClosed: (errors.ExecutorClosed, "after shutdown"),
    }
    if cls in special:
        build, expected = special[cls]
        assert expected in str(build()) and "Fix: " in str(build())
    elif cls is errors.SchedulerCommandFailed:
        error = cls(["sbatch", "--parsable"], 1, "", "sbatch: error: invalid partition")
        assert str(error).startswith("`sbatch --parsable` exited with 1: sbatch: error: invalid")
        assert "Fix: check that Slurm answers" in str(error)
        assert "timed out" in str(cls(["squeue"], None))
    elif cls is errors.SchedulerUnreachable:
        error = cls(["squeue"], 1, "", "Unable to contact slurm controller (connect failure)")
        assert str(error).startswith("Slurm did not answer `squeue`: Unable to contact")
        assert "scontrol ping" in error.fix and "none is taken for gone" in error.fix
        assert str(cls(["squeue"], None)).startswith("Slurm did not answer `squeue` in time.")
    elif cls is errors.KubernetesUnreachable:
        error = cls("MaxRetryError: Connection refused")
        assert str(error).startswith(
            "the Kubernetes API server did not answer (MaxRetryError: Connection refused). Fix: "
        )
        assert "kubectl get --raw /readyz" in error.fix and "none is taken for gone" in error.fix
        assert cls("no list", fix="check the kubeconfig").fix == "check the kubeconfig"
        assert isinstance(error, errors.SchedulerUnreachable)  # an outage to the control plane
    else:
        error = cls("something was wrong", "do this instead")
        assert str(error) == "something was wrong Fix: do this instead"
    assert cls.__doc__, f"{cls.__name__} needs a docstring saying who raises it"
    assert cls.__name__ in errors.__doc__ or cls is errors.AIFactoryError


def test_api_errors_have_statuses() -> None:
    assert errors.ModelNotFound("x").status_code == 404
    assert errors.ModelNotFound("x").code == "model_not_found"
    assert errors.PayloadTooLarge("x").status_code == 413
    assert (
        errors.NoReplicaAvailable("x", headers={"Retry-After": "5"}).headers["Retry-After"] == "5"
    )


def test_all_is_complete() -> None:
    names = {c.__name__ for c in _error_classes()} | {"RemoteTraceback"}
    assert sorted(errors.__all__) == sorted(names)
    assert str(errors.RemoteTraceback("Traceback ...")) == "Traceback ..."
