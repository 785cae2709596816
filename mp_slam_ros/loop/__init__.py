"""Loop closure: place recognition, geometric verification, pose graph."""
