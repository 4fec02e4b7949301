#!/usr/bin/env python3
"""Validates Kubernetes manifests offline: the built-in kinds against the schemas that
kubernetes-validate ships (strict: unknown fields are errors), the ServiceMonitor against
schema/servicemonitor.schema.json. Exit status 1 and one line per problem when any fails.

    python3 docker/kubernetes/validate.py [FILE...]    (default: every *.yaml beside this file)
"""
import json
import pathlib
import sys

import jsonschema
import kubernetes_validate
import yaml

HERE = pathlib.Path(__file__).resolve().parent
KUBERNETES_VERSION = "1.30.0"
OWN_SCHEMAS = {("monitoring.coreos.com/v1", "ServiceMonitor"): HERE / "schema" / "servicemonitor.schema.json"}


def problems(path):
    for document in yaml.safe_load_all(path.read_text()):
        if document is None:
            continue
        key = (document.get("apiVersion"), document.get("kind"))
        name = f"{path.name}: {key[1]} {document.get('metadata', {}).get('name')}"
        if key in OWN_SCHEMAS:
            schema = json.loads(OWN_SCHEMAS[key].read_text())
            for error in jsonschema.Draft202012Validator(schema).iter_errors(document):
                yield f"{name}: {'.'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}"
            continue
        try:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            yield f"{name}: {'.'.join(map(str, error.path)) or '(top)'}: {error.message}"
        except kubernetes_validate.SchemaNotFoundError:
            yield f"{name}: no schema for {key[0]} {key[1]}"


def main(arguments):
    files = [pathlib.Path(a) for a in arguments] or sorted(HERE.glob("*.yaml"))
    found = [problem for path in files for problem in problems(path)]
    for problem in found:
        print(problem)
    print(f"{len(files)} files, {len(found)} problems")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
