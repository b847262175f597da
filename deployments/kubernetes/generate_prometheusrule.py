"""Wrap deployments/monitoring/prometheus-alerts-adapters.yaml into a PrometheusRule.

kustomize cannot embed a file into a custom resource's spec, so the PrometheusRule is generated
and checked in; tests/deployments/test_manifests.py fails when it drifts from the rules file.

    .venv/bin/python deployments/kubernetes/generate_prometheusrule.py          # rewrite
    .venv/bin/python deployments/kubernetes/generate_prometheusrule.py --check  # exit 1 on drift
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deployments" / "monitoring" / "prometheus-alerts-adapters.yaml"
OUTPUT = REPO / "deployments" / "kubernetes" / "base" / "prometheusrule.yaml"
HEADER = (
    "# Generated from deployments/monitoring/prometheus-alerts-adapters.yaml by\n"
    "# deployments/kubernetes/generate_prometheusrule.py: edit the rules file, then rerun it.\n"
)


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (PromQL, descriptions) as literal blocks, as in the rules file."""


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str_representer)


def render(rules_text: str) -> str:
    """The PrometheusRule manifest holding the rule groups of `rules_text`."""
    rules: dict[str, Any] = yaml.safe_load(rules_text)
    manifest = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "netweave-alerts"},
        "spec": {"groups": rules["groups"]},
    }
    return HEADER + yaml.dump(manifest, Dumper=_BlockDumper, sort_keys=False, width=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="fail if the checked-in file drifted")
    args = parser.parse_args(argv)
    expected = render(RULES.read_text(encoding="utf-8"))
    if args.check:
        if OUTPUT.read_text(encoding="utf-8") != expected:
            print(f"{OUTPUT} is out of date: run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(expected, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
