"""Checks what a schema validator cannot see: that the objects of one rendered kustomization
fit together. A Service whose selector matches no pod, an envFrom naming a ConfigMap that
does not exist, a volume of a missing ConfigMap or a grace period shorter than the drain all
pass the schema and fail only in the cluster, at the worst moment.

Usage: check_manifest_references.py RENDERED.yaml [NAME]   (exit 1, one line per problem)
Called by scripts/validate-manifests, with the PyYAML that kubernetes-validate brings.
"""

import re
import sys

import yaml

WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet"}
VAR_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def main(path, label):
    with open(path, encoding="utf-8") as file:
        objects = [o for o in yaml.safe_load_all(file) if o]
    problems = []
    index = {(o["kind"], namespace(o), o["metadata"]["name"]): o for o in objects}
    workloads = [o for o in objects if o["kind"] in WORKLOADS]

    for workload in workloads:
        check_workload(workload, index, problems)
    for service in kind(objects, "Service"):
        selector = service["spec"].get("selector")
        if not selector:
            continue
        selected = selecting(workloads, namespace(service), selector)
        if not selected:
            problems.append(f"{name(service)}: its selector {selector} matches no pod template")
        for port in service["spec"].get("ports", []):
            target = port.get("targetPort")
            if isinstance(target, str) and not any(target in port_names(w) for w in selected):
                problems.append(f"{name(service)}: targetPort {target!r} is no named container port of the pods it selects")
    for budget in kind(objects, "PodDisruptionBudget"):
        selector = budget["spec"]["selector"].get("matchLabels", {})
        if not selector or not selecting(workloads, namespace(budget), selector):
            problems.append(f"{name(budget)}: its selector {selector} matches no pod template")
    for autoscaler in kind(objects, "HorizontalPodAutoscaler"):
        target = autoscaler["spec"]["scaleTargetRef"]
        workload = index.get((target["kind"], namespace(autoscaler), target["name"]))
        if workload is None:
            problems.append(f"{name(autoscaler)}: scaleTargetRef {target['kind']}/{target['name']} does not exist")
            continue
        uses_cpu = any(m.get("resource", {}).get("name") == "cpu" for m in autoscaler["spec"].get("metrics", []))
        for container in pod_spec(workload)["containers"]:
            if uses_cpu and "cpu" not in container.get("resources", {}).get("requests", {}):
                problems.append(f"{name(autoscaler)}: scales on CPU utilisation but container {container['name']} of {name(workload)} has no CPU request")
        if autoscaler["spec"].get("minReplicas", 1) < 2:
            problems.append(f"{name(autoscaler)}: minReplicas below 2 leaves no replica to reconnect to during a drain")

    for problem in problems:
        print(f"{label}: {problem}")
    return 1 if problems else 0


def check_workload(workload, index, problems):
    spec = workload["spec"]
    labels = spec["template"]["metadata"].get("labels", {})
    selector = spec["selector"].get("matchLabels", {})
    if not matches(selector, labels):
        problems.append(f"{name(workload)}: selector {selector} does not match its own pod template labels {labels}")
    if workload["kind"] == "StatefulSet" and ("Service", namespace(workload), spec.get("serviceName")) not in index:
        problems.append(f"{name(workload)}: serviceName {spec.get('serviceName')!r} is no Service")
    pod = pod_spec(workload)
    check_volumes(workload, pod, index, problems)
    for container in pod.get("initContainers", []) + pod["containers"]:
        where = f"{name(workload)} container {container['name']}"
        defined = set()
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                config = lookup(index, "ConfigMap", workload, source["configMapRef"]["name"], where, problems)
                defined |= set((config or {}).get("data", {}))
            if "secretRef" in source:
                secret = lookup(index, "Secret", workload, source["secretRef"]["name"], where, problems)
                defined |= secret_keys(secret or {})
        for variable in container.get("env", []):
            for reference in VAR_REFERENCE.findall(variable.get("value", "")):
                if reference not in defined:
                    problems.append(f"{where}: {variable['name']} uses $({reference}), which is not defined before it (it would stay literal)")
            source = variable.get("valueFrom", {})
            if "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                secret = lookup(index, "Secret", workload, ref["name"], where, problems)
                if secret is not None and ref["key"] not in secret_keys(secret):
                    problems.append(f"{where}: Secret {ref['name']} has no key {ref['key']!r}")
            if "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                config = lookup(index, "ConfigMap", workload, ref["name"], where, problems)
                if config is not None and ref["key"] not in config.get("data", {}):
                    problems.append(f"{where}: ConfigMap {ref['name']} has no key {ref['key']!r}")
            defined.add(variable["name"])
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            port = container.get(probe, {}).get("httpGet", {}).get("port")
            if isinstance(port, str) and port not in {p.get("name") for p in container.get("ports", [])}:
                problems.append(f"{where}: {probe} uses port {port!r}, which the container does not name")
        check_grace_period(workload, pod, container, index, problems)


