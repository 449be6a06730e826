"""Offline checks of deploy/: Kubernetes, compose, the Dockerfile, the CI workflow.

Run through tools/check-deploy, which provides a venv with PyYAML,
kubernetes-validate and check-jsonschema, and builds the service binaries.

Sources of truth, never copied by hand:
- the services are the workspace members under services/ whose binary is
  named after the package (cargo metadata); a new one must appear everywhere;
- one of them is the edge (EDGE below): the HTTP front door. Its main port
  (what the kit calls grpc_addr) speaks HTTP, it is probed over its admin port,
  it has no database and no secret, it is the only pod reachable from outside
  (through an Ingress), and it calls the four services. Everything else is
  held to the same rules as the services;
- who calls whom: each binary's `peers` block in --print-config, checked
  against the design table (CALLERS) and against the NetworkPolicies;
- the variables each service reads and its default ports come from the binary
  itself (`emporium-<svc> --print-config`, flattened), plus the variables the
  deploy contract lists outside that JSON (OTEL_*, *_FILE, EMPORIUM_DEV_MODE …);
- the Secrets an operator must provide are the table in docs/deploy.md.

Prints one line per problem and exits 1 if there is any. The negative tests at
the end break copies of the manifests on purpose and require each break to be
reported.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
K8S_VERSIONS = ["1.30.0", None]  # the oldest we support (preStop sleep) and the validator's newest
OBSERVED_NAMESPACE = "monitoring"
MESH_PROXY_PORTS = {4143, 4191}
IMAGE_REPO = "ghcr.io/emporium-dev/emporium-{svc}"
SERVICE_BINARY_IN_IMAGE = "/usr/local/bin/emporium-service"
# Read by the binaries, but test and fault hooks: never in a deployment.
FORBIDDEN_VARS = {"EMPORIUM_SAGA__CRASH_AFTER", "EMPORIUM_SERVER__LEAK_GUARD"}
# Read outside the --print-config JSON (the deploy contract); <VAR>_FILE is
# accepted for every EMPORIUM_ setting the binary has.
EXTRA_VARS = {
    "EMPORIUM_CONFIG", "EMPORIUM_DEV_MODE", "RUST_LOG",
    "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG",
}
EXTRA_PREFIXES = ("OTEL_BSP_",)
# The HTTP front door (services/edge).
EDGE = "edge"
# Who may open connections to each one's main port, as designed. "<outside>" is
# anything outside the namespace (the Ingress controller). The binaries' own
# `peers` blocks must agree (a caller of X has a peer X).
CALLERS = {
    "user": {"order", EDGE},
    "inventory": {"order", EDGE},
    "payment": {"order", EDGE},
    "order": {EDGE},
    EDGE: {"<outside>"},
}
# Probes over HTTP on the admin port, for the edge (and for every service with
# components/admin-http-probes).
HTTP_PROBE_PATHS = {"startupProbe": "/readyz", "readinessProbe": "/readyz", "livenessProbe": "/healthz"}


class Problems(list):
    def add(self, where: str, message: str) -> None:
        self.append(f"{where}: {message}")


# ------------------------------------------------------------------ workspace

def workspace_services(repo: Path) -> list[str]:
    meta = json.loads(subprocess.run(
        ["cargo", "metadata", "--no-deps", "--format-version", "1"], cwd=repo,
        check=True, capture_output=True, text=True).stdout)
    found = []
    for pkg in meta["packages"]:
        if "/services/" not in pkg["manifest_path"]:
            continue
        if any("bin" in t["kind"] and t["name"] == pkg["name"] for t in pkg["targets"]):
            found.append(pkg["name"].removeprefix("emporium-"))
    order = ["user", "inventory", "payment", "order"]
    return sorted(found, key=lambda s: (order.index(s) if s in order else len(order), s))


def flatten(prefix: str, node, out: set[str]) -> None:
    if isinstance(node, dict) and node:
        for key, value in node.items():
            flatten(f"{prefix}__{key.upper()}" if prefix else key.upper(), value, out)
    else:
        out.add(f"EMPORIUM_{prefix}")


class Binary:
    """What one service binary reads, from its own --print-config."""

    def __init__(self, svc: str, path: Path):
        self.svc = svc
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "EMPORIUM_DEV_MODE": "true"}
        run = subprocess.run([str(path), "--print-config"], env=env, capture_output=True,
                             text=True, cwd=tempfile.gettempdir())
        if run.returncode != 0:
            raise SystemExit(f"check-deploy: {path} --print-config failed: {run.stderr.strip()}")
        config = json.loads(run.stdout)
        self.vars: set[str] = set()
        flatten("", config, self.vars)
        # Any setting may also come from a file: <VAR>_FILE (config/env.rs).
        self.vars |= {f"{v}_FILE" for v in self.vars if v.startswith("EMPORIUM_")}
        self.vars |= EXTRA_VARS
        self.grpc_port = int(config["server"]["grpc_addr"].rsplit(":", 1)[1])
        self.admin_port = int(config["server"]["admin_addr"].rsplit(":", 1)[1])
        # The services this one calls (its `peers` block).
        self.peers: set[str] = set((config.get("peers") or {}).keys())
        # The edge's main port (grpc_port here, as the kit calls it) is HTTP.
        self.is_edge = svc == EDGE

    def reads(self, var: str) -> bool:
        return var in self.vars or var.startswith(EXTRA_PREFIXES)


def check_var(problems: Problems, where: str, binary: Binary, var: str) -> None:
    if var in FORBIDDEN_VARS:
        problems.add(where, f"{var} is a test/fault hook and must never be deployed")
    elif not binary.reads(var):
        problems.add(where, f"{var} is not read by emporium-{binary.svc} "
                            "(not in its --print-config nor in the deploy contract's extras)")


# ------------------------------------------------------------------ docs

def documented_secrets(repo: Path, services: list[str]) -> set[tuple[str, str]]:
    """(secret, key) pairs from the table in docs/deploy.md: | `name` | `key`, `key` | …"""
    doc = repo / "docs" / "deploy.md"
    pairs: set[tuple[str, str]] = set()
    if not doc.is_file():
        return pairs
    for line in doc.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not re.fullmatch(r"`[a-z0-9<>.-]+`", cells[0]):
            continue
        name = cells[0].strip("`")
        keys = re.findall(r"`([A-Za-z0-9._-]+)`", cells[1])
        names = [name.replace("<svc>", s) for s in services] if "<svc>" in name else [name]
        for n in names:
            for k in keys:
                pairs.add((n, k))
    return pairs


# ------------------------------------------------------------------ Kubernetes

def render(kustomization_dir: Path) -> list[dict]:
    run = subprocess.run(["kubectl", "kustomize", str(kustomization_dir)], capture_output=True, text=True)
    if run.returncode != 0:
        raise RenderError(run.stderr.strip().splitlines()[-1] if run.stderr.strip() else "kustomize failed")
    return [d for d in yaml.safe_load_all(run.stdout) if d], run.stdout


class RenderError(Exception):
    pass


def variants(k8s: Path, scratch: Path) -> dict[str, Path]:
    """Every overlay, and each with the optional components: name -> kustomization dir."""
    out = {}
    overlays = sorted(p.parent for p in (k8s / "overlays").glob("*/kustomization.yaml"))
    combos = {"dev": [[], ["linkerd"]], "prod": [[], ["linkerd"], ["builtin-mtls", "pod-monitor"]]}
    for overlay in overlays:
        for comps in combos.get(overlay.name, [[]]):
            name = "+".join([overlay.name, *comps])
            if not comps:
                out[name] = overlay
                continue
            d = scratch / "variants" / name
            d.mkdir(parents=True, exist_ok=True)
            rel = lambda p: os.path.relpath(p, d)  # noqa: E731
            (d / "kustomization.yaml").write_text(yaml.safe_dump({
                "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                "resources": [rel(overlay)],
                "components": [rel(k8s / "components" / c) for c in comps],
            }))
            out[name] = d
    return out


def kubernetes_validate(problems: Problems, name: str, text: str, scratch: Path) -> None:
    f = scratch / f"{name}.yaml"
    f.write_text(text)
    for version in K8S_VERSIONS:
        cmd = ["kubernetes-validate", "--strict", "--quiet", "--no-warn", str(f)]
        if version:
            cmd[1:1] = ["-k", version]
        run = subprocess.run(cmd, capture_output=True, text=True)
        for line in (run.stdout + run.stderr).splitlines():
            if line.strip():
                problems.add(f"k8s {name}", f"kubernetes-validate {version or 'latest'}: {line.strip()}")
        if run.returncode != 0 and not (run.stdout + run.stderr).strip():
            problems.add(f"k8s {name}", f"kubernetes-validate {version or 'latest'} exited {run.returncode}")


def matches(selector: dict | None, labels: dict) -> bool:
    if selector is None:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def ms(env: dict, key: str, default: int) -> int:
    try:
        return int(env.get(key, default))
    except ValueError:
        return default


def k8s_policy(problems: Problems, variant: str, docs: list[dict], services: list[str],
               binaries: dict[str, Binary], documented: set[tuple[str, str]]) -> None:
    where = f"k8s {variant}"
    overlay = variant.split("+")[0]
    by_kind: dict[str, list[dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    configmaps = {d["metadata"]["name"]: d.get("data") or {} for d in by_kind.get("ConfigMap", [])}
    secrets = {d["metadata"]["name"]: d for d in by_kind.get("Secret", [])}
    sas = {d["metadata"]["name"]: d for d in by_kind.get("ServiceAccount", [])}

    # Pods: (kind/name, labels, pod spec, annotations)
    pods = []
    for kind in ("Deployment", "StatefulSet"):
        for d in by_kind.get(kind, []):
            t = d["spec"]["template"]
            pods.append((f"{kind}/{d['metadata']['name']}", t["metadata"].get("labels") or {},
                         t["spec"], t["metadata"].get("annotations") or {}, d))

    def ports_of(spec: dict) -> tuple[set, set]:
        named, numbered = set(), set()
        for c in spec.get("containers", []):
            for p in c.get("ports") or []:
                numbered.add(p["containerPort"])
                if "name" in p:
                    named.add(p["name"])
        return named, numbered

    def meshed(annotations: dict) -> bool:
        return annotations.get("linkerd.io/inject") == "enabled"

    # Namespace: restricted Pod Security, everything in it.
    namespaces = by_kind.get("Namespace", [])
    if len(namespaces) != 1 or namespaces[0]["metadata"]["name"] != "emporium":
        problems.add(where, "expected exactly the Namespace emporium")
    elif (namespaces[0]["metadata"].get("labels") or {}).get("pod-security.kubernetes.io/enforce") != "restricted":
        problems.add(where, "Namespace emporium does not enforce the restricted Pod Security Standard")
    for d in docs:
        if d["kind"] != "Namespace" and d["metadata"].get("namespace") != "emporium":
            problems.add(where, f"{d['kind']}/{d['metadata']['name']} is not in namespace emporium")

    # Every workspace service has its Deployment, Services, PDB, SA; HPA per overlay.
    # The edge has no headless Service (nobody balances calls to it
    # themselves) but an Ingress.
    deployments = {d["metadata"]["name"]: d for d in by_kind.get("Deployment", [])}
    for svc in services:
        n = f"emporium-{svc}"
        wanted = [("Deployment", n), ("Service", n), ("PodDisruptionBudget", n), ("ServiceAccount", n)]
        wanted.append(("Ingress", n) if svc == EDGE else ("Service", f"{n}-headless"))
        for kind, name in wanted:
            if (kind, name) not in names:
                problems.add(where, f"no {kind} {name} for workspace service {svc}")
        if overlay == "prod" and ("HorizontalPodAutoscaler", n) not in names:
            problems.add(where, f"no HorizontalPodAutoscaler {n} in prod")
    for name in deployments:
        if name.removeprefix("emporium-") not in services:
            problems.add(where, f"Deployment {name} is no workspace service")

    for name, d in deployments.items():
        svc = name.removeprefix("emporium-")
        w = f"{where} Deployment/{name}"
        spec = d["spec"]
        tmpl = spec["template"]
        pod = tmpl["spec"]
        labels = tmpl["metadata"].get("labels") or {}
        want = {"app.kubernetes.io/name": name, "app.kubernetes.io/component": svc,
                "app.kubernetes.io/part-of": "emporium"}
        for k, v in want.items():
            if labels.get(k) != v:
                problems.add(w, f"pod label {k} should be {v}")
        if not matches(spec.get("selector"), labels):
            problems.add(w, "selector does not match its own pod labels")
        binary = binaries.get(svc)
        # replicas
        hpa = next((h for h in by_kind.get("HorizontalPodAutoscaler", [])
                    if h["spec"]["scaleTargetRef"]["name"] == name), None)
        if overlay == "prod":
            if hpa is None or hpa["spec"].get("minReplicas", 1) < 2:
                problems.add(w, "prod needs an autoscaler with minReplicas >= 2")
            if "replicas" in spec:
                problems.add(w, "replicas set next to an autoscaler (they fight on every apply)")
        if overlay == "dev" and (spec.get("replicas") != 1 or hpa is not None):
            problems.add(w, "dev runs exactly one replica and no autoscaler")
        # pod security
        psc = pod.get("securityContext") or {}
        if psc.get("runAsNonRoot") is not True:
            problems.add(w, "pod securityContext.runAsNonRoot is not true")
        if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            problems.add(w, "pod seccompProfile is not RuntimeDefault")
        if pod.get("automountServiceAccountToken") is not False:
            problems.add(w, "automountServiceAccountToken is not false on the pod")
        sa = pod.get("serviceAccountName")
        if sa not in sas:
            problems.add(w, f"serviceAccountName {sa!r} has no ServiceAccount")
        elif sas[sa].get("automountServiceAccountToken") is not False:
            problems.add(w, f"ServiceAccount {sa} automounts its token")
        tsc = pod.get("topologySpreadConstraints") or []
        host = [c for c in tsc if c.get("topologyKey") == "kubernetes.io/hostname"]
        if not host or not all(matches(c.get("labelSelector"), labels) for c in host):
            problems.add(w, "no topology spread across nodes selecting its own pods")
        elif overlay == "prod" and host[0].get("whenUnsatisfiable") != "DoNotSchedule":
            problems.add(w, "prod spreads across nodes as a preference only")
        containers = pod.get("containers") or []
        if len(containers) != 1:
            problems.add(w, "expected one container")
            continue
        c = containers[0]
        cw = f"{w} container {c['name']}"
        csc = c.get("securityContext") or {}
        if csc.get("allowPrivilegeEscalation") is not False:
            problems.add(cw, "allowPrivilegeEscalation is not false")
        if csc.get("readOnlyRootFilesystem") is not True:
            problems.add(cw, "readOnlyRootFilesystem is not true")
        if csc.get("privileged"):
            problems.add(cw, "privileged")
        if "ALL" not in ((csc.get("capabilities") or {}).get("drop") or []):
            problems.add(cw, "capabilities.drop does not include ALL")
        res = c.get("resources") or {}
        for part in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in (res.get(part) or {}):
                    problems.add(cw, f"resources.{part}.{r} missing")
        if overlay == "prod" and (res.get("requests") or {}).get("memory") != (res.get("limits") or {}).get("memory"):
            problems.add(cw, "prod memory request differs from the limit")
        # image
        image = c.get("image", "")
        if not image.startswith(IMAGE_REPO.format(svc=svc) + ":"):
            problems.add(cw, f"image {image} is not {IMAGE_REPO.format(svc=svc)}")
        if overlay == "prod" and image.endswith(":latest"):
            problems.add(cw, "prod runs an unpinned :latest image")
        # environment: env + envFrom ConfigMaps
        env: dict[str, str] = {}
        for ef in c.get("envFrom") or []:
            if "configMapRef" in ef:
                cm = ef["configMapRef"]["name"]
                if cm not in configmaps:
                    problems.add(cw, f"envFrom ConfigMap {cm} does not exist")
                env.update({k: str(v) for k, v in configmaps.get(cm, {}).items()})
            if "secretRef" in ef:
                problems.add(cw, "envFrom a Secret puts secrets into the environment; mount files instead")
        secret_refs: list[tuple[str, str | None, bool]] = []
        for e in c.get("env") or []:
            env[e["name"]] = e.get("value", "")
            ref = (e.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                secret_refs.append((ref["name"], ref["key"], bool(ref.get("optional"))))
            cref = (e.get("valueFrom") or {}).get("configMapKeyRef")
            if cref and cref["name"] not in configmaps:
                problems.add(cw, f"env {e['name']} refers to missing ConfigMap {cref['name']}")
        if binary:
            for var in sorted(env):
                check_var(problems, cw, binary, var)
        if overlay == "prod" and "EMPORIUM_DEV_MODE" in env:
            problems.add(cw, "EMPORIUM_DEV_MODE is set: development mode in prod")
        if svc != EDGE:
            # The edge names the client in x-forwarded-for; a service believes
            # it only from the networks listed here (where the edge runs).
            trusted = env.get("EMPORIUM_SERVER__TRUSTED_PROXIES", "")
            try:
                nets = [ipaddress.ip_network(n) for n in json.loads(trusted)]
            except (ValueError, TypeError):
                nets = None
            if not nets:
                problems.add(cw, f"EMPORIUM_SERVER__TRUSTED_PROXIES={trusted!r} is not a non-empty JSON list "
                                 "of networks (the pod network the edge calls from)")
        if overlay == "dev" and env.get("EMPORIUM_DEV_MODE") != "true":
            problems.add(cw, "dev expects EMPORIUM_DEV_MODE=true (it has no emporium-auth Secret)")
        # ports agree with the listen addresses and the binary's defaults
        named, numbered = ports_of(pod)
        portmap = {p["name"]: p["containerPort"] for p in c.get("ports") or [] if "name" in p}
        main_name = "http" if svc == EDGE else "grpc"
        for pname, var, default in ((main_name, "EMPORIUM_SERVER__GRPC_ADDR", binary and binary.grpc_port),
                                    ("admin", "EMPORIUM_SERVER__ADMIN_ADDR", binary and binary.admin_port)):
            if pname not in portmap:
                problems.add(cw, f"no container port named {pname}")
                continue
            addr = env.get(var, "")
            if not addr.startswith("0.0.0.0:") and not addr.startswith("[::]:"):
                problems.add(cw, f"{var}={addr!r} does not listen on every interface")
            elif int(addr.rsplit(":", 1)[1]) != portmap[pname]:
                problems.add(cw, f"{var}={addr} but the {pname} port is {portmap[pname]}")
            if default and portmap[pname] != default:
                problems.add(cw, f"{pname} port {portmap[pname]} is not the binary's default {default}")
        ann = tmpl["metadata"].get("annotations") or {}
        if ann.get("prometheus.io/scrape") != "true" or ann.get("prometheus.io/port") != str(portmap.get("admin")):
            problems.add(w, "prometheus.io/scrape and prometheus.io/port (the admin port) annotations missing or wrong")
        # probes (the edge's main port is HTTP: over its admin port only)
        grpc_port = portmap.get("grpc")
        own_service = f"emporium.{svc}.v1.{svc.capitalize()}Service"
        for probe, ok_services, http_path in (("startupProbe", {"", own_service}, HTTP_PROBE_PATHS["startupProbe"]),
                                              ("readinessProbe", {"", own_service}, HTTP_PROBE_PATHS["readinessProbe"]),
                                              ("livenessProbe", {"liveness"}, HTTP_PROBE_PATHS["livenessProbe"])):
            p = c.get(probe)
            if not p:
                problems.add(cw, f"has no {probe}")
                continue
            if svc == EDGE and "httpGet" not in p:
                problems.add(cw, f"{probe} must be an HTTP GET of {http_path} on the admin port "
                                 "(the edge's main port does not speak gRPC to the kubelet)")
                continue
            if "grpc" in p:
                if p["grpc"].get("port") != grpc_port:
                    problems.add(cw, f"{probe} gRPC port {p['grpc'].get('port')} is not the grpc port {grpc_port}")
                if p["grpc"].get("service", "") not in ok_services:
                    problems.add(cw, f"{probe} asks for health service {p['grpc'].get('service', '')!r}, "
                                     f"expected one of {sorted(ok_services)}")
            elif "httpGet" in p:
                port = p["httpGet"].get("port")
                if port not in ("admin", portmap.get("admin")) or p["httpGet"].get("path") != http_path:
                    problems.add(cw, f"{probe} over HTTP must GET {http_path} on the admin port")
            else:
                problems.add(cw, f"{probe} is neither a gRPC nor an admin HTTP probe")
        # graceful drain
        pre = ((c.get("lifecycle") or {}).get("preStop") or {})
        pre_s = (pre.get("sleep") or {}).get("seconds")
        if not pre_s:
            problems.add(cw, "no preStop sleep (the delay that lets endpoint removal spread)")
            pre_s = 0
        drain = ms(env, "EMPORIUM_SERVER__DRAIN_DELAY_MS", 1000) / 1000
        grace = ms(env, "EMPORIUM_SERVER__SHUTDOWN_GRACE_MS", 20000) / 1000
        budget = pre_s + drain + grace + 5  # + the span flush at exit (at most 5 s)
        tgps = pod.get("terminationGracePeriodSeconds", 30)
        if tgps <= budget:
            problems.add(w, f"terminationGracePeriodSeconds {tgps} does not exceed preStop {pre_s}s + drain "
                            f"{drain:g}s + grace {grace:g}s + flush 5s = {budget:g}s")
        # volumes and the secrets behind them
        vols = {v["name"]: v for v in pod.get("volumes") or []}
        for m in c.get("volumeMounts") or []:
            if m["name"] not in vols:
                problems.add(cw, f"volumeMount {m['name']} has no volume")
        if svc == EDGE:
            # No token key, no database: at most its own TLS client certificate
            # (components/builtin-mtls).
            own_tls = f"emporium-{EDGE}-tls"
            held = sorted({v["secret"]["secretName"] for v in vols.values()
                           if "secret" in v and v["secret"]["secretName"] != own_tls} |
                          {v["name"] for v in vols.values() if "projected" in v} |
                          {s for s, _, _ in secret_refs} |
                          {var for var in env if var.startswith(("EMPORIUM_AUTH__", "EMPORIUM_DATABASE__"))})
            if held:
                problems.add(cw, f"the edge holds no secret (it forwards the caller's token), but has {held}")
        for v in vols.values():
            if "secret" in v:
                items = v["secret"].get("items")
                if not items:
                    problems.add(w, f"secret volume {v['name']} mounts every key; list the keys it needs")
                for it in items or [{"key": None}]:
                    secret_refs.append((v["secret"]["secretName"], it["key"], bool(v["secret"].get("optional"))))
        for var, path in env.items():
            if var.endswith("_FILE") and path:
                if not any(path.startswith(m["mountPath"].rstrip("/") + "/") for m in c.get("volumeMounts") or []):
                    problems.add(cw, f"{var}={path} is on no mounted volume")
        for sname, key, optional in secret_refs:
            if sname in secrets:
                if key and key not in (secrets[sname].get("data") or {}):
                    problems.add(cw, f"Secret {sname} has no key {key}")
                if overlay == "dev" and (secrets[sname]["metadata"].get("labels") or {}).get(
                        "emporium.dev/development-only") != "true":
                    problems.add(where, f"Secret {sname} is not labelled development-only")
            elif (sname, key) not in documented:
                problems.add(cw, f"Secret {sname} (key {key}) is referenced but neither generated nor "
                                 "documented in docs/deploy.md")
    if overlay == "prod" and by_kind.get("Secret"):
        problems.add(where, "prod renders Secret objects: production secrets never live in the repository")

    # StatefulSets (dev databases): the same pod hardening, probes, resources.
    for d in by_kind.get("StatefulSet", []):
        w = f"{where} StatefulSet/{d['metadata']['name']}"
        pod = d["spec"]["template"]["spec"]
        psc = pod.get("securityContext") or {}
        if psc.get("runAsNonRoot") is not True or (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            problems.add(w, "pod must run as non-root with seccomp RuntimeDefault")
        for c in pod.get("containers") or []:
            csc = c.get("securityContext") or {}
            if csc.get("allowPrivilegeEscalation") is not False or "ALL" not in ((csc.get("capabilities") or {}).get("drop") or []):
                problems.add(w, "container must drop ALL capabilities and disallow privilege escalation")
            for probe in ("readinessProbe", "livenessProbe"):
                if not c.get(probe):
                    problems.add(w, f"has no {probe}")
            if not (c.get("resources") or {}).get("limits"):
                problems.add(w, "no resource limits")
        for v in pod.get("volumes") or []:
            if "secret" in v and v["secret"]["secretName"] not in secrets and \
                    (v["secret"]["secretName"], "password") not in documented:
                problems.add(w, f"Secret {v['secret']['secretName']} neither generated nor documented")

    # Services select existing pods and existing ports.
    for s in by_kind.get("Service", []):
        w = f"{where} Service/{s['metadata']['name']}"
        sel = s["spec"].get("selector") or {}
        targets = [p for p in pods if sel and all(p[1].get(k) == v for k, v in sel.items())]
        if not targets:
            problems.add(w, f"selector {sel} selects no pod")
            continue
        for port in s["spec"].get("ports") or []:
            tp = port.get("targetPort", port["port"])
            for pname, _, spec, _, _ in targets:
                named, numbered = ports_of(spec)
                if (isinstance(tp, str) and tp not in named) or (isinstance(tp, int) and tp not in numbered):
                    problems.add(w, f"targetPort {tp!r} is no port of {pname}")
        if s["metadata"]["name"].endswith("-headless"):
            if s["spec"].get("clusterIP") != "None":
                problems.add(w, "a -headless Service must have clusterIP: None")
            if not any(p.get("name") == "grpc" for p in s["spec"].get("ports") or []) and \
                    not s["metadata"]["name"].endswith("-db"):
                problems.add(w, "headless Service has no port named grpc")
    # The callers' peers (the order service's, the edge's) are the headless Services.
    for caller in services:
        binary = binaries.get(caller)
        dep = deployments.get(f"emporium-{caller}")
        if not binary or not binary.peers or dep is None:
            continue
        cm: dict = {}
        for ef in dep["spec"]["template"]["spec"]["containers"][0].get("envFrom") or []:
            cm.update(configmaps.get((ef.get("configMapRef") or {}).get("name"), {}))
        for peer in sorted(binary.peers):
            var = f"EMPORIUM_PEERS__{peer.upper()}__URL"
            if peer not in services:
                problems.add(where, f"{caller}: has a peer {peer}, which is no workspace service")
                continue
            url = cm.get(var)
            m = re.fullmatch(r"https?://([a-z0-9.-]+):(\d+)", url or "")
            if not m:
                problems.add(where, f"{caller}: {var} is not set to a peer URL")
                continue
            host, port = m.group(1), int(m.group(2))
            if host != f"emporium-{peer}-headless":
                problems.add(where, f"{caller}: {var} points at {host}, not the headless Service emporium-{peer}-headless")
            if binaries.get(peer) and port != binaries[peer].grpc_port:
                problems.add(where, f"{caller}: {var} port {port} is not {peer}'s gRPC port {binaries[peer].grpc_port}")

    # The Ingress: only the edge, by its Service's http port.
    ingresses = by_kind.get("Ingress", [])
    svc_objs = {s["metadata"]["name"]: s for s in by_kind.get("Service", [])}
    for ing in ingresses:
        w = f"{where} Ingress/{ing['metadata']['name']}"
        if not ing["spec"].get("ingressClassName"):
            problems.add(w, "no ingressClassName (which controller serves it is left to chance)")
        backends = [path["backend"] for rule in ing["spec"].get("rules") or []
                    for path in (rule.get("http") or {}).get("paths") or []]
        if ing["spec"].get("defaultBackend"):
            backends.append(ing["spec"]["defaultBackend"])
        if not backends:
            problems.add(w, "routes nowhere")
        for b in backends:
            bs = b.get("service") or {}
            name, port = bs.get("name"), bs.get("port") or {}
            if name != f"emporium-{EDGE}":
                problems.add(w, f"routes to {name}: only the edge is exposed outside the cluster")
            s = svc_objs.get(name)
            if s is None:
                problems.add(w, f"routes to missing Service {name}")
                continue
            ports = s["spec"].get("ports") or []
            if not any(("name" in port and pt.get("name") == port["name"]) or
                       ("number" in port and pt.get("port") == port["number"]) for pt in ports):
                problems.add(w, f"port {port} is no port of Service {name}")
            elif not any(pt.get("targetPort") == "http" and (pt.get("name") == port.get("name") or
                                                             pt.get("port") == port.get("number")) for pt in ports):
                problems.add(w, f"port {port} of Service {name} is not the edge's http port")

    # PDBs and HPAs point at something.
    for p in by_kind.get("PodDisruptionBudget", []):
        if not any(matches(p["spec"].get("selector"), x[1]) for x in pods):
            problems.add(where, f"PodDisruptionBudget/{p['metadata']['name']} selects no pod")
        if p["spec"].get("minAvailable") not in (None, 0) and overlay == "dev":
            problems.add(where, f"PodDisruptionBudget/{p['metadata']['name']}: minAvailable blocks drains with one replica")
    for h in by_kind.get("HorizontalPodAutoscaler", []):
        ref = h["spec"]["scaleTargetRef"]
        if (ref["kind"], ref["name"]) not in names:
            problems.add(where, f"HorizontalPodAutoscaler/{h['metadata']['name']} scales missing {ref['kind']} {ref['name']}")
    for pm in by_kind.get("PodMonitor", []):
        sel = pm["spec"].get("selector")
        selected = [x for x in pods if matches(sel, x[1])]
        if not selected:
            problems.add(where, f"PodMonitor/{pm['metadata']['name']} selects no pod")
        for ep in pm["spec"].get("podMetricsEndpoints") or []:
            for x in selected:
                if ep.get("port") not in ports_of(x[2])[0]:
                    problems.add(where, f"PodMonitor/{pm['metadata']['name']} port {ep.get('port')} is no port of {x[0]}")

    # NetworkPolicies: default deny, every selector names existing pods, every port exists.
    policies = by_kind.get("NetworkPolicy", [])
    if not any(p["spec"].get("podSelector") == {} and set(p["spec"].get("policyTypes") or []) == {"Ingress", "Egress"}
               and not p["spec"].get("ingress") and not p["spec"].get("egress") for p in policies):
        problems.add(where, "no default-deny NetworkPolicy (empty podSelector, Ingress and Egress, no rules)")
    for p in policies:
        w = f"{where} NetworkPolicy/{p['metadata']['name']}"
        sel = p["spec"].get("podSelector")
        subjects = pods if sel == {} else [x for x in pods if matches(sel, x[1])]
        if not subjects:
            problems.add(w, f"podSelector {sel} selects no pod")
        for direction, peers_key in (("ingress", "from"), ("egress", "to")):
            for i, rule in enumerate(p["spec"].get(direction) or []):
                rw = f"{w} {direction}[{i}]"
                local_peers = []
                for peer in rule.get(peers_key) or []:
                    if "podSelector" in peer and "namespaceSelector" not in peer:
                        chosen = [x for x in pods if matches(peer["podSelector"], x[1])]
                        if not chosen:
                            problems.add(rw, f"podSelector {peer['podSelector']} selects no pod")
                        local_peers += chosen
                    elif "namespaceSelector" in peer:
                        ns = (peer["namespaceSelector"].get("matchLabels") or {}).get("kubernetes.io/metadata.name")
                        if not ns:
                            problems.add(rw, "namespaceSelector must name one namespace (kubernetes.io/metadata.name)")
                    elif "ipBlock" not in peer:
                        problems.add(rw, f"unexpected peer {peer}")
                # The pods whose ports the rule's ports must name.
                owners = subjects if direction == "ingress" else local_peers
                for port in rule.get("ports") or []:
                    value = port.get("port")
                    if value is None or not owners:
                        continue
                    for name, _, spec, annotations, _ in owners:
                        named, numbered = ports_of(spec)
                        ok = value in named if isinstance(value, str) else value in numbered
                        if not ok and isinstance(value, int) and value in MESH_PROXY_PORTS and meshed(annotations):
                            ok = True
                        if not ok:
                            problems.add(rw, f"port {value!r} is no port of {name}")
                if direction == "ingress":
                    for peer in rule.get("from") or []:
                        ns = (peer.get("namespaceSelector") or {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
                        if any(pt.get("port") == "admin" for pt in rule.get("ports") or []) and ns != OBSERVED_NAMESPACE:
                            problems.add(rw, f"the admin port is open to something other than the {OBSERVED_NAMESPACE} namespace")

    # Who reaches whom, as designed (CALLERS): the edge from outside; the edge
    # and order -> user, inventory, payment; the edge -> order. Nothing else.
    def main_port_of(target: str) -> tuple[str, int | None]:
        b = binaries.get(target)
        return ("http" if target == EDGE else "grpc"), (b.grpc_port if b else None)

    def ingress_callers(target: str) -> set[str]:
        callers = set()
        tlabels = next((x[1] for x in pods if x[0] == f"Deployment/emporium-{target}"), None)
        if tlabels is None:
            return callers
        main = main_port_of(target)
        for p in policies:
            if p["spec"].get("podSelector") == {} or not matches(p["spec"].get("podSelector"), tlabels):
                continue
            for rule in p["spec"].get("ingress") or []:
                if not any(pt.get("port") in main for pt in rule.get("ports") or [{"port": main[0]}]):
                    continue
                if not rule.get("from"):
                    callers.add("<anyone>")
                for peer in rule.get("from") or []:
                    if "podSelector" in peer and "namespaceSelector" not in peer:
                        callers |= {x[0].split("/emporium-")[-1] for x in pods if matches(peer["podSelector"], x[1])}
                    else:
                        callers.add("<outside>")
        return callers
    for target, want_callers in CALLERS.items():
        if target in services:
            got = ingress_callers(target)
            want = {c for c in want_callers if c in services or c.startswith("<")}
            if got != want:
                problems.add(where, f"{'HTTP' if target == EDGE else 'gRPC'} of {target} is reachable from "
                                    f"{sorted(got) or 'nobody'}, designed: {sorted(want) or 'nobody'}")
    for svc in services:
        if svc not in CALLERS:
            problems.add(where, f"workspace service {svc} is not in the design table CALLERS of tools/check_deploy.py")
    # The binaries agree with the design: a caller has a peer block for each callee.
    for callee, callers in CALLERS.items():
        for caller in callers:
            if caller in binaries and callee in services and callee not in binaries[caller].peers:
                problems.add(where, f"designed: {caller} calls {callee}, but emporium-{caller} has no peer {callee}")
    for caller, b in binaries.items():
        for callee in b.peers:
            if caller not in CALLERS.get(callee, set()):
                problems.add(where, f"emporium-{caller} has a peer {callee}, which the design table does not allow")
    # Each caller may open connections to its peers' gRPC ports (default deny covers egress).
    for caller, b in binaries.items():
        clabels = next((x[1] for x in pods if x[0] == f"Deployment/emporium-{caller}"), None)
        if clabels is None:
            continue
        for callee in sorted(b.peers):
            tlabels = next((x[1] for x in pods if x[0] == f"Deployment/emporium-{callee}"), None)
            if tlabels is None:
                continue
            main = main_port_of(callee)
            allowed = any(
                any(pt.get("port") in main for pt in rule.get("ports") or [{"port": main[0]}])
                and any("podSelector" in peer and "namespaceSelector" not in peer
                        and matches(peer["podSelector"], tlabels) for peer in rule.get("to") or [])
                for p in policies if p["spec"].get("podSelector") != {} and matches(p["spec"].get("podSelector"), clabels)
                for rule in p["spec"].get("egress") or [])
            if not allowed:
                problems.add(where, f"no NetworkPolicy lets {caller} connect to {callee}'s gRPC port")
    # From outside the namespace only the edge, and otherwise only the admin port
    # (monitoring) and the mesh's proxy metrics (linkerd-viz).
    for p in policies:
        sel = p["spec"].get("podSelector")
        subjects = pods if sel == {} else [x for x in pods if matches(sel, x[1])]
        others = [x[0] for x in subjects if x[0] != f"Deployment/emporium-{EDGE}"]
        for i, rule in enumerate(p["spec"].get("ingress") or []):
            outside = not rule.get("from") or any("podSelector" not in peer or "namespaceSelector" in peer
                                                   for peer in rule.get("from") or [])
            ports = {pt.get("port") for pt in rule.get("ports") or [{"port": None}]}
            if outside and others and not ports <= ({"admin"} | MESH_PROXY_PORTS):
                problems.add(f"{where} NetworkPolicy/{p['metadata']['name']} ingress[{i}]",
                             f"ports {sorted(map(str, ports))} of {others} are reachable from outside the "
                             "namespace: only the edge is")
    # Each dev database only from its owner.
    for name, labels, spec, _, _ in pods:
        if not name.startswith("StatefulSet/") or not name.endswith("-db"):
            continue
        owner = name.removeprefix("StatefulSet/emporium-").removesuffix("-db")
        callers = set()
        for p in policies:
            if p["spec"].get("podSelector") == {} or not matches(p["spec"].get("podSelector"), labels):
                continue
            for rule in p["spec"].get("ingress") or []:
                for peer in rule.get("from") or []:
                    callers |= {x[0] for x in pods if "podSelector" in peer and matches(peer["podSelector"], x[1])}
                    if "podSelector" not in peer:
                        callers.add("<outside>")
        if callers != {f"Deployment/emporium-{owner}"}:
            problems.add(where, f"database {name} is reachable from {sorted(callers) or 'nobody'}, "
                                f"designed: its owner emporium-{owner} only")


def check_k8s(problems: Problems, repo: Path, scratch: Path, services, binaries, validate=True) -> None:
    documented = documented_secrets(repo, services)
    if not documented:
        problems.add("docs/deploy.md", "no Secrets table (| `secret` | `key`, … |)")
    for name, d in variants(repo / "deploy" / "k8s", scratch).items():
        try:
            docs, text = render(d)
        except RenderError as e:
            problems.add(f"k8s {name}", f"kubectl kustomize failed: {e}")
            continue
        if validate:
            kubernetes_validate(problems, name, text, scratch)
        k8s_policy(problems, name, docs, services, binaries, documented)


# ------------------------------------------------------------------ compose

def load_yaml(path: Path):
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def interp_default(value: str) -> str:
    """${VAR:-default} -> default; ${VAR} stays (no default to check)."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", value)


