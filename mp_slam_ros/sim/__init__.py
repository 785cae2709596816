"""Synthetic stereo / RGB-D sequences of a textured room with exact ground truth.

:mod:`.scene` builds the room and its procedural textures, :mod:`.render` ray-casts a view
(grey image + exact depth), :mod:`.trajectories` gives smooth base_link paths as closed-form
functions of time, and :mod:`.sequence` puts them together as a lazy
:class:`mp_slam_ros.vision.types.Sequence`.

The room is 10 m x 8 m x 3 m (x in [-5, 5], y in [-4, 4], z up from the floor) with 8 boxes along
the walls. Paths (base origin, 1.3 m high; :func:`scene_info` recomputes these):

==============  ===========  ==========  ===================
path            length       duration    frames at 20 Hz
==============  ===========  ==========  ===================
two_lap_room    27.70 m      39.27 s     786 (lap 19.63 s)
figure_eight    15.74 m      22.44 s     449
straight        3.01 m       5.00 s      101
==============  ===========  ==========  ===================
"""

from .render import render_frame
from .scene import Scene, make_scene
from .sequence import SyntheticSceneInfo, default_camera, make_sequence, scene_info
from .trajectories import T_BASE_CAMERA, figure_eight, get_path, straight, two_lap_room

__all__ = [
    "T_BASE_CAMERA",
    "Scene",
    "SyntheticSceneInfo",
    "default_camera",
    "figure_eight",
    "get_path",
    "make_scene",
    "make_sequence",
    "render_frame",
    "scene_info",
    "straight",
    "two_lap_room",
]
