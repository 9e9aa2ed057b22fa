"""A built-in simulator of the sales platforms' open APIs and webhook pushes (抖店, 有赞, 京东).

It serves the platforms' endpoints on localhost with their real payload shapes and request
signatures, and pushes signed webhook messages to OrderHub. Its signing and payload code is
written independently of `orderhub.adapters`, so a protocol bug cannot hide on both sides.
"""

from orderhub.simulator.app import create_app, run, serve_in_background
from orderhub.simulator.state import Simulator

__all__ = ["Simulator", "create_app", "run", "serve_in_background"]
