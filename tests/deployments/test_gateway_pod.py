"""The gateway pod's Envoy: its configuration rendered at start by `python -m rest_facade.render`
(an init container), its certificates mounted so a renewal reaches it, and a shutdown that
drains Envoy before the core stops serving."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.pki import ensure_dev_pki, ensure_internal_pki, publish_secret
from netweave import settings
from rest_facade import render
from rest_facade.envoy_config import core_detection_s
from server.auth.policy import AccessPolicy
from server.config import edge_addresses
from tests.deployments.manifests import (
    OVERLAYS,
    Manifest,
    container,
    env_values,
    find,
    gateway_pod,
    pod_specs,
)

RENDER_CONFIG = "netweave-envoy-render"


def mounts(each: Manifest) -> dict[str, tuple[str, bool]]:
    """mountPath -> (volume, read-only) of one container."""
    return {m["mountPath"]: (m["name"], m.get("readOnly", False)) for m in each["volumeMounts"]}


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_envoy_reads_the_configuration_the_init_container_renders(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    objects = rendered[overlay]
    pod = gateway_pod(objects)
    (init,) = pod["initContainers"]
    assert init["image"] == container(pod, "envoy")["image"]  # the same image
    assert init["args"][:3] == ["python", "-m", "rest_facade.render"]
    assert "--validate" in init["args"]
    out = Path(flag(init["args"], "--out"))
    envoy = container(pod, "envoy")
    assert flag(envoy["args"], "-c") == str(out)
    volume, _ = mounts(init)[str(out.parent)]
    assert mounts(envoy)[str(out.parent)] == (volume, True)
    (source,) = [v for v in pod["volumes"] if v["name"] == volume]
    assert "emptyDir" in source
    # Nothing refers to a ConfigMap no manifest creates.
    config_maps = {o["metadata"]["name"] for o in objects if o["kind"] == "ConfigMap"}
    referenced = {v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v} | {
        ref["configMapRef"]["name"]
        for each in pod["containers"] + pod["initContainers"]
        for ref in each.get("envFrom", [])
    }
    assert referenced <= config_maps
    assert RENDER_CONFIG in referenced


def test_render_settings_are_ones_the_command_reads(rendered: dict[str, list[Manifest]]) -> None:
    data = find(rendered["production"], "ConfigMap", RENDER_CONFIG)["data"]
    known = {setting.name for setting in settings.settings_of(settings.ENVOY_RENDER)}
    assert set(data) <= known, set(data) - known


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_envoy_certificates_are_secret_directories_both_containers_mount(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    pod = gateway_pod(rendered[overlay])
    data = find(rendered[overlay], "ConfigMap", RENDER_CONFIG)["data"]
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    init, envoy = pod["initContainers"][0], container(pod, "envoy")
    files = [value for name, value in data.items() if value.startswith("/tls/")]
    assert len(files) == 6  # server pair, SMO CA, Envoy's edge pair and the internal CA
    for file in files:
        directory = str(Path(file).parent)
        volume, read_only = mounts(envoy)[directory]
        # A whole Secret as a directory: kubelet swaps its ..data link on renewal, which the
        # file-watched SDS sees (a subPath mount would never change).
        assert volume in secrets and read_only, file
        assert mounts(init)[directory] == (volume, True), file
    # No subPath anywhere: every mounted file follows its Secret or ConfigMap.
    for where, spec in pod_specs(rendered[overlay]):
        for each in spec["containers"] + spec.get("initContainers", []):
            for mount in each.get("volumeMounts", []):
                assert "subPath" not in mount and "subPathExpr" not in mount, (where, mount)


def test_the_rendered_settings_give_a_configuration_envoy_accepts(
    rendered: dict[str, list[Manifest]], tmp_path: Path
) -> None:
    """The pod's settings as they are, with its Secret mounts laid out as kubelet does."""
    data = find(rendered["production"], "ConfigMap", RENDER_CONFIG)["data"]
    dev = ensure_dev_pki(tmp_path / "pki")
    internal = ensure_internal_pki(tmp_path / "internal")
    secrets = {
        "/tls/server": {"tls.crt": dev.server_cert, "tls.key": dev.server_key},
        "/tls/smo-client-ca": {"ca.crt": dev.ca_cert},
        "/tls/envoy-edge": {
            "tls.crt": internal.edge.cert,
            "tls.key": internal.edge.key,
            "ca.crt": internal.ca_cert,
        },
    }
    for mount, files in secrets.items():
        publish_secret(
            tmp_path / mount.lstrip("/"),
            {name: path.read_bytes() for name, path in files.items()},
        )
    environ = {
        name: str(tmp_path / value.lstrip("/")) if value.startswith(("/tls/", "/run/")) else value
        for name, value in data.items()
    }
    out = tmp_path / "etc-envoy" / "envoy.yaml"

    assert render.main(["--out", str(out), "--validate"], environ) == render.OK
    # The certificates through file-watched SDS, by their Secret mounts' paths (symlinks kept).
    sds = "".join(path.read_text() for path in sorted((out.parent / "sds").iterdir()))
    for mount, files in secrets.items():
        for name in files:
            assert str(tmp_path / mount.lstrip("/") / name) in sds, (mount, name)
    assert "watched_directory" in sds
    # The core's drain outlasts Envoy's detection of it (settings: SHUTDOWN_DRAIN_SECONDS).
    core = container(gateway_pod(rendered["production"]), "core")
    core_drain = float(env_values(core)[settings.SHUTDOWN_DRAIN_SECONDS.name])
    assert core_detection_s(render.config_from_env(environ)) < core_drain