def check_compose(problems: Problems, repo: Path, scratch: Path, services, binaries, validate=True) -> None:
    cdir = repo / "deploy" / "compose"
    main_file, ci_file = cdir / "compose.yaml", cdir / "compose.ci.yaml"
    if validate:
        for f in (main_file, ci_file):
            run = subprocess.run(["check-jsonschema", "--builtin-schema", "vendor.compose-spec", str(f)],
                                 capture_output=True, text=True)
            if run.returncode != 0:
                problems.add(f.relative_to(repo).as_posix(), "compose schema: " + " ".join((run.stdout + run.stderr).split()))
    compose = load_yaml(main_file)
    ci = load_yaml(ci_file)
    w = "deploy/compose/compose.yaml"
    svcs = compose.get("services") or {}
    top_secrets = compose.get("secrets") or {}
    volumes = compose.get("volumes") or {}
    networks = compose.get("networks") or {}

    # The secrets compose-secrets really generates.
    gen = scratch / "compose-secrets"
    shutil.rmtree(gen, ignore_errors=True)
    subprocess.run([str(repo / "tools" / "compose-secrets"), str(gen)], check=True, capture_output=True)
    generated = {p.name for p in gen.iterdir()}
    for name, spec in top_secrets.items():
        f = interp_default(str(spec.get("file", "")))
        if Path(f).name not in generated:
            problems.add(w, f"secret {name} reads {f}, which tools/compose-secrets does not generate")
    dockerfile_args = dockerfile_arg_names(repo)

    one_shots = set()
    for name, s in svcs.items():
        for dep, cond in (s.get("depends_on") or {}).items():
            if isinstance(cond, dict) and cond.get("condition") == "service_completed_successfully":
                one_shots.add(dep)
    for name, s in svcs.items():
        sw = f"{w} service {name}"
        hc = s.get("healthcheck")
        if name in one_shots:
            if s.get("restart", "no") != "no":
                problems.add(sw, "a one-shot must not restart")
        elif not hc or hc.get("disable") or not hc.get("test"):
            problems.add(sw, "has no healthcheck")
        for dep, cond in (s.get("depends_on") or {}).items():
            if dep not in svcs:
                problems.add(sw, f"depends on missing service {dep}")
            c = cond.get("condition") if isinstance(cond, dict) else None
            if c not in ("service_healthy", "service_completed_successfully"):
                problems.add(sw, f"depends_on {dep} without a health condition")
            if c == "service_healthy" and not (svcs.get(dep) or {}).get("healthcheck"):
                problems.add(sw, f"waits for {dep} to be healthy, but {dep} has no healthcheck")
        for sec in s.get("secrets") or []:
            src = sec if isinstance(sec, str) else sec.get("source")
            if src not in top_secrets:
                problems.add(sw, f"secret {src} is not defined")
        for vol in s.get("volumes") or []:
            src = vol.split(":")[0] if isinstance(vol, str) else vol.get("source")
            if src.startswith((".", "/")):
                if not (cdir / src).exists():
                    problems.add(sw, f"bind mount {src} does not exist")
            elif src not in volumes:
                problems.add(sw, f"volume {src} is not declared")
        for net in (s.get("networks") or []):
            if net not in networks and net != "default":
                problems.add(sw, f"network {net} is not declared")
        for port in s.get("ports") or []:
            m = re.fullmatch(r"\$\{EMPORIUM_BIND_ADDRESS:-127\.0\.0\.1\}:(\d+):(\d+)", str(port))
            if not m:
                problems.add(sw, f"published port {port} is not bound to ${{EMPORIUM_BIND_ADDRESS:-127.0.0.1}}")
        if name.endswith("-db") and s.get("ports"):
            problems.add(sw, "a database port is published")

    for svc in services:
        sw = f"{w} service {svc}"
        s = svcs.get(svc)
        if s is None:
            problems.add(w, f"no compose service for workspace service {svc}")
            continue
        binary = binaries.get(svc)
        image = interp_default(s.get("image", ""))
        if not image.startswith(IMAGE_REPO.format(svc=svc) + ":"):
            problems.add(sw, f"image {s.get('image')} is not {IMAGE_REPO.format(svc=svc)}")
        build = s.get("build") or {}
        if (cdir / build.get("context", "")).resolve() != repo or build.get("dockerfile") != "deploy/docker/Dockerfile":
            problems.add(sw, "build must be context ../.. with dockerfile deploy/docker/Dockerfile")
        args = build.get("args") or {}
        if args.get("SERVICE") != svc:
            problems.add(sw, f"build arg SERVICE is {args.get('SERVICE')!r}, not {svc!r}")
        for a in args:
            if a not in dockerfile_args:
                problems.add(sw, f"build arg {a} is not an ARG of the Dockerfile")
        env = {k: str(v) for k, v in (s.get("environment") or {}).items()}
        if binary:
            for var in sorted(env):
                check_var(problems, sw, binary, var)
        if "EMPORIUM_DEV_MODE" in env:
            problems.add(sw, "compose provides real (generated) secrets: it does not need EMPORIUM_DEV_MODE")
        secret_targets = set()
        for sec in s.get("secrets") or []:
            secret_targets.add(sec if isinstance(sec, str) else sec.get("target") or sec.get("source"))
        for var, value in env.items():
            if var.endswith("_FILE"):
                m = re.fullmatch(r"/run/secrets/([a-z0-9.-]+)", value)
                if not m or m.group(1) not in secret_targets:
                    problems.add(sw, f"{var}={value} is no secret mounted into {svc}")
        if binary:
            for var, want in (("EMPORIUM_SERVER__GRPC_ADDR", binary.grpc_port),
                              ("EMPORIUM_SERVER__ADMIN_ADDR", binary.admin_port)):
                if env.get(var) != f"0.0.0.0:{want}":
                    problems.add(sw, f"{var} should be 0.0.0.0:{want} (the binary's port, on every interface)")
            published = [str(p).rsplit(":", 2)[-2:] for p in s.get("ports") or []]
            if [str(binary.grpc_port)] * 2 not in published:
                problems.add(sw, f"gRPC port {binary.grpc_port} is not published as {binary.grpc_port}")
            if any(p[1] == str(binary.admin_port) for p in published):
                problems.add(sw, "the admin port is published")
        if (s.get("healthcheck") or {}).get("test") != ["CMD", SERVICE_BINARY_IN_IMAGE, "health"]:
            problems.add(sw, f"healthcheck must be [CMD, {SERVICE_BINARY_IN_IMAGE}, health]")
        if not s.get("read_only") or "ALL" not in (s.get("cap_drop") or []):
            problems.add(sw, "must run read_only with cap_drop: [ALL]")
        # A caller's peers by compose service name and gRPC port; it starts
        # after them only if it cannot start without them (the edge's
        # healthcheck asks them, so it waits for them to be healthy).
        if binary:
            for peer in sorted(binary.peers):
                var = f"EMPORIUM_PEERS__{peer.upper()}__URL"
                want = f"http://{peer}:{binaries[peer].grpc_port}" if peer in binaries else None
                if want and env.get(var) != want:
                    problems.add(sw, f"{var} should be {want} (the compose service and its gRPC port)")
                if svc == EDGE and ((s.get("depends_on") or {}).get(peer) or {}).get("condition") != "service_healthy":
                    problems.add(sw, f"does not wait for {peer} to be healthy")
        if svc == EDGE:
            # No database, no secret; the services trust its fixed address only.
            if s.get("secrets"):
                problems.add(sw, "the edge holds no secret (it forwards the caller's token)")
            if any(v.startswith(("EMPORIUM_AUTH__", "EMPORIUM_DATABASE__")) for v in env):
                problems.add(sw, "the edge has no token key and no database")
            if f"{svc}-db" in svcs:
                problems.add(sw, f"the edge keeps no state: no {svc}-db")
            nets = s.get("networks") or {}
            addr = (nets.get("default") or {}).get("ipv4_address") if isinstance(nets, dict) else None
            addr = interp_default(str(addr)) if addr else None
            try:
                edge_ip = ipaddress.ip_address(addr) if addr else None
            except ValueError:
                edge_ip = None
            if edge_ip is None:
                problems.add(sw, "needs a fixed ipv4_address on the default network (the services trust it)")
            else:
                subnets = [interp_default(str(c.get("subnet", ""))) for c in
                           (((networks.get("default") or {}).get("ipam") or {}).get("config") or [])]
                ranges = [interp_default(str(c.get("ip_range", ""))) for c in
                          (((networks.get("default") or {}).get("ipam") or {}).get("config") or [])]
                if not any(edge_ip in ipaddress.ip_network(n) for n in subnets if n):
                    problems.add(sw, f"{edge_ip} is in no subnet of the default network")
                if any(edge_ip in ipaddress.ip_network(r) for r in ranges if r) or not ranges:
                    problems.add(sw, f"{edge_ip} may be handed to another container: keep it out of the "
                                     "default network's ip_range")
                for other in services:
                    if other == EDGE or other not in svcs:
                        continue
                    oenv = {k: str(v) for k, v in (svcs[other].get("environment") or {}).items()}
                    raw = interp_default(oenv.get("EMPORIUM_SERVER__TRUSTED_PROXIES", ""))
                    try:
                        trusted = [ipaddress.ip_network(n) for n in json.loads(raw)]
                    except (ValueError, TypeError):
                        trusted = []
                    if not any(edge_ip in n for n in trusted):
                        problems.add(f"{w} service {other}", f"EMPORIUM_SERVER__TRUSTED_PROXIES={raw!r} does not "
                                                            f"trust the edge's address {edge_ip}")
                    elif any(n.num_addresses > 1 for n in trusted):
                        problems.add(f"{w} service {other}", f"EMPORIUM_SERVER__TRUSTED_PROXIES={raw!r} trusts "
                                     "more than the edge (the network's gateway is every host client's address)")
            continue
        # Its own database, reachable by nobody else.
        db = svcs.get(f"{svc}-db")
        if db is None:
            problems.add(sw, f"no database service {svc}-db")
            continue
        db_env = db.get("environment") or {}
        if db_env.get("POSTGRES_USER") != f"emporium_{svc}" or db_env.get("POSTGRES_DB") != f"emporium_{svc}":
            problems.add(f"{w} service {svc}-db", f"login and database should both be emporium_{svc}")
        url_secret = next((sec.get("source") for sec in s.get("secrets") or []
                           if isinstance(sec, dict) and sec.get("target") == "database-url"), None)
        if url_secret != f"{svc}-database-url":
            problems.add(sw, f"mounts {url_secret} as its database URL, not {svc}-database-url")
        else:
            url = (gen / Path(interp_default(top_secrets[url_secret]["file"])).name).read_text()
            m = re.fullmatch(r"postgres://([^:]+):([^@]+)@([^:/]+):5432/(\w+)", url)
            pw = (gen / f"{svc}-db-password").read_text() if (gen / f"{svc}-db-password").exists() else None
            if not m or m.group(1) != db_env.get("POSTGRES_USER") or m.group(4) != db_env.get("POSTGRES_DB") \
                    or m.group(3) != f"{svc}-db" or m.group(2) != pw:
                problems.add(sw, f"the generated database URL does not match {svc}-db's login, database and password")
        data_nets = [n for n in (db.get("networks") or ["default"])]
        for n in data_nets:
            members = {k for k, v in svcs.items() if n in (v.get("networks") or ["default"])}
            if members != {svc, f"{svc}-db"}:
                problems.add(f"{w} service {svc}-db", f"network {n} is joined by {sorted(members)}, not only {svc} and {svc}-db")

    # Prometheus scrapes the services where compose runs them (every one of them).
    prom = load_yaml(repo / "deploy" / "prometheus" / "prometheus.yml")
    scraped = {t.rsplit(":", 1)[0] for job in prom.get("scrape_configs") or []
               for sc in job.get("static_configs") or [] for t in sc.get("targets") or []}
    for svc in services:
        if svc not in scraped:
            problems.add("deploy/prometheus/prometheus.yml", f"{svc} is not scraped")
    for job in prom.get("scrape_configs") or []:
        for sc in job.get("static_configs") or []:
            for target in sc.get("targets") or []:
                host, port = target.rsplit(":", 1)
                if host not in svcs:
                    problems.add("deploy/prometheus/prometheus.yml", f"target {target}: no compose service {host}")
                elif host in binaries and int(port) != binaries[host].admin_port:
                    problems.add("deploy/prometheus/prometheus.yml", f"target {target}: {host}'s admin port is {binaries[host].admin_port}")

    # The CI override swaps images and leaves out, never adds.
    cw = "deploy/compose/compose.ci.yaml"
    for name, s in (ci.get("services") or {}).items():
        if name not in svcs:
            problems.add(cw, f"service {name} is not in compose.yaml")
            continue
        extra = set(s) - {"image", "build", "profiles"}
        if extra:
            problems.add(cw, f"service {name} changes {sorted(extra)}: the override may only swap images and leave out")
        if "image" in s and not s["image"].startswith("emporium-ci/"):
            problems.add(cw, f"service {name} image {s['image']} is not a local emporium-ci/ image")
        if "build" in s:
            if s["build"].get("target") != "prebuilt" or (s["build"].get("args") or {}).get("SERVICE") != name:
                problems.add(cw, f"service {name} must build target prebuilt with SERVICE={name}")
            for a in (s["build"].get("args") or {}):
                if a not in dockerfile_args:
                    problems.add(cw, f"service {name}: build arg {a} is not an ARG of the Dockerfile")
    for svc in services:
        if "build" not in ((ci.get("services") or {}).get(svc) or {}):
            problems.add(cw, f"service {svc} is not built from the host's binary")
    for name, s in svcs.items():
        cs = (ci.get("services") or {}).get(name) or {}
        if "image" in s and not cs.get("image") and not cs.get("profiles"):
            problems.add(cw, f"service {name} would pull {s['image']}: give it a local image or leave it out")


