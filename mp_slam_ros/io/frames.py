"""Coordinate frames of a camera rig: static-transform chains and the "no extrinsic" warning.

Odometry is published for ``base_link`` (REP-103: x forward, y left, z up), but the images are
in the camera's optical frame (REP-103 optical: x right, y down, z forward).  The link between
the two, ``T_base_camera``, comes from (in order of precedence) an explicit configuration, the
static transforms on ``/tf_static`` (REP-105; chained if the tree has intermediate frames), or
the simulator / an EuRoC ``T_BS``.  With none of these the camera frame is used as the base
frame (identity), which is right only when the images really are in ``base_frame``; otherwise
:func:`missing_extrinsic_warning` says so once, loudly.

Nothing here needs ROS: transforms are ``(parent, child, T_parent_child)`` tuples of 4x4
float64 matrices, what :func:`mp_slam_ros.io.ros_messages.transform_to_matrix` gives for a
``geometry_msgs/TransformStamped``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

import numpy as np

from ..solver.lie import inverse_transform

__all__ = [
    "EXTRINSIC_ASSUMED",
    "chain_transforms",
    "is_optical_frame",
    "missing_extrinsic_warning",
]

#: ``Sequence.T_base_camera_source`` when nothing gave the extrinsic and identity was assumed.
EXTRINSIC_ASSUMED = "assumed (no extrinsic: camera frame used as base frame)"


def is_optical_frame(frame_id: str) -> bool:
    """Whether ``frame_id`` names an optical frame by the REP-103 ``_optical_frame`` suffix."""
    return frame_id.strip("/").endswith("_optical_frame")


def chain_transforms(
    transforms: Iterable[tuple[str, str, np.ndarray]], target: str, source: str
) -> np.ndarray | None:
    """``T_target_source`` (the pose of ``source`` in ``target``, tf2's ``lookup_transform(target,
    source)``) chained through a tree of static transforms; None when the frames are not connected.

    Edges may be walked either way (a child's parent is as reachable as its children, as in
    tf2), so ``base_link -> camera_link -> camera_optical_frame`` and the reverse both work.
    A later transform for the same (parent, child) pair replaces an earlier one, as a newer
    latched ``/tf_static`` message does.  Leading slashes are ignored (tf2 strips them too).
    """
    target, source = target.strip("/"), source.strip("/")
    if target == source:
        return np.eye(4)
    edges: dict[tuple[str, str], np.ndarray] = {}
    for parent, child, T in transforms:
        edges[(parent.strip("/"), child.strip("/"))] = np.asarray(T, dtype=np.float64).reshape(4, 4)
    neighbours: dict[str, list[tuple[str, np.ndarray]]] = {}
    for (parent, child), T in edges.items():
        # Walking parent -> child multiplies by T_parent_child; child -> parent by its inverse.
        neighbours.setdefault(parent, []).append((child, T))
        neighbours.setdefault(child, []).append((parent, inverse_transform(T)))
    # Breadth first from the target: the shortest chain, and T_target_frame accumulated on the way.
    found: dict[str, np.ndarray] = {target: np.eye(4)}
    queue = deque([target])
    while queue:
        frame = queue.popleft()
        for nxt, T in neighbours.get(frame, ()):
            if nxt not in found:
                found[nxt] = found[frame] @ T
                if nxt == source:
                    return found[nxt]
                queue.append(nxt)
    return None


def missing_extrinsic_warning(base_frame: str, camera_frame: str, where: str) -> str | None:
    """The warning for "no base -> camera transform anywhere", or None when none is needed.

    None when the images are in ``base_frame`` already (identity is then exact).  ``where``
    says what was searched, e.g. ``"the bag's /tf_static"``.
    """
    if camera_frame and camera_frame.strip("/") == base_frame.strip("/"):
        return None
    named = f"'{camera_frame}'" if camera_frame else "(images carry no frame_id)"
    kind = "an optical frame (x right, y down, z forward)" if is_optical_frame(camera_frame) else "not the base frame"
    return (
        f"no transform {base_frame} -> {named} in {where} and no T_base_camera configured: ASSUMING the camera "
        f"frame is the base frame (identity). The camera frame is {kind}, so the odometry labelled "
        f"'{base_frame}' is really the camera's pose and its axes do not follow REP-103 (x forward, z up). "
        "Publish the extrinsic on /tf_static or set T_base_camera."
    )
