"""Validates custom resources against the openAPIV3Schema of their CustomResourceDefinitions,
strictly: unknown fields fail, as kubernetes-validate --strict does for built-in kinds (the API
server would prune them silently, which hides typos).

    validate_crs.py CRD_DIR MANIFEST...

Documents whose apiVersion/kind no CRD in CRD_DIR defines are skipped if their group is a
Kubernetes built-in one (kubernetes-validate checks those) and fail otherwise. Prints one line
per custom resource checked; exits 1 on the first invalid or unknown one. Run by tests/deploy.rs
with the virtualenv's Python (scripts/setup.sh), which has jsonschema and PyYAML.
"""
import copy
import glob
import os
import sys

import jsonschema
import yaml

# API groups of the built-in kinds (no CRD needed).
BUILTIN_GROUPS = {"", "apps", "batch", "policy", "rbac.authorization.k8s.io", "networking.k8s.io",
                  "autoscaling", "apiextensions.k8s.io"}


def strict(schema):
    """A copy of an OpenAPI v3 schema in which objects with listed properties refuse others."""
    schema = copy.deepcopy(schema)

    def walk(s):
        if not isinstance(s, dict):
            return
        if s.get("x-kubernetes-preserve-unknown-fields"):
            return
        if s.get("type") == "object" and "properties" in s and "additionalProperties" not in s:
            s["additionalProperties"] = False
        for key in ("properties", "patternProperties"):
            for sub in s.get(key, {}).values():
                walk(sub)
        for key in ("items", "additionalProperties", "not"):
            if isinstance(s.get(key), dict):
                walk(s[key])
        for key in ("allOf", "anyOf", "oneOf"):
            for sub in s.get(key, []):
                walk(sub)

    walk(schema)
    # metadata is the API server's ObjectMeta, not described by CRDs.
    schema.setdefault("properties", {})["metadata"] = {"type": "object"}
    return schema


def load_crds(crd_dir):
    crds = {}
    for path in sorted(glob.glob(os.path.join(crd_dir, "*.yaml"))):
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if not doc or doc.get("kind") != "CustomResourceDefinition":
                    continue
                spec = doc["spec"]
                for v in spec["versions"]:
                    key = (f"{spec['group']}/{v['name']}", spec["names"]["kind"])
                    crds[key] = (path, strict(v["schema"]["openAPIV3Schema"]))
    return crds


def main():
    crd_dir, manifests = sys.argv[1], sys.argv[2:]
    crds = load_crds(crd_dir)
    checked = 0
    for path in manifests:
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if not doc:
                    continue
                api, kind = doc.get("apiVersion", ""), doc.get("kind", "")
                name = doc.get("metadata", {}).get("name", "?")
                group = api.rsplit("/", 1)[0] if "/" in api else ""
                if (api, kind) not in crds:
                    if group in BUILTIN_GROUPS:
                        continue
                    print(f"{path}: {kind} {name}: no CRD for {api} in {crd_dir}")
                    return 1
                crd_path, schema = crds[(api, kind)]
                try:
                    jsonschema.validate(doc, schema)
                except jsonschema.ValidationError as e:
                    where = "/".join(str(p) for p in e.absolute_path)
                    print(f"{path}: {kind} {name}: {where}: {e.message}")
                    return 1
                print(f"ok {kind} {name} ({os.path.basename(crd_path)})")
                checked += 1
    print(f"{checked} custom resource(s) valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
