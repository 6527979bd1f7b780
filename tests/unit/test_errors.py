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
    if cls is errors.SchedulerCommandFailed:
        error = cls(["sbatch", "--parsable"], 1, "", "sbatch: error: invalid partition")
        assert str(error).startswith("`sbatch --parsable` exited with 1: sbatch: error: invalid")
        assert "Fix: check that Slurm answers" in str(error)
        assert "timed out" in str(cls(["squeue"], None))
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
    assert sorted(errors.__all__) == sorted(c.__name__ for c in _error_classes())