def check_volumes(workload, pod, index, problems):
    """ConfigMap and Secret volumes name objects (and keys) that exist, unless optional; every
    volumeMount names a volume. Either mistake leaves the pod in ContainerCreating."""
    volumes = {v["name"] for v in pod.get("volumes", [])}
    volumes |= {c["metadata"]["name"] for c in workload["spec"].get("volumeClaimTemplates", [])}
    for volume in pod.get("volumes", []):
        where = f"{name(workload)} volume {volume['name']}"
        sources = [("ConfigMap", volume["configMap"], "name")] if "configMap" in volume else []
        sources += [("Secret", volume["secret"], "secretName")] if "secret" in volume else []
        for projected in volume.get("projected", {}).get("sources", []):
            sources += [("ConfigMap", projected["configMap"], "name")] if "configMap" in projected else []
            sources += [("Secret", projected["secret"], "name")] if "secret" in projected else []
        for kind_name, source, field in sources:
            if source.get("optional"):
                continue
            found = lookup(index, kind_name, workload, source.get(field), where, problems)
            if found is None:
                continue
            keys = secret_keys(found) if kind_name == "Secret" else set(found.get("data", {})) | set(found.get("binaryData", {}))
            for item in source.get("items", []):
                if item["key"] not in keys:
                    problems.append(f"{where}: {kind_name} {source.get(field)} has no key {item['key']!r}")
    for container in pod.get("initContainers", []) + pod["containers"]:
        for mount in container.get("volumeMounts", []):
            if mount["name"] not in volumes:
                problems.append(f"{name(workload)} container {container['name']}: mounts {mount['name']!r}, which is no volume of the pod")


def check_grace_period(workload, pod, container, index, problems):
    """terminationGracePeriodSeconds must cover the preStop pause plus the server's drain."""
    grace = None
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            config = index.get(("ConfigMap", namespace(workload), source["configMapRef"]["name"]), {})
            grace = config.get("data", {}).get("CHAT_SHUTDOWN_GRACE_SECS", grace)
    for variable in container.get("env", []):
        if variable["name"] == "CHAT_SHUTDOWN_GRACE_SECS" and "value" in variable:
            grace = variable["value"]
    if grace is None:
        return
    command = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pause = int(command[1]) if len(command) == 2 and command[0] == "sleep" else 0
    needed = pause + int(grace) + 1
    allowed = pod.get("terminationGracePeriodSeconds", 30)
    if allowed < needed:
        problems.append(
            f"{name(workload)}: terminationGracePeriodSeconds {allowed} is shorter than preStop {pause} s + "
            f"CHAT_SHUTDOWN_GRACE_SECS {grace} s: pods would be killed mid-drain"
        )


def lookup(index, kind_name, workload, object_name, where, problems):
    found = index.get((kind_name, namespace(workload), object_name))
    if found is None:
        problems.append(f"{where}: refers to {kind_name} {object_name!r}, which is not in this kustomization")
    return found


def secret_keys(secret):
    return set(secret.get("data", {})) | set(secret.get("stringData", {}))


def selecting(workloads, space, selector):
    return [w for w in workloads if namespace(w) == space and matches(selector, w["spec"]["template"]["metadata"].get("labels", {}))]


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def pod_spec(workload):
    return workload["spec"]["template"]["spec"]


def port_names(workload):
    return {p.get("name") for c in pod_spec(workload)["containers"] for p in c.get("ports", [])}


def kind(objects, kind_name):
    return [o for o in objects if o["kind"] == kind_name]


def namespace(obj):
    return obj["metadata"].get("namespace", "")


def name(obj):
    return f"{obj['kind']}/{obj['metadata']['name']}"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else sys.argv[1]))