# ------------------------------------------------------------------ Dockerfile

def dockerfile_lines(repo: Path) -> list[str]:
    text = (repo / "deploy" / "docker" / "Dockerfile").read_text(encoding="utf-8")
    text = re.sub(r"\\\n", " ", text)
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def dockerfile_arg_names(repo: Path) -> set[str]:
    return {re.split(r"[= ]", line.split(None, 1)[1])[0] for line in dockerfile_lines(repo) if line.startswith("ARG ")}


def check_dockerfile(problems: Problems, repo: Path, services, binaries) -> None:
    w = "deploy/docker/Dockerfile"
    raw = (repo / "deploy" / "docker" / "Dockerfile").read_text(encoding="utf-8")
    lines = dockerfile_lines(repo)
    if re.search(r"^#\s*syntax=", raw, re.M):
        problems.add(w, "a `# syntax` line makes BuildKit pull a frontend; the build must work offline and on the classic builder")
    stages, current = {}, None
    for line in lines:
        m = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.I)
        if m:
            current = m.group(2) or f"stage{len(stages)}"
            stages[current] = {"from": m.group(1), "lines": [], "args": set()}
            continue
        if current:
            stages[current]["lines"].append(line)
            if line.startswith("ARG "):
                stages[current]["args"].add(re.split(r"[= ]", line.split(None, 1)[1])[0])
    order = list(stages)
    if not order or order[-1] != "runtime":
        problems.add(w, "the last stage (the default target) must be `runtime`")
    build_stages = [order.index(s) for s in stages if stages[s]["from"] == "${RUST_IMAGE}"]
    if "prebuilt" not in stages:
        problems.add(w, "no `prebuilt` target")
    elif build_stages and order.index("prebuilt") > min(build_stages):
        problems.add(w, "`prebuilt` must come before the build stages (the classic builder builds every stage up to the target)")
    for name, st in stages.items():
        for line in st["lines"]:
            if "${SERVICE}" in line and "SERVICE" not in st["args"]:
                problems.add(w, f"stage {name} uses ${{SERVICE}} without ARG SERVICE")
            if re.match(r"RUN\s+--mount", line) or re.match(r"(COPY|ADD)\s+.*--chmod", line):
                problems.add(w, f"stage {name}: `{line[:40]}…` needs BuildKit; the classic builder must work too")
    body = "\n".join(lines)
    if not re.search(r'cargo build --release --locked --package "emporium-\$\{SERVICE\}" --bin "emporium-\$\{SERVICE\}"', body):
        problems.add(w, "the builder does not build package and binary emporium-${SERVICE} in release")
    if "COPY emporium-${SERVICE} " + SERVICE_BINARY_IN_IMAGE not in body:
        problems.add(w, f"prebuilt does not copy emporium-${{SERVICE}} to {SERVICE_BINARY_IN_IMAGE}")
    if f'ENTRYPOINT ["{SERVICE_BINARY_IN_IMAGE}"]' not in body:
        problems.add(w, f"ENTRYPOINT is not {SERVICE_BINARY_IN_IMAGE}")
    if f'CMD ["{SERVICE_BINARY_IN_IMAGE}", "health"]' not in body:
        problems.add(w, f"HEALTHCHECK is not [{SERVICE_BINARY_IN_IMAGE}, health]")
    users = re.findall(r"^USER\s+(\S+)", body, re.M)
    if not users or any(not re.fullmatch(r"[1-9]\d*(:\d+)?", u) for u in users):
        problems.add(w, f"USER must be a numeric non-root uid (found {users})")
    for label in ("source", "revision", "version"):
        if f"org.opencontainers.image.{label}=" not in body:
            problems.add(w, f"no OCI label org.opencontainers.image.{label}")
    defaults = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", body, re.M))
    if not defaults.get("RUST_IMAGE", "").startswith("rust:") or "distroless" not in defaults.get("RUNTIME_IMAGE", ""):
        problems.add(w, "defaults must be a rust: build image and a distroless runtime")
    # Every workspace service: its package and binary exist under that name.
    meta = json.loads(subprocess.run(["cargo", "metadata", "--no-deps", "--format-version", "1"], cwd=repo,
                                     check=True, capture_output=True, text=True).stdout)
    bins = {(p["name"], t["name"]) for p in meta["packages"] for t in p["targets"] if "bin" in t["kind"]}
    for svc in services:
        if (f"emporium-{svc}", f"emporium-{svc}") not in bins:
            problems.add(w, f"SERVICE={svc} names no package/binary emporium-{svc}")
    for var in re.findall(r"^ENV\s+(\w+)=", body, re.M):
        for svc, b in binaries.items():
            check_var(problems, w, b, var)
    ignore = (repo / ".dockerignore").read_text(encoding="utf-8").split() if (repo / ".dockerignore").exists() else []
    for must in ("target/", "data/", "certs/"):
        if must not in ignore:
            problems.add(".dockerignore", f"does not keep {must} out of the build context")


