"""Realistic v1 Node objects, shaped as a kube-apiserver returns them in JSON.

`make_node` builds one Node; `simulated_cluster` builds a deterministic cluster of them.
`metadata.resourceVersion` is left out: the simulator's server assigns it.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

_UID_NAMESPACE = uuid.UUID("6f1c3a55-4c1d-4b8e-9a4e-2b7f0d6c9e11")

_BINARY_SUFFIXES = {
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
    "Pi": 1024**5,
    "Ei": 1024**6,
}
_DECIMAL_SUFFIXES = {
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
}


def rfc3339(moment: datetime) -> str:
    """Kubernetes metav1.Time form: second precision, UTC, trailing "Z"."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def quantity_bytes(quantity: str) -> int:
    """Bytes in a Kubernetes quantity such as "32Gi", "500M" or "1073741824"."""
    for suffix, factor in {**_BINARY_SUFFIXES, **_DECIMAL_SUFFIXES}.items():
        if quantity.endswith(suffix):
            return int(float(quantity[: -len(suffix)]) * factor)
    return int(quantity)


def quantity_millicores(quantity: str) -> int:
    """Millicores in a CPU quantity such as "8", "7910m" or "0.5"."""
    if quantity.endswith("m"):
        return int(quantity[:-1])
    return round(float(quantity) * 1000)


def _cpu_form(millicores: int) -> str:
    return str(millicores // 1000) if millicores % 1000 == 0 else f"{millicores}m"


def _digest(*parts: str) -> bytes:
    return hashlib.sha256("\x00".join(parts).encode()).digest()


def _hex_id(*parts: str) -> str:
    return _digest(*parts).hex()[:32]


def _uuid_from(*parts: str) -> str:
    return str(uuid.uuid5(_UID_NAMESPACE, "\x00".join(parts)))


def _internal_ip(name: str) -> str:
    digest = _digest("ip", name)
    return f"10.0.{digest[0] % 250 + 1}.{digest[1] % 250 + 2}"


def _pod_cidr(name: str) -> str:
    digest = _digest("cidr", name)
    return f"10.244.{digest[2]}.0/24"


_IMAGES: tuple[tuple[str, int], ...] = (
    ("registry.k8s.io/kube-proxy:v1.31.4", 30_224_592),
    ("docker.io/calico/node:v3.28.2", 116_902_544),
    ("docker.io/calico/cni:v3.28.2", 94_515_201),
    ("registry.k8s.io/pause:3.10", 320_368),
)


def _images(name: str) -> list[dict[str, Any]]:
    images = []
    for ref, size in _IMAGES:
        repo = ref.rsplit(":", 1)[0]
        digest = hashlib.sha256(ref.encode()).hexdigest()
        images.append({"names": [f"{repo}@sha256:{digest}", ref], "sizeBytes": size})
    return images


def _conditions(now: datetime, transition: datetime) -> list[dict[str, Any]]:
    heartbeat = rfc3339(now)
    since = rfc3339(transition)
    rows = (
        (
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
    )
    return [
        {
            "type": kind,
            "status": status,
            "lastHeartbeatTime": heartbeat,
            "lastTransitionTime": since,
            "reason": reason,
            "message": message,
        }
        for kind, status, reason, message in rows
    ]


def _managed_fields(at: str) -> list[dict[str, Any]]:
    return [
        {
            "manager": "kubelet",
            "operation": "Update",
            "apiVersion": "v1",
            "time": at,
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {
                    "f:annotations": {
                        ".": {},
                        "f:volumes.kubernetes.io/controller-managed-attach-detach": {},
                    },
                    "f:labels": {
                        ".": {},
                        "f:beta.kubernetes.io/arch": {},
                        "f:beta.kubernetes.io/os": {},
                        "f:kubernetes.io/arch": {},
                        "f:kubernetes.io/hostname": {},
                        "f:kubernetes.io/os": {},
                    },
                },
                "f:spec": {"f:providerID": {}},
            },
        },
        {
            "manager": "kubelet",
            "operation": "Update",
            "apiVersion": "v1",
            "time": at,
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:status": {
                    "f:allocatable": {},
                    "f:capacity": {},
                    "f:conditions": {},
                    "f:nodeInfo": {},
                }
            },
            "subresource": "status",
        },
    ]


