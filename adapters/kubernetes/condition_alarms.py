"""The node conditions that are alarms: one entry per alarm this adapter can raise.

Pure data, imported by both the mapping file (which may change a severity or turn an
alarm off, by the alarm's name) and alarms.py (which builds the dictionary and the
active alarms). Why each default severity is what it is: docs/drafts/kubernetes-alarms.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# The O2ims perceived severities an alarm may have (o2ims.adapter.v1.AlarmSeverity names).
SEVERITIES: Final = ("CRITICAL", "MAJOR", "MINOR", "WARNING", "INDETERMINATE")


@dataclass(frozen=True)
class ConditionAlarm:
    """The alarm raised while a node's condition `condition_type` has `status`."""

    name: str
    condition_type: str
    status: str
    default_severity: str  # one of SEVERITIES
    description: str
    repair: str


CONDITION_ALARMS: Final[tuple[ConditionAlarm, ...]] = (
    ConditionAlarm(
        name="NodeNotReady",
        condition_type="Ready",
        status="False",
        default_severity="CRITICAL",
        description="The node's kubelet reports the node not ready to run pods (its container "
        "runtime, network or kubelet is failing). No new pods are scheduled on it, and its pods "
        "are evicted once the not-ready toleration (300 s by default) runs out.",
        repair="Read the condition's reason and message (kubectl describe node <node>). On the "
        "node, check the kubelet and the container runtime (systemctl status kubelet containerd; "
        "journalctl -u kubelet) and restart the failing one. If the node cannot be recovered, "
        "cordon and drain it, then repair or replace the machine.",
    ),
    ConditionAlarm(
        name="NodeUnreachable",
        condition_type="Ready",
        status="Unknown",
        default_severity="MAJOR",
        description="The control plane has stopped receiving the node's status: its kubelet "
        "has not renewed its lease within the grace period (40 s by default). The node may be "
        "down, or only cut off from the API server with its pods still serving. No new pods "
        "are scheduled on it; its pods are evicted after the unreachable toleration (300 s).",
        repair="Check that the machine is powered on and reachable from the API server "
        "(network, firewall, load balancer), that the kubelet is running, and that its client "
        "certificate has not expired. If the node is lost, cordon and drain it and delete the "
        "Node so its workloads are rescheduled.",
    ),
    ConditionAlarm(
        name="NodeMemoryPressure",
        condition_type="MemoryPressure",
        status="True",
        default_severity="MAJOR",
        description="Available memory on the node is below the kubelet's eviction threshold: "
        "the kubelet is evicting pods and no new pods are scheduled on the node.",
        repair="Find the largest memory consumers (kubectl top pods --all-namespaces, sorted by "
        "node), set or lower their memory limits, move workloads to other nodes, check system "
        "daemons for leaks, or add memory or nodes.",
    ),
    ConditionAlarm(
        name="NodeDiskPressure",
        condition_type="DiskPressure",
        status="True",
        default_severity="MAJOR",
        description="Free space or inodes on the node's root or image filesystem are below the "
        "kubelet's eviction threshold: the kubelet is removing images and evicting pods, and no "
        "new pods are scheduled on the node.",
        repair="Free space on the node: remove unused images and containers (crictl rmi "
        "--prune), rotate or delete large logs, find pods with large emptyDir volumes or "
        "container logs, or grow the filesystem.",
    ),
    ConditionAlarm(
        name="NodePIDPressure",
        condition_type="PIDPressure",
        status="True",
        default_severity="MINOR",
        description="Available process IDs on the node are below the kubelet's eviction "
        "threshold: the kubelet evicts the pods using the most process IDs, and no new pods "
        "are scheduled on the node.",
        repair="Find the pods or processes with the most processes or threads (a fork loop, a "
        "thread leak), fix or restart them, set a pod PID limit (kubelet podPidsLimit), or "
        "raise kernel.pid_max on the node.",
    ),
    ConditionAlarm(
        name="NodeNetworkUnavailable",
        condition_type="NetworkUnavailable",
        status="True",
        default_severity="CRITICAL",
        description="The node's pod network is not configured: pods on the node cannot reach "
        "other pods or services, and no new pods are scheduled on it.",
        repair="Check the CNI plugin's agent on the node (for example calico-node or cilium "
        "pods in kube-system) and its logs, and the node's routes; with a cloud provider, "
        "check its route controller. Restart the CNI agent on the node.",
    ),
)
ALARM_NAMES: Final = tuple(alarm.name for alarm in CONDITION_ALARMS)
DEFAULT_SEVERITIES: Final = {alarm.name: alarm.default_severity for alarm in CONDITION_ALARMS}