# ------------------------------------------------------------------ workflow

def check_workflow(problems: Problems, repo: Path) -> None:
    wf = repo / ".github" / "workflows" / "ci.yml"
    if not wf.exists():
        problems.add(".github/workflows/ci.yml", "missing")
        return
    run = subprocess.run(["check-jsonschema", "--builtin-schema", "vendor.github-workflows", str(wf)],
                         capture_output=True, text=True)
    if run.returncode != 0:
        problems.add(".github/workflows/ci.yml", "workflow schema: " + " ".join((run.stdout + run.stderr).split()))
    text = wf.read_text(encoding="utf-8")
    for gate in ("bufbuild/buf-action", "cargo fmt", "cargo clippy", "tools/check-deploy", "deploy/docker/Dockerfile"):
        if gate not in text:
            problems.add(".github/workflows/ci.yml", f"does not run {gate}")


# ------------------------------------------------------------------ negative tests

NEGATIVE = [
    # (what, file, old, new, expected message fragment)
    ("a Deployment without its liveness probe", "deploy/k8s/base/payment.yaml",
     "          livenessProbe:\n            grpc:\n              port: 50053\n              service: liveness\n"
     "            periodSeconds: 10\n            timeoutSeconds: 2\n            failureThreshold: 3\n", "",
     "Deployment/emporium-payment container server: has no livenessProbe"),
    ("a NetworkPolicy naming a label no pod has", "deploy/k8s/base/network-policies.yaml",
     "  name: emporium-inventory\nspec:\n  podSelector:\n    matchLabels:\n      app.kubernetes.io/name: emporium-inventory\n"
     "  policyTypes: [Ingress]\n  ingress:\n    - from:\n        - podSelector:\n            matchLabels:\n"
     "              app.kubernetes.io/name: emporium-order\n",
     "  name: emporium-inventory\nspec:\n  podSelector:\n    matchLabels:\n      app.kubernetes.io/name: emporium-inventory\n"
     "  policyTypes: [Ingress]\n  ingress:\n    - from:\n        - podSelector:\n            matchLabels:\n"
     "              app.kubernetes.io/name: emporium-orders\n",
     "NetworkPolicy/emporium-inventory ingress[0]: podSelector"),
    ("a NetworkPolicy opening a port the pods do not have", "deploy/k8s/base/network-policies.yaml",
     "  name: emporium-payment\nspec:\n  podSelector:\n    matchLabels:\n      app.kubernetes.io/name: emporium-payment\n"
     "  policyTypes: [Ingress]\n  ingress:\n    - from:\n        - podSelector:\n            matchLabels:\n"
     "              app.kubernetes.io/name: emporium-order\n        - podSelector:\n            matchLabels:\n"
     "              app.kubernetes.io/name: emporium-edge\n      ports:\n        - port: grpc\n",
     "  name: emporium-payment\nspec:\n  podSelector:\n    matchLabels:\n      app.kubernetes.io/name: emporium-payment\n"
     "  policyTypes: [Ingress]\n  ingress:\n    - from:\n        - podSelector:\n            matchLabels:\n"
     "              app.kubernetes.io/name: emporium-order\n        - podSelector:\n            matchLabels:\n"
     "              app.kubernetes.io/name: emporium-edge\n      ports:\n        - port: 50099\n",
     "port 50099 is no port of Deployment/emporium-payment"),
    ("a variable the code does not read (the old flat name)", "deploy/k8s/base/kustomization.yaml",
     "      - EMPORIUM_USER__ADMIN_EMAIL=admin@emporium.example\n",
     "      - EMPORIUM_ADMIN_EMAIL=admin@emporium.example\n",
     "EMPORIUM_ADMIN_EMAIL is not read by emporium-user"),
    ("a Secret nobody documented", "deploy/k8s/base/order.yaml",
     "            secretName: emporium-order-database\n", "            secretName: emporium-order-db-url\n",
     "Secret emporium-order-db-url (key url) is referenced but neither generated nor documented"),
    ("a Service whose selector matches no pod", "deploy/k8s/base/user.yaml",
     "  name: emporium-user\n  labels:\n    app.kubernetes.io/name: emporium-user\n    app.kubernetes.io/component: user\n"
     "    app.kubernetes.io/part-of: emporium\nspec:\n  type: ClusterIP\n  selector:\n    app.kubernetes.io/name: emporium-user\n",
     "  name: emporium-user\n  labels:\n    app.kubernetes.io/name: emporium-user\n    app.kubernetes.io/component: user\n"
     "    app.kubernetes.io/part-of: emporium\nspec:\n  type: ClusterIP\n  selector:\n    app.kubernetes.io/name: emporium-usr\n",
     "Service/emporium-user: selector"),
    ("development mode switched on in prod", "deploy/k8s/overlays/prod/kustomization.yaml",
     "      - EMPORIUM_USER__ADMIN_EMAIL=admin@emporium.example\n",
     "      - EMPORIUM_USER__ADMIN_EMAIL=admin@emporium.example\n      - EMPORIUM_DEV_MODE=true\n",
     "EMPORIUM_DEV_MODE is set: development mode in prod"),
    ("a grace period shorter than the drain", "deploy/k8s/base/inventory.yaml",
     "      terminationGracePeriodSeconds: 40\n", "      terminationGracePeriodSeconds: 20\n",
     "Deployment/emporium-inventory: terminationGracePeriodSeconds 20 does not exceed"),
    ("a compose variable the code does not read", "deploy/compose/compose.yaml",
     "      EMPORIUM_INVENTORY__CURRENCY: EUR\n", "      EMPORIUM_CURRENCY: EUR\n",
     "EMPORIUM_CURRENCY is not read by emporium-inventory"),
    ("a compose database reachable by another service", "deploy/compose/compose.yaml",
     "    networks: [default, payment-data]\n", "    networks: [default, payment-data, order-data]\n",
     "network order-data is joined by"),
    # The edge: HTTP, the only way in, no secret, trusted by the services.
    ("the edge probed over gRPC", "deploy/k8s/base/edge.yaml",
     "          livenessProbe:\n            httpGet:\n              path: /healthz\n              port: admin\n",
     "          livenessProbe:\n            grpc:\n              port: 8080\n",
     "Deployment/emporium-edge container server: livenessProbe must be an HTTP GET of /healthz"),
    ("a service reachable from outside the namespace", "deploy/k8s/base/network-policies.yaml",
     "  policyTypes: [Ingress, Egress]\n  ingress:\n    - from:\n        - podSelector:\n            matchLabels:\n"
     "              app.kubernetes.io/name: emporium-edge\n",
     "  policyTypes: [Ingress, Egress]\n  ingress:\n    - from:\n        - podSelector:\n            matchLabels:\n"
     "              app.kubernetes.io/name: emporium-edge\n        - namespaceSelector:\n            matchLabels:\n"
     "              kubernetes.io/metadata.name: ingress-nginx\n",
     "of ['Deployment/emporium-order'] are reachable from outside the namespace"),
    ("an Ingress to a service other than the edge", "deploy/k8s/base/edge.yaml",
     "              service:\n                name: emporium-edge\n                port:\n                  name: http\n",
     "              service:\n                name: emporium-order\n                port:\n                  name: grpc\n",
     "Ingress/emporium-edge: routes to emporium-order: only the edge is exposed"),
    ("the edge given the token keys", "deploy/k8s/base/edge.yaml",
     "          volumeMounts:\n            - name: tmp\n",
     "          env:\n            - name: EMPORIUM_AUTH__JWT_SECRET_FILE\n              value: /tmp/jwt-secret\n"
     "          volumeMounts:\n            - name: tmp\n",
     "the edge holds no secret"),
    ("the services not trusting the edge in compose", "deploy/compose/compose.yaml",
     "        ipv4_address: ${EMPORIUM_COMPOSE_NET:-172.30.80}.200\n",
     "        ipv4_address: ${EMPORIUM_COMPOSE_NET:-172.30.80}.201\n",
     "does not trust the edge's address 172.30.80.201"),
    ("the services without trusted proxies in Kubernetes", "deploy/k8s/base/kustomization.yaml",
     '      - EMPORIUM_SERVER__TRUSTED_PROXIES=["10.244.0.0/16", "127.0.0.1/32", "::1/128"]\n', "",
     "EMPORIUM_SERVER__TRUSTED_PROXIES='' is not a non-empty JSON list"),
    ("a Dockerfile building a binary the workspace does not have", "deploy/docker/Dockerfile",
     '--bin "emporium-${SERVICE}"', '--bin "emporium-${SERVICE}-server"',
     "the builder does not build package and binary emporium-${SERVICE}"),
]


