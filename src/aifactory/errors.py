"""The one error tree of aifactory.

Every error a user can act on carries a ``fix`` sentence. Each API turns these
errors into its own format in one place (the gateway writes OpenAI error JSON).

::

    AIFactoryError
     +-- ConfigError             bad setting (env var or TOML file)
     +-- SpecError               a Service spec failed validation
     +-- EngineError             an engine cannot be launched as asked
     +-- BackendError            a backend could not do what was asked
     |    +-- CapacityExceeded   not enough free CPUs/GPUs for a replica now
     |    +-- SchedulerCommandFailed  sbatch/squeue/scancel failed or timed out
     |         +-- SchedulerUnreachable  slurmctld did not answer: nothing known of any job
     |              +-- KubernetesUnreachable  nor did the Kubernetes API server
     +-- FunctionError           a submitted function could not complete
     |    +-- TaskTimeout        ran longer than its timeout (also a TimeoutError)
     |    +-- TaskLost           its worker was lost more than ``max_retries`` times
     |    +-- RemoteError        raised remotely; the exception could not be pickled
     +-- BrokerUnavailable       the functions executor got no answer from the broker
     +-- ExecutorClosed          submit after shutdown (also a RuntimeError)
     +-- APIError                an HTTP request cannot be served
          +-- BadRequest           400 (ContextLengthExceeded: a prompt too long for the model)
          +-- Unauthorized         401
          +-- Forbidden            403
          +-- NotFound             404
          |    +-- ModelNotFound     404 for an unknown model
          +-- Conflict             409
          +-- PayloadTooLarge      413
          +-- RateLimited          429 (QuotaExceeded: a budget is spent)
          +-- UpstreamError        502
          +-- NoReplicaAvailable   503
          +-- UpstreamTimeout      504

    RemoteTraceback              not ours to raise: the ``__cause__`` of a
                                 re-raised remote exception (its text)
"""

from __future__ import annotations

__all__ = [
    "AIFactoryError",
    "APIError",
    "BackendError",
    "BadRequest",
    "BrokerUnavailable",
    "CapacityExceeded",
    "ConfigError",
    "Conflict",
    "ContextLengthExceeded",
    "EngineError",
    "ExecutorClosed",
    "Forbidden",
    "FunctionError",
    "KubernetesUnreachable",
    "ModelNotFound",
    "NoReplicaAvailable",
    "NotFound",
    "PayloadTooLarge",
    "QuotaExceeded",
    "RateLimited",
    "RemoteError",
    "RemoteTraceback",
    "SchedulerCommandFailed",
    "SchedulerUnreachable",
    "SpecError",
    "TaskLost",
    "TaskTimeout",
    "Unauthorized",
    "UpstreamError",
    "UpstreamTimeout",
]


class AIFactoryError(Exception):
    """Base of every error aifactory raises on purpose.

    Args:
        message: What went wrong, naming the offending value.
        fix: One sentence telling the user what to do about it.
    """

    def __init__(self, message: str, fix: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.message} Fix: {self.fix}" if self.fix else self.message


class ConfigError(AIFactoryError):
    """Raised by ``config.load_settings`` when a setting has a bad value."""


class SpecError(AIFactoryError):
    """Raised by ``specs.load_service`` when a spec fails validation."""


class EngineError(AIFactoryError):
    """Raised by ``engines`` when an engine cannot be launched as asked."""


class BackendError(AIFactoryError):
    """Raised by a backend when submit, status or cancel fails."""


class CapacityExceeded(BackendError):
    """Raised by a backend's submit when the replica does not fit right now.

    The reconciler keeps the replica wanted and tries again later.
    """


class SchedulerCommandFailed(BackendError):
    """Raised by the scheduler command helper when a command fails or times out.

    Carries the command, its exit code (None on timeout) and output tails.
    """

    _fix = "check that Slurm answers (`sinfo`) and that the job fits the site's policy"

    def __init__(
        self,
        argv: list[str] | str = "",
        returncode: int | None = None,
        stdout: str = "",
        stderr: str = "",
    ) -> None:
        command = argv if isinstance(argv, str) else " ".join(argv)
        detail = (stderr.strip() or stdout.strip())[-500:]
        super().__init__(
            self._headline(command, returncode) + (f": {detail}" if detail else "."),
            fix=self._fix,
        )
        self.argv = argv
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr

    @staticmethod
    def _headline(command: str, returncode: int | None) -> str:
        outcome = "timed out" if returncode is None else f"exited with {returncode}"
        return f"`{command}` {outcome}"


class SchedulerUnreachable(SchedulerCommandFailed):
    """Raised by the Slurm backend when slurmctld did not answer a command.

    A timeout, a controller that cannot be contacted, or an answer that says
    it could not look (``squeue --json``'s ``errors``): unlike its parent, it
    says nothing about any job, which may well still run.
    """

    _fix = (
        "check that slurmctld runs (`scontrol ping`); its jobs keep running meanwhile, "
        "and none is taken for gone until it answers"
    )

    @staticmethod
    def _headline(command: str, returncode: int | None) -> str:
        late = " in time" if returncode is None else ""
        return f"Slurm did not answer `{command}`{late}"


