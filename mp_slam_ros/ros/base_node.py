"""What both rclpy shells share: parameter descriptors and a run loop that shuts down cleanly.

Shutdown: ``ros2 launch`` under a terminal's Ctrl-C delivers SIGINT twice to each node (once from the
terminal to the whole process group, once forwarded by launch), and a service manager sends SIGTERM.
rclpy's own handlers turn a signal into an exception wherever the main thread happens to be, the
second one inside ``destroy_node()``.  So :func:`run_node` installs plain Python handlers that only
set a flag, spins in short slices so the flag is seen, and tears the node down with every further
signal absorbed: exit code 0, no traceback.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

import rclpy
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.logging import get_logger
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from rclpy.timer import Timer

from .parameters import ParameterSpec

__all__ = ["descriptor", "plain", "run_node", "steady_timer", "warm_up_kernels"]

_ROS_TYPES = {
    "bool": ParameterType.PARAMETER_BOOL,
    "int": ParameterType.PARAMETER_INTEGER,
    "double": ParameterType.PARAMETER_DOUBLE,
    "string": ParameterType.PARAMETER_STRING,
    "double_array": ParameterType.PARAMETER_DOUBLE_ARRAY,
    "string_array": ParameterType.PARAMETER_STRING_ARRAY,
}

# How long a spin slice waits: the latency of noticing a signal.
_SPIN_SLICE_S = 0.1


def descriptor(s: ParameterSpec) -> ParameterDescriptor:
    """The ParameterDescriptor of a spec (type, description with unit, constraints, range, read-only)."""
    d = ParameterDescriptor(
        name=s.name,
        type=_ROS_TYPES[s.type],
        description=s.full_description,
        additional_constraints=s.constraints,
        read_only=s.read_only,
    )
    if s.value_range is not None and s.type == "int":
        d.integer_range = [IntegerRange(from_value=int(s.value_range[0]), to_value=int(s.value_range[1]), step=0)]
    elif s.value_range is not None and s.type == "double":
        d.floating_point_range = [FloatingPointRange(from_value=float(s.value_range[0]),
                                                     to_value=float(s.value_range[1]), step=0.0)]
    return d


def plain(value: Any) -> Any:
    """A parameter value as the ROS-free cores want it: rclpy hands arrays back as array.array / numpy."""
    if isinstance(value, (str, bytes, bool, int, float)) or value is None:
        return value
    return list(value)


def steady_timer(node: Node, period_s: float, callback: Callable[[], None]) -> Timer:
    """A timer on the steady clock: with ``use_sim_time`` a ROS-time timer stops with /clock (a paused
    or finished bag), and diagnostics and the map must keep coming while the node lives."""
    return node.create_timer(period_s, callback, clock=Clock(clock_type=ClockType.STEADY_TIME))


def warm_up_kernels(node: Node, precision: str, stages: tuple[str, ...]) -> float:
    """Compile (or load from the kernel cache) what the node's pipeline runs, before it subscribes:
    the first message is then processed at full speed instead of waiting seconds for numba."""
    from ..warmup import warm_up

    logger = node.get_logger()
    logger.info(f"compiling kernels ({', '.join(stages)}) ...")
    seconds = warm_up([precision], progress=lambda label, s: None, stages=stages)
    logger.info(f"compiling kernels ... done in {seconds:.1f} s")
    return seconds


def run_node(make_node: Callable[[], Node], args: list[str] | None = None) -> int:
    """Create the node, spin until SIGINT / SIGTERM / ROS shutdown, tear down; the process exit code.

    A node that cannot start (a bad parameter, a map that does not load) logs its reason and gives 1.
    """
    stop = threading.Event()
    starting = True

    def request_stop(signum: int, frame: Any) -> None:
        stop.set()
        if starting:  # still compiling kernels or loading a map: abort that, nothing to tear down yet
            raise KeyboardInterrupt

    # Installed before rclpy.init and kept to the end: a late second signal finds a flag, not rclpy.
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, request_stop)
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    node = None
    executor = SingleThreadedExecutor()
    code = 0
    try:
        try:
            node = make_node()
        finally:
            starting = False
        executor.add_node(node)
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=_SPIN_SLICE_S)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ValueError, OSError) as err:  # a start-up refusal: the reason, not a traceback
        get_logger("mp_slam_ros").fatal(str(err))
        code = 1
    finally:
        executor.shutdown(timeout_sec=1.0)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        # Python drops its signal handlers while the interpreter finalises, so a late signal (launch
        # forwards Ctrl-C a moment after the terminal did) would kill the exiting process by signal.
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_IGN)
    return code