def negative_tests(repo: Path, scratch: Path, services, binaries) -> list[str]:
    """Each case breaks one file in a copy of the tree; the checks must name it."""
    failures = []
    for what, rel, old, new, expect in NEGATIVE:
        copy = scratch / "negative"
        shutil.rmtree(copy, ignore_errors=True)
        for part in ("deploy", "docs", "tools", ".dockerignore", ".github"):
            src = repo / part
            if src.is_dir():
                shutil.copytree(src, copy / part)
            elif src.exists():
                shutil.copy2(src, copy / part)
        for f in ("Cargo.toml", "Cargo.lock"):
            shutil.copy2(repo / f, copy / f)
        for d in ("crates", "services"):
            os.symlink(repo / d, copy / d)
        target = copy / rel
        text = target.read_text(encoding="utf-8")
        if old not in text:
            failures.append(f"negative test {what!r}: the text to break is no longer in {rel}; update the test")
            continue
        target.write_text(text.replace(old, new, 1), encoding="utf-8")
        found = Problems()
        if rel.startswith("deploy/k8s"):
            check_k8s(found, copy, scratch / "negative-render", services, binaries, validate=False)
        elif rel.startswith("deploy/compose"):
            check_compose(found, copy, scratch / "negative-render", services, binaries, validate=False)
        else:
            check_dockerfile(found, copy, services, binaries)
        hits = [p for p in found if expect in p]
        if hits:
            print(f"  caught: {what}: {hits[0]}")
        else:
            failures.append(f"negative test {what!r}: expected a problem containing {expect!r}, got "
                            f"{found[:3] or 'none'}")
    shutil.rmtree(scratch / "negative", ignore_errors=True)
    return failures


