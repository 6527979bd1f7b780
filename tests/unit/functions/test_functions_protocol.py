"""The functions wire format: headers, JSON frames, spill files, remote tracebacks."""

from __future__ import annotations

import os
import pickle
import sys
import traceback
from pathlib import Path

import cloudpickle  # type: ignore[import-untyped]
import pytest

from aifactory.functions import RemoteError, RemoteTraceback, TaskLost, TaskTimeout
from aifactory.functions import protocol as p


def test_headers_and_ids_round_trip() -> None:
    assert p.TASK_HEADER.unpack(p.TASK_HEADER.pack(2**63, 1.5, p.SPILLED)) == (2**63, 1.5, 1)
    assert p.RESULT_HEADER.unpack(p.RESULT_HEADER.pack(7, p.STATUS_ERROR, 0)) == (7, 1, 0)
    frame = p.pack_ids(p.CANCEL, [1, 2, 2**40])
    assert frame[:1] == p.CANCEL
    assert p.unpack_ids(frame) == (1, 2, 2**40)
    assert p.unpack_ids(p.pack_ids(p.GOODBYE, [])) == ()
    body = {"pool": "cpu", "capacity": 4}
    assert p.decode_json(p.encode_json(p.REGISTER, body)) == body
    assert p.decode_json(p.HEARTBEAT) == {}


def test_calls_and_results_round_trip_with_closures() -> None:
    offset = 10
    fn, args, kwargs = p.load_call(p.dump_call(lambda x, y=0: x + y + offset, (1,), {"y": 2}))
    assert fn(*args, **kwargs) == 13
    fn, args, kwargs = p.load_call(p.dump_call(divmod, (7, 2), {}))
    assert (fn(*args, **kwargs), kwargs) == ((3, 1), {})
    assert pickle.loads(p.dump_result({"a": [1, 2]})) == {"a": [1, 2]}


def test_functions_are_pickled_and_unpickled_once() -> None:
    pickled, loaded = p.PickledFunctions(), p.LoadedFunctions(max_entries=2)
    offset = 10

    def add(x: int) -> int:
        return x + offset

    first = p.dump_call(add, (1,), {}, pickled)
    second = p.dump_call(add, ([2],), {}, pickled)
    assert first[: p.CALL_HEADER.size] == second[: p.CALL_HEADER.size]
    fn_a, args_a, _ = p.load_call(first, loaded)
    fn_b, args_b, _ = p.load_call(second, loaded)
    assert fn_a is fn_b and fn_a(*args_a) == 11 and args_b == ([2],)
    other = p.load_call(p.dump_call(lambda: 1, (), {}, pickled), loaded)[0]
    p.load_call(p.dump_call(lambda: 2, (), {}, pickled), loaded)  # evicts add
    assert other() == 1
    assert p.load_call(first, loaded)[0] is not fn_a  # unpickled again after eviction


def test_small_payloads_stay_inline(tmp_path: Path) -> None:
    assert p.spill(b"x" * 100, tmp_path, 100, "arg") == (0, b"x" * 100)
    assert p.spill(b"x" * 1000, None, 100, "arg") == (0, b"x" * 1000)
    assert list(tmp_path.iterdir()) == []
    assert p.read_payload(0, b"abc", delete=True) == b"abc"


def test_large_payloads_spill_and_the_reader_cleans_up(tmp_path: Path) -> None:
    payload = os.urandom(5 * 1024 * 1024)
    flags, frame = p.spill(payload, tmp_path, p.DEFAULT_SPILL_THRESHOLD, "result")
    assert flags == p.SPILLED
    path = Path(os.fsdecode(frame))
    assert path.parent == tmp_path and path.suffix == ".result"
    assert len(frame) < 200
    assert p.read_payload(flags, frame, delete=False) == payload
    assert path.exists()  # a task's argument stays for retries
    assert p.read_payload(flags, frame, delete=True) == payload
    assert list(tmp_path.iterdir()) == []


def _remote_failure() -> None:
    raise KeyError("missing")  # marker: remote source line


def test_remote_exception_keeps_its_type_and_traceback() -> None:
    try:
        _remote_failure()
    except KeyError as exc:
        payload = p.dump_error(exc)
    rebuilt = p.load_error(payload)
    assert isinstance(rebuilt, KeyError)
    assert isinstance(rebuilt.__cause__, RemoteTraceback)
    assert "marker: remote source line" in str(rebuilt.__cause__)
    shown = "".join(traceback.format_exception(rebuilt))
    assert "marker: remote source line" in shown
    assert "The above exception was the direct cause" in shown


class _Stubborn(Exception):
    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a}/{b}")


def test_unpicklable_exception_becomes_remote_error() -> None:
    rebuilt = p.load_error(p.dump_error(_Stubborn(1, 2)))
    assert isinstance(rebuilt, RemoteError)
    assert "_Stubborn: 1/2" in str(rebuilt)
    assert "Fix:" in str(rebuilt)


def test_by_value_functions_get_their_source_lines_back() -> None:
    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)
    try:
        fn = pickle.loads(cloudpickle.dumps(_remote_failure))
    finally:
        cloudpickle.unregister_pickle_by_value(module)
    try:
        fn()
    except KeyError as exc:
        payload = p.dump_error(exc)
    assert "marker" not in str(p.load_error(payload).__cause__)
    filled = str(p.load_error(payload, __file__).__cause__)
    assert f'File "{__file__}"' in filled
    assert "marker: remote source line" in filled


def test_map_chunks() -> None:
    assert list(p.chunks([range(5), "abcde"], 2)) == [
        [(0, "a"), (1, "b")],
        [(2, "c"), (3, "d")],
        [(4, "e")],
    ]
    assert p.run_chunk(pow, [(2, 3), (3, 2)]) == [8, 9]


def test_errors_say_what_to_do() -> None:
    timeout = TaskTimeout(3, 0.5)
    assert isinstance(timeout, TimeoutError)
    assert "0.5 s" in str(timeout) and "Fix:" in str(timeout)
    lost = TaskLost(4, "worker lost 3 times")
    assert "worker lost 3 times" in str(lost) and "max_retries" in str(lost)
    with pytest.raises(TimeoutError):
        raise timeout
