"""The backup CronJob and the restore Job run the operations guide's own backup commands (the
ones tests/backup_procedure.py reads), into and from one volume, and the CronJob's script
works: run here against a real Redis, with its volume a directory."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import kubernetes_validate  # type: ignore[import-untyped]  # no stubs, no py.typed
import pytest
import yaml

from tests.backup_procedure import PROCEDURE
from tests.deployments.manifests import KUBERNETES, OVERLAYS, Manifest, find, kustomize

DAY_S = 86_400


def job_pod(job_spec: Manifest) -> Manifest:
    pod: Manifest = job_spec["template"]["spec"]
    return pod


def script(pod: Manifest) -> str:
    (each,) = pod["containers"]
    assert each["command"] == ["/bin/sh", "-c"]
    (text,) = each["args"]
    return str(text)


def volume_claims(pod: Manifest) -> dict[str, str]:
    """mountPath -> PersistentVolumeClaim of the pod's one container."""
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    (each,) = pod["containers"]
    return {m["mountPath"]: claims[m["name"]] for m in each["volumeMounts"] if m["name"] in claims}


@pytest.fixture(scope="module")
def restore_job() -> Manifest:
    (job,) = [doc for doc in yaml.safe_load_all(kustomize(KUBERNETES / "restore")) if doc]
    return dict(job)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_backup_cronjob_runs_the_documented_backup_into_its_volume(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    objects = rendered[overlay]
    cronjob = find(objects, "CronJob", "netweave-backup")
    spec = cronjob["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["schedule"].split()[1] == "*/6"  # every 6 hours
    pod = job_pod(spec["jobTemplate"]["spec"])
    text = script(pod)
    for step in ("backup", "verify"):
        assert PROCEDURE[step] in text.splitlines(), step
    claim = volume_claims(pod)["/backups"]
    assert find(objects, "PersistentVolumeClaim", claim)
    assert 'BACKUP="/backups/netweave-' in text and "-delete" in text


def test_restore_job_runs_the_documented_restore_from_the_backups_volume(
    rendered: dict[str, list[Manifest]], restore_job: Manifest
) -> None:
    kubernetes_validate.validate(restore_job, kubernetes_validate.latest_version(), strict=True)
    pod = job_pod(restore_job["spec"])
    lines = script(pod).splitlines()
    assert lines.index(PROCEDURE["verify"]) < lines.index(PROCEDURE["restore"])
    assert "--replace" not in script(pod)  # never over keys already there
    backup_pod = job_pod(
        find(rendered["production"], "CronJob", "netweave-backup")["spec"]["jobTemplate"]["spec"]
    )
    assert volume_claims(pod) == volume_claims(backup_pod)
    # Production's NetworkPolicies admit the backup's pods (the restore's too) to Redis.
    component = {"app.kubernetes.io/component": "backup"}
    assert restore_job["spec"]["template"]["metadata"]["labels"].items() >= component.items()
    assert backup_pod is not None
    redis_policy = find(rendered["production"], "NetworkPolicy", "netweave-redis")
    admitted = [
        peer["podSelector"]["matchLabels"]
        for rule in redis_policy["spec"]["ingress"]
        for peer in rule["from"]
    ]
    assert any(labels.items() >= component.items() for labels in admitted)
    egress = find(rendered["production"], "NetworkPolicy", "netweave-backup")["spec"]["egress"]
    assert {p["port"] for rule in egress for p in rule["ports"]} == {6379, 26379}


def test_backup_script_writes_a_verified_backup_and_deletes_old_ones(
    rendered: dict[str, list[Manifest]], redis_url: str, tmp_path: Path
) -> None:
    pod = job_pod(
        find(rendered["production"], "CronJob", "netweave-backup")["spec"]["jobTemplate"]["spec"]
    )
    (each,) = pod["containers"]
    env = {e["name"]: e["value"] for e in each["env"]}
    retention_s = int(env["RETENTION_DAYS"]) * DAY_S
    volume = tmp_path / "backups"
    volume.mkdir()
    expired, kept = volume / "netweave-old.backup", volume / "netweave-recent.backup"
    other = volume / "notes.txt"
    now = time.time()
    for path, age in (
        (expired, retention_s + 3600),
        (kept, retention_s - 3600),
        (other, 2 * retention_s),
    ):
        path.write_text("x")
        os.utime(path, (now - age, now - age))

    result = subprocess.run(
        ["sh", "-c", script(pod).replace("/backups", str(volume))],
        env={**env, "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "REDIS_URL": redis_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    made = sorted(p.name for p in volume.glob("netweave-2*.backup"))
    assert len(made) == 1 and "checksum and format good" in result.stdout
    assert not expired.exists() and kept.exists() and other.exists()
