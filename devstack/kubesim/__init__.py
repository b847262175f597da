"""A small Kubernetes API server simulator speaking the real JSON wire protocol for Nodes.

See `devstack.kubesim.server` for what it reproduces and what it does not.
"""

from devstack.kubesim.nodes import make_node, simulated_cluster
from devstack.kubesim.server import KubeApiSimulator

__all__ = ["KubeApiSimulator", "make_node", "simulated_cluster"]