def test_envoy_drains_before_the_core_stops_serving_and_within_the_grace_period(
    rendered: dict[str, list[Manifest]],
) -> None:
    pod = gateway_pod(rendered["production"])
    envoy, core = container(pod, "envoy"), container(pod, "core")
    command = envoy["lifecycle"]["preStop"]["exec"]["command"]
    assert command[:3] == ["python", "-m", "rest_facade.envoy_drain"]
    delay = float(flag(command, "--delay"))
    drain = float(flag(command, "--drain-seconds"))
    assert flag(envoy["args"], "--drain-time-s") == flag(command, "--drain-seconds")
    assert (
        flag(command, "--admin-socket")
        == find(rendered["production"], "ConfigMap", RENDER_CONFIG)["data"][
            "NETWEAVE_ENVOY_ADMIN_SOCKET"
        ]
    )
    env = env_values(core)
    core_drain = float(env[settings.SHUTDOWN_DRAIN_SECONDS.name])
    core_grace = float(env[settings.SHUTDOWN_GRACE_SECONDS.name])
    # The core (SIGTERM at once, no preStop) keeps serving while Envoy, its only caller,
    # still sends to it; Kubernetes kills neither before both are done.
    assert delay + drain < core_drain
    assert pod["terminationGracePeriodSeconds"] > max(delay + drain, core_drain + core_grace)
    assert "lifecycle" not in core


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_core_and_the_edge_read_one_access_policy_that_is_not_open(
    rendered: dict[str, list[Manifest]], overlay: str, tmp_path: Path
) -> None:
    """Without NETWEAVE_AUTH_POLICY the core treats every caller as an admin: every topology
    mounts the policy into the core (access control) and the render container (edge rates)."""
    pod = gateway_pod(rendered[overlay])
    volumes = {v["name"]: v for v in pod["volumes"]}
    paths = set()
    for each in (container(pod, "core"), pod["initContainers"][0]):
        policy = Path(env_values(each)["NETWEAVE_AUTH_POLICY"])
        volume, read_only = mounts(each)[str(policy.parent)]
        assert read_only
        paths.add((volumes[volume]["configMap"]["name"], policy.name))
    ((config_map, key),) = paths  # both read the same file
    text = find(rendered[overlay], "ConfigMap", config_map)["data"][key]
    (tmp_path / key).write_text(text)
    loaded = AccessPolicy.load(tmp_path / key)
    assert not loaded.open
    assert loaded.clients
    assert "o2ims-admin" not in loaded.direct_calls


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_envoy_runs_one_worker_per_cpu_of_its_limit(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    """Envoy's default --concurrency is the node's CPU count: a pod limited to 1-2 CPUs on a
    large node would run dozens of workers, each costing hand-offs (docs/performance.md)."""
    envoy = container(gateway_pod(rendered[overlay]), "envoy")
    variable = settings.ENVOY_CONCURRENCY.name
    assert flag(envoy["args"], "--concurrency") == f"$({variable})"  # Kubernetes expands it
    workers = int(env_values(envoy)[variable])
    limit = str(envoy["resources"]["limits"]["cpu"])
    cpus = int(limit[:-1]) / 1000 if limit.endswith("m") else float(limit)
    assert workers == max(1, int(cpus)), (overlay, workers, limit)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_envoy_lists_every_core_worker_and_nothing_else(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    """One endpoint per core worker process, on the worker's edge port (NETWEAVE_EDGE_LISTEN
    + i, server/workers.py): a worker left out gets no calls, an extra endpoint none to
    answer them."""
    objects = rendered[overlay]
    core = container(gateway_pod(objects), "core")
    env = env_values(core)
    workers = int(env.get(settings.CORE_PROCESSES.name, str(settings.CORE_PROCESSES.default)))
    expected = edge_addresses(env[settings.EDGE_LISTEN.name], workers)
    data = find(objects, "ConfigMap", RENDER_CONFIG)["data"]
    assert tuple(data[settings.ENVOY_CORE_ENDPOINTS.name].split(",")) == expected