class KubernetesUnreachable(SchedulerUnreachable):
    """Raised by the Kubernetes backend while the API server does not answer.

    The control plane treats it as it treats slurmctld's silence (hence the
    parent): an outage of the stack, which says nothing about any Pod.
    """

    _fix = (
        "check that the API server runs (`kubectl get --raw /readyz`); its Pods keep running "
        "meanwhile, and none is taken for gone until it answers"
    )

    def __init__(self, detail: str, fix: str = "") -> None:
        super().__init__(detail)
        self.fix = fix or self._fix

    @staticmethod
    def _headline(command: str, returncode: int | None) -> str:
        return f"the Kubernetes API server did not answer ({command})"


class FunctionError(AIFactoryError):
    """Base of the errors a function's future can carry besides its own exception."""


class TaskTimeout(FunctionError, TimeoutError):
    """Set on a future by the executor when the worker reports the task ran too long.

    The worker kills the process that ran the task and starts a fresh one.
    """

    def __init__(self, task_id: int, timeout_s: float) -> None:
        super().__init__(
            f"task {task_id} ran longer than its timeout of {timeout_s:g} s and was killed.",
            fix="raise `timeout_s` on the Executor or split the work into smaller tasks",
        )
        self.task_id = task_id
        self.timeout_s = timeout_s


class TaskLost(FunctionError):
    """Set on a future by the executor when the broker gave up on a task.

    The broker retries a task whose worker died or went silent up to its
    ``max_retries`` and then fails it with this error.
    """

    def __init__(self, task_id: int, detail: str) -> None:
        super().__init__(
            f"task {task_id} failed: {detail}.",
            fix="check the worker logs for crashes (out of memory, killed by the scheduler) "
            "or raise the broker's `max_retries`",
        )
        self.task_id = task_id


class RemoteError(FunctionError):
    """Stands in for a remote exception that could not be pickled back.

    Raised by the worker's task runner; carries the original type name.
    """

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(
            f"{type_name}: {message}",
            fix="make the exception picklable to get the original type back",
        )
        self.type_name = type_name

    def __reduce__(self) -> tuple[type[RemoteError], tuple[str, str]]:
        return (RemoteError, (self.type_name, self.message.partition(": ")[2]))


class BrokerUnavailable(AIFactoryError):
    """Raised by ``Executor()`` when the broker does not answer its hello in time."""

    def __init__(self, address: str, timeout_s: float) -> None:
        super().__init__(
            f"no functions broker answered at {address} within {timeout_s:g} s.",
            fix="check that the control plane is running and that the address is reachable",
        )
        self.address = address


class ExecutorClosed(AIFactoryError, RuntimeError):
    """Raised by ``Executor.submit`` after ``shutdown``."""

    def __init__(self) -> None:
        super().__init__(
            "cannot schedule new futures after shutdown.",
            fix="create a new Executor or submit before leaving the `with` block",
        )


class RemoteTraceback(Exception):
    """The formatted remote traceback, attached as ``__cause__`` of a remote exception."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


class APIError(AIFactoryError):
    """Base of errors that become an HTTP response.

    Args:
        message: Shown to the client.
        fix: Appended to the message for the client.
        headers: Extra response headers (``Retry-After``).
    """

    status_code = 500
    error_type = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        fix: str = "",
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, fix)
        self.param = param
        self.headers = headers or {}


class BadRequest(APIError):
    """Raised when a request body or parameter is malformed (400)."""

    status_code = 400
    error_type = "invalid_request_error"


class ContextLengthExceeded(BadRequest):
    """Raised by the gateway when a prompt cannot fit the model's context (400)."""

    code = "context_length_exceeded"


class Unauthorized(APIError):
    """Raised when the API key is missing, unknown or revoked (401)."""

    status_code = 401
    error_type = "invalid_request_error"
    code = "invalid_api_key"


class Forbidden(APIError):
    """Raised when a valid key lacks the role an endpoint needs (403)."""

    status_code = 403
    error_type = "permission_error"


class NotFound(APIError):
    """Raised when a path or named object does not exist (404)."""

    status_code = 404
    error_type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    """Raised by the gateway when no service serves the requested model (404)."""

    code = "model_not_found"


class Conflict(APIError):
    """Raised when an object already exists or is in the wrong state (409)."""

    status_code = 409
    error_type = "invalid_request_error"
    code = "conflict"


class PayloadTooLarge(APIError):
    """Raised when a request body exceeds the configured limit (413)."""

    status_code = 413
    error_type = "invalid_request_error"
    code = "request_too_large"


class RateLimited(APIError):
    """Raised when a limit is hit; carries ``Retry-After`` (429)."""

    status_code = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"


class QuotaExceeded(RateLimited):
    """Raised when a budget for the period is spent; ``Retry-After`` is the reset (429)."""

    error_type = "insufficient_quota"
    code = "insufficient_quota"


class UpstreamError(APIError):
    """Raised by the gateway when every tried replica failed (502)."""

    status_code = 502
    error_type = "server_error"
    code = "upstream_error"


class NoReplicaAvailable(APIError):
    """Raised by the gateway when a model has no ready replica (503)."""

    status_code = 503
    error_type = "server_error"
    code = "no_replica_available"


class UpstreamTimeout(APIError):
    """Raised by the gateway when a replica does not answer in time (504)."""

    status_code = 504
    error_type = "server_error"
    code = "upstream_timeout"
