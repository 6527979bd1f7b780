from aifactory.control.autoscaler import Autoscaler
from aifactory.specs import load_service

SPEC = """
name: s
models: [m]
engine: {type: llama.cpp, model: x}
replicas: {min: 0, max: 4}
autoscaling: {target_concurrency: 2, scale_up_window: 5s, scale_down_window: 10s, idle_to_zero: 30s}
"""


def test_request_at_zero_scales_to_one_at_once() -> None:
    scaler, service = Autoscaler(), load_service(SPEC)
    assert scaler.wanted(service, 0, 0, now=0) == 0
    assert scaler.wanted(service, 0, 1, now=1) == 1
    assert scaler.decisions("s")[-1].reason == "request waiting at zero replicas"


def test_scale_up_waits_for_the_window_then_jumps_to_target() -> None:
    scaler, service = Autoscaler(), load_service(SPEC)
    scaler.wanted(service, 0, 1, now=0)  # 1 replica
    assert scaler.wanted(service, 7, 0, now=1) == 1  # load 7 needs 4, window not yet over
    assert scaler.wanted(service, 7, 0, now=6) == 4
    assert scaler.wanted(service, 50, 0, now=20) == 4  # never above max


def test_scale_down_keeps_one_until_idle_then_zero() -> None:
    scaler, service = Autoscaler(), load_service(SPEC)
    scaler.wanted(service, 0, 1, now=0)
    scaler.wanted(service, 8, 0, now=1)
    assert scaler.wanted(service, 8, 0, now=6) == 4
    assert scaler.wanted(service, 1, 0, now=10) == 4
    assert scaler.wanted(service, 1, 0, now=21) == 1  # after the down window
    assert scaler.wanted(service, 0, 0, now=40) == 1  # idle, but not for 30 s yet
    assert scaler.wanted(service, 0, 0, now=52) == 0
    assert [d.after for d in scaler.decisions("s")] == [1, 4, 1, 0]


def test_min_is_kept() -> None:
    scaler = Autoscaler()
    service = load_service(SPEC.replace("min: 0", "min: 2"))
    assert scaler.wanted(service, 0, 0, now=0) == 2
    assert scaler.wanted(service, 0, 0, now=1000) == 2