# ------------------------------------------------------------------ main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin-dir", required=True, type=Path, help="where emporium-<svc> binaries are")
    ap.add_argument("--scratch", required=True, type=Path, help="a directory for renders and copies")
    ap.add_argument("--skip-negative", action="store_true")
    args = ap.parse_args()
    args.scratch.mkdir(parents=True, exist_ok=True)

    services = workspace_services(REPO)
    binaries = {s: Binary(s, args.bin_dir / f"emporium-{s}") for s in services}
    print(f"workspace services: {', '.join(services)}")
    for s, b in binaries.items():
        print(f"  {s}: {'HTTP' if b.is_edge else 'gRPC'} {b.grpc_port}, admin {b.admin_port}, "
              f"{len(b.vars)} variables" + (f", peers {', '.join(sorted(b.peers))}" if b.peers else ""))

    problems = Problems()
    check_dockerfile(problems, REPO, services, binaries)
    print("Dockerfile: checked")
    check_compose(problems, REPO, args.scratch, services, binaries)
    print("compose: schema (vendor.compose-spec) and consistency checked")
    check_k8s(problems, REPO, args.scratch, services, binaries)
    print(f"kubernetes: {', '.join(variants(REPO / 'deploy' / 'k8s', args.scratch))} rendered, "
          f"validated (kubernetes-validate --strict, {' and '.join(v or 'latest' for v in K8S_VERSIONS)}), policy checked")
    check_workflow(problems, REPO)
    print("workflow: schema (vendor.github-workflows) checked")

    if not args.skip_negative:
        print("negative tests (each breaks a copy on purpose; the check must name the break):")
        problems.extend(negative_tests(REPO, args.scratch, services, binaries))

    for p in problems:
        print(f"PROBLEM {p}")
    if problems:
        print(f"check-deploy: {len(problems)} problem(s)")
        return 1
    print("check-deploy: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