def make_node(
    name: str,
    *,
    zone: str | None = "zone-a",
    region: str | None = "region-1",
    instance_type: str = "m5.2xlarge",
    arch: str = "amd64",
    cpu: str = "8",
    memory: str = "32Gi",
    pods: str = "110",
    extended: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    taints: Sequence[Mapping[str, Any]] = (),
    unschedulable: bool = False,
    kubelet_version: str = "v1.31.4",
    os_image: str = "Ubuntu 24.04.1 LTS",
    kernel_version: str = "6.8.0-49-generic",
    container_runtime: str = "containerd://1.7.22",
    provider_id: str | None = None,
    system_uuid: str | None = None,
    uid: str | None = None,
    now: datetime | None = None,
    internal_ip: str | None = None,
    pod_cidr: str | None = None,
) -> dict[str, Any]:
    """One v1 Node as the API server serves it (without `metadata.resourceVersion`).

    Defaults are deterministic in `name` (uid, IP, pod CIDR, machine ids) except the
    timestamps, which follow `now` (default: the current time). `labels` and
    `annotations` are merged over the ones a kubelet/CNI would set; `extended` adds
    extended resources (e.g. {"nvidia.com/gpu": "4"}) to capacity and allocatable.
    """
    now = now or datetime.now(UTC)
    created = now - timedelta(days=3, hours=_digest("age", name)[0] % 24)
    created_at = rfc3339(created)
    ip = internal_ip or _internal_ip(name)
    cidr = pod_cidr or _pod_cidr(name)
    system_uuid = system_uuid or _uuid_from("system-uuid", name).upper()
    if provider_id is None:
        instance_id = "i-" + _hex_id("instance", name)[:17]
        provider_id = f"aws:///{zone or 'unknown'}/{instance_id}"

    node_labels: dict[str, str] = {
        "beta.kubernetes.io/arch": arch,
        "beta.kubernetes.io/instance-type": instance_type,
        "beta.kubernetes.io/os": "linux",
        "kubernetes.io/arch": arch,
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "node.kubernetes.io/instance-type": instance_type,
    }
    if region is not None:
        node_labels["topology.kubernetes.io/region"] = region
        node_labels["failure-domain.beta.kubernetes.io/region"] = region
    if zone is not None:
        node_labels["topology.kubernetes.io/zone"] = zone
        node_labels["failure-domain.beta.kubernetes.io/zone"] = zone
    node_labels.update(labels or {})

    node_annotations: dict[str, str] = {
        "kubeadm.alpha.kubernetes.io/cri-socket": "unix:///run/containerd/containerd.sock",
        "node.alpha.kubernetes.io/ttl": "0",
        "projectcalico.org/IPv4Address": f"{ip}/20",
        "projectcalico.org/IPv4VXLANTunnelAddr": cidr.rsplit(".", 1)[0] + ".1",
        "volumes.kubernetes.io/controller-managed-attach-detach": "true",
    }
    node_annotations.update(annotations or {})

    # What a kubelet reports: capacity from the machine, allocatable = capacity minus
    # kube-reserved/system-reserved and the hard eviction threshold.
    millicores = quantity_millicores(cpu)
    memory_ki = quantity_bytes(memory) // 1024
    memory_ki -= memory_ki // 100  # the kernel keeps some memory for itself
    reserved_cpu = 60 + millicores // 100
    reserved_memory_ki = 100 * 1024 + 255 * 1024 + min(memory_ki // 100, 1024 * 1024)
    storage_ki = 101_430_960
    capacity: dict[str, str] = {
        "cpu": _cpu_form(millicores),
        "ephemeral-storage": f"{storage_ki}Ki",
        "hugepages-1Gi": "0",
        "hugepages-2Mi": "0",
        "memory": f"{memory_ki}Ki",
        "pods": pods,
    }
    allocatable: dict[str, str] = {
        "cpu": _cpu_form(max(millicores - reserved_cpu, 0)),
        "ephemeral-storage": str(storage_ki * 1024 * 9 // 10),
        "hugepages-1Gi": "0",
        "hugepages-2Mi": "0",
        "memory": f"{max(memory_ki - reserved_memory_ki, 0)}Ki",
        "pods": pods,
    }
    for resource, amount in (extended or {}).items():
        capacity[resource] = amount
        allocatable[resource] = amount

    spec: dict[str, Any] = {"podCIDR": cidr, "podCIDRs": [cidr], "providerID": provider_id}
    if taints:
        spec["taints"] = [dict(taint) for taint in taints]
    if unschedulable:
        spec["unschedulable"] = True

    return {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "uid": uid or _uuid_from("node", name),
            "creationTimestamp": created_at,
            "labels": dict(sorted(node_labels.items())),
            "annotations": dict(sorted(node_annotations.items())),
            "managedFields": _managed_fields(created_at),
        },
        "spec": spec,
        "status": {
            "capacity": capacity,
            "allocatable": allocatable,
            "conditions": _conditions(now, created + timedelta(seconds=41)),
            "addresses": [
                {"type": "InternalIP", "address": ip},
                {"type": "Hostname", "address": name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": _hex_id("machine-id", name),
                "systemUUID": system_uuid,
                "bootID": _uuid_from("boot-id", name),
                "kernelVersion": kernel_version,
                "osImage": os_image,
                "containerRuntimeVersion": container_runtime,
                "kubeletVersion": kubelet_version,
                "kubeProxyVersion": kubelet_version,
                "operatingSystem": "linux",
                "architecture": arch,
            },
            "images": _images(name),
        },
    }


_GPU_SHAPES: tuple[dict[str, str], ...] = (
    {
        "instance_type": "p4d.24xlarge",
        "cpu": "96",
        "memory": "1152Gi",
        "gpus": "8",
        "product": "NVIDIA-A100-SXM4-40GB",
        "gpu_memory": "40960",
    },
    {
        "instance_type": "g5.xlarge",
        "cpu": "4",
        "memory": "16Gi",
        "gpus": "1",
        "product": "NVIDIA-A10G",
        "gpu_memory": "23028",
    },
)


def simulated_cluster(
    nodes: int = 50,
    zones: int = 3,
    region: str = "region-1",
    gpu_every: int = 5,
    seed: int = 0,
    *,
    control_planes: int = 3,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """A deterministic cluster of `nodes` Nodes (exactly that many).

    - `min(control_planes, nodes // 10)` control-plane nodes `control-plane-0`, ... with
      the node-role.kubernetes.io/control-plane label and NoSchedule taint;
    - the rest are `worker-000`, `worker-001`, ...; zones `<region>-a`, `<region>-b`, ...
      are given round-robin (control-plane nodes included);
    - every `gpu_every`-th worker (worker-004, worker-009, ... for 5; 0 = none) is a GPU
      node (p4d.24xlarge with 8 GPUs or g5.xlarge with 1, alternating) with
      `nvidia.com/gpu` capacity and the nvidia.com/gpu.* labels;
    - every 7th non-GPU worker (worker-006, worker-013, ...) has SR-IOV VFs
      (`intel.com/sriov_netdevice`);
    - uids, IPs, pod CIDRs and machine ids depend on `seed` and the name only.
    """
    if nodes < 0 or zones < 1:
        raise ValueError("nodes must be >= 0 and zones >= 1")
    if gpu_every < 0:
        raise ValueError("gpu_every must be >= 0")
    now = now or datetime.now(UTC)
    rng = random.Random(seed)
    zone_names = [f"{region}-{_zone_letter(i)}" for i in range(zones)]
    planes = min(control_planes, nodes // 10)
    cluster: list[dict[str, Any]] = []
    for index in range(nodes):
        worker = index - planes
        name = f"control-plane-{index}" if index < planes else f"worker-{worker:03d}"
        zone = zone_names[index % zones]
        third_octet = index // 250
        ip = f"10.{rng.randint(0, 3)}.{third_octet}.{index % 250 + 2}"
        common: dict[str, Any] = {
            "zone": zone,
            "region": region,
            "uid": _uuid_from("node", str(seed), name),
            "system_uuid": _uuid_from("system-uuid", str(seed), name).upper(),
            "internal_ip": ip,
            "pod_cidr": f"10.{244 + index // 256}.{index % 256}.0/24",
            "now": now,
        }
        if index < planes:
            cluster.append(
                make_node(
                    name,
                    instance_type="m5.xlarge",
                    cpu="4",
                    memory="16Gi",
                    labels={
                        "node-role.kubernetes.io/control-plane": "",
                        "node.kubernetes.io/exclude-from-external-load-balancers": "",
                    },
                    taints=[
                        {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}
                    ],
                    **common,
                )
            )
            continue
        if gpu_every and worker % gpu_every == gpu_every - 1:
            shape = _GPU_SHAPES[(worker // gpu_every) % len(_GPU_SHAPES)]
            cluster.append(
                make_node(
                    name,
                    instance_type=shape["instance_type"],
                    cpu=shape["cpu"],
                    memory=shape["memory"],
                    extended={"nvidia.com/gpu": shape["gpus"]},
                    labels={
                        "nvidia.com/gpu.present": "true",
                        "nvidia.com/gpu.product": shape["product"],
                        "nvidia.com/gpu.count": shape["gpus"],
                        "nvidia.com/gpu.memory": shape["gpu_memory"],
                    },
                    **common,
                )
            )
        elif worker % 7 == 6:
            cluster.append(
                make_node(
                    name,
                    instance_type="c5n.9xlarge",
                    cpu="36",
                    memory="96Gi",
                    extended={"intel.com/sriov_netdevice": "8"},
                    labels={"feature.node.kubernetes.io/network-sriov.capable": "true"},
                    **common,
                )
            )
        else:
            cluster.append(make_node(name, **common))
    return cluster


def _zone_letter(index: int) -> str:
    letters = "abcdefghijklmnopqrstuvwxyz"
    if index < len(letters):
        return letters[index]
    return letters[index // len(letters) - 1] + letters[index % len(letters)]
