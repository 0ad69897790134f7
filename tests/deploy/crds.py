"""Offline validation of custom resources against vendored upstream CRDs (``deploy/crds/``).

An API server validates a custom resource against its CRD's ``openAPIV3Schema`` (a
structural subset of JSON Schema) and, with ``kubectl apply --validate=strict`` (the
default since Kubernetes 1.25), refuses fields the schema does not declare. Here the same
schema goes to ``jsonschema``'s Draft 2020-12 validator; strictness is added the way
kubeconform's ``-strict`` / openapi2jsonschema do it: every object schema that declares
``properties`` and neither ``additionalProperties`` nor
``x-kubernetes-preserve-unknown-fields`` gets ``additionalProperties: false``.

Hand-written because none of the tools at hand reads a CRD: ``kubernetes-validate`` ships
only the core API schemas, and ``check-jsonschema`` takes a JSON Schema, not a CRD. What an
API server does beyond the schema (CEL ``x-kubernetes-validations``, defaulting, admission
webhooks) is not evaluated here; see docs/scale-out.md.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from tests.conftest import REPO_ROOT

CRDS = REPO_ROOT / "deploy" / "crds"


def read(path: Path) -> bytes:
    """A vendored file's upstream bytes (``.gz`` files decompressed)."""
    raw = path.read_bytes()
    return gzip.decompress(raw) if path.suffix == ".gz" else raw


def sources() -> dict[str, dict[str, str]]:
    return json.loads((CRDS / "sources.json").read_text())


def sha256(path: Path) -> str:
    return hashlib.sha256(read(path)).hexdigest()


@cache
def definitions() -> dict[tuple[str, str], dict]:
    """``(group, kind)`` -> CRD, for every vendored CRD."""
    out = {}
    for name in sources():
        crd = yaml.safe_load(read(CRDS / name))
        out[(crd["spec"]["group"], crd["spec"]["names"]["kind"])] = crd
    return out


def strict(schema: Any) -> Any:
    """A copy of an openAPIV3Schema that refuses undeclared fields (see the module docstring)."""
    schema = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
            return
        if not isinstance(node, dict):
            return
        if (
            "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        for key in ("properties", "patternProperties"):
            for child in node.get(key, {}).values():
                walk(child)
        for key in ("items", "additionalProperties", "not"):
            if isinstance(node.get(key), dict | list):
                walk(node[key])
        for key in ("allOf", "anyOf", "oneOf"):
            walk(node.get(key, []))

    walk(schema)
    return schema


@cache
def _validator(group: str, kind: str, version: str) -> jsonschema.Draft202012Validator:
    crd = definitions().get((group, kind))
    if crd is None:
        raise LookupError(f"no vendored CRD for {kind} in {group}")
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            if not v.get("served"):
                raise LookupError(f"{group}/{version} {kind} is not served")
            return jsonschema.Draft202012Validator(strict(v["schema"]["openAPIV3Schema"]))
    served = [v["name"] for v in crd["spec"]["versions"] if v.get("served")]
    raise LookupError(f"{kind}: no version {version!r} in {group}; served: {served}")


def errors(obj: dict) -> list[str]:
    """Every schema violation of one custom resource, as ``path: message`` (empty when valid)."""
    group, _, version = obj["apiVersion"].rpartition("/")
    validator = _validator(group, obj["kind"], version)
    return [
        f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
    ]
