"""Specs from YAML or a parsed document: validated, with each bad field named and its fix."""

from __future__ import annotations

import reprlib
from typing import Any, TypeVar

import yaml
from pydantic import ValidationError

from aifactory.errors import SpecError
from aifactory.input_limits import parse_yaml
from aifactory.specs.fields import SpecModel
from aifactory.specs.job import Job
from aifactory.specs.service import Service
from aifactory.specs.workloads import Agent, Deployable, FunctionPool

Spec = TypeVar("Spec", bound=SpecModel)

_KINDS: dict[str, tuple[type[FunctionPool] | type[Agent], str]] = {
    "FunctionPool": (FunctionPool, "examples/pool.yaml"),
    "Agent": (Agent, "examples/agent/agent.yaml"),
}


_FIXES = {
    "extra_forbidden": "remove it or correct its spelling",
    "missing": "add it",
    "literal_error": "use one of the values listed",
    "string_pattern_mismatch": "use lower case letters, digits and '-', starting with a letter",
    "too_short": "give at least one",
}


# What an error shows of the value it got: a long or deep value only in part.
_GOT = reprlib.Repr()


_GOT.maxlevel, _GOT.maxdict, _GOT.maxlist, _GOT.maxtuple = 3, 4, 4, 4


_GOT.maxstring = _GOT.maxother = 60


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        path = ".".join(str(p) for p in error["loc"]) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        fix = _FIXES.get(error["type"])
        got = _GOT.repr(error.get("input"))
        detail = f"{message} (got {got})" if error["type"] != "missing" else message
        lines.append(f"  {path}: {detail}" + (f" — {fix}" if fix else ""))
    return "\n".join(lines)


def _parse(source: str | dict[str, Any], origin: str, needs: str, example: str) -> dict[str, Any]:
    if isinstance(source, str):
        try:
            document = parse_yaml(source)
        except yaml.YAMLError as exc:
            raise SpecError(
                f"{origin} is not valid YAML: {exc}", fix="check indentation and quoting"
            ) from exc
    else:
        document = source
    if not isinstance(document, dict):
        raise SpecError(f"{origin} must be a mapping with at least {needs}.", fix=example)
    return document


def load_service(source: str | dict[str, Any], origin: str = "spec") -> Service:
    """Validate a Service spec given as YAML text or a parsed document.

    Raises:
        SpecError: listing each bad field by its path, with the fix.
    """
    document = _parse(source, origin, "`name`, `models` and `engine`", "see examples/chat.yaml")
    return _validated(Service, document, origin, "examples/chat.yaml shows a working spec")


def load_deployable(source: str | dict[str, Any], origin: str = "spec") -> Deployable:
    """Validate a Service, FunctionPool or Agent (by its ``kind``; Service by default).

    Raises:
        SpecError: listing each bad field by its path, with the fix.
    """
    document = _parse(source, origin, "`kind`, `name` and its fields", "see examples/")
    kind = document.get("kind")
    if kind is not None and not isinstance(kind, str):
        raise SpecError(
            f"{origin}: `kind` must be Service, FunctionPool or Agent, not {_GOT.repr(kind)}.",
            fix="set `kind` to one of them (or leave it out for a Service)",
        )
    if kind not in _KINDS:
        return load_service(document, origin)
    model, example = _KINDS[kind]
    return _validated(model, document, origin, f"{example} shows a working spec")


def load_job(source: str | dict[str, Any], origin: str = "job spec") -> Job:
    """Validate a Job spec given as YAML text or a parsed document.

    Raises:
        SpecError: listing each bad field by its path, with the fix.
    """
    document = _parse(source, origin, "`name` and `command`", "see examples/job.yaml")
    return _validated(Job, document, origin, "`kind: Job`, `name`, `command`, `nodes`, …")


def _validated(model: type[Spec], document: dict[str, Any], origin: str, hint: str) -> Spec:
    """``document`` as a ``model``; a SpecError listing each bad field by its path, else."""
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        raise SpecError(
            f"{origin} is not a valid {model.__name__}:\n{_describe(exc)}\n",
            fix=f"correct the fields listed above ({hint})",
        ) from exc
