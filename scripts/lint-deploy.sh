#!/usr/bin/env bash
# Lints deploy/, offline:
#  1. yamllint (config: .yamllint) over deploy/ and each rendered overlay;
#  2. renders every overlay under deploy/k8s/overlays/ with kubectl's
#     built-in kustomize (kubectl 1.20's kustomize v2.0.3 and newer ones);
#  3. checks the rendered manifests against the server itself:
#     - every flag variable of ServerFlags() (service/server/server_config.cc)
#       is listed in deploy/k8s/base/batchfetch.env, set or commented, and
#       every BATCHFETCH_* name there or in a rendered ConfigMap is one of
#       them (the server ignores a misspelt variable) and no ConfigMap
#       holds the MySQL password;
#     - terminationGracePeriodSeconds outlasts the preStop sleep plus
#       BATCHFETCH_SHUTDOWN_GRACE plus 30 s for cancelling and flushing;
#     - readiness is the server's health, either a grpc: probe or (with
#       TLS on the gRPC port: deploy/k8s/overlays/tls) an httpGet of
#       /readyz on the metrics port; liveness is not the health (a MySQL
#       outage must not restart pods: deploy/k8s/base/statefulset.yaml);
#       a probe on the metrics port needs BATCHFETCH_METRICS_LISTEN on it;
#       each probe has exactly one handler (what an overlay's patch left);
#     - the pod runs as non-root with a read-only root, no privilege
#       escalation and no capabilities;
#     - BATCHFETCH_SPOOL_DIR lies on a volumeClaimTemplate's mount.
# Prints what it checked; exits 1 on the first kind of failure.
set -euo pipefail
cd "$(dirname "$0")/.."

BATCHFETCH_DEPLOY_DEPS=1 scripts/install-deps.sh

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

echo "::: yamllint deploy/"
yamllint --strict deploy/ .yamllint

overlays=()
for dir in deploy/k8s/overlays/*/; do
  [[ -f "$dir/kustomization.yaml" ]] && overlays+=("${dir%/}")
done
if ((${#overlays[@]} == 0)); then
  echo "lint-deploy: no overlay under deploy/k8s/overlays" >&2
  exit 1
fi
rendered=()
for overlay in deploy/k8s/base "${overlays[@]}"; do
  name=$(basename "$overlay")
  echo "::: kubectl kustomize $overlay"
  # Newer kustomize warns on stderr about the fields kept for kubectl 1.20.
  kubectl kustomize "$overlay" >"$out/$name.yaml" 2>"$out/$name.err" || {
    cat "$out/$name.err" >&2
    exit 1
  }
  grep -v "^# Warning: '[A-Za-z0-9]*' is deprecated" "$out/$name.err" >&2 || true
  yamllint --strict -c .yamllint - <"$out/$name.yaml"
  rendered+=("$out/$name.yaml")
done

echo "::: checks against service/server/server_config.cc"
python3 - service/server/server_config.cc deploy/k8s/base/batchfetch.env \
  "${rendered[@]}" <<'EOF'
import re
import sys

import yaml

config_cc, env_file, manifests = sys.argv[1], sys.argv[2], sys.argv[3:]
failures = []


def fail(message):
    failures.append(message)


source = open(config_cc).read()
flags_list = re.search(r"ServerFlags\(\) \{(.*?)\n\}", source, re.S)
known = set(re.findall(r'"(BATCHFETCH_[A-Z0-9_]+)"', flags_list.group(1)))
if len(known) < 10:
    sys.exit("could not read ServerFlags() from %s" % config_cc)

listed = set()
for line in open(env_file):
    match = re.match(r"\s*#?\s*(BATCHFETCH_[A-Z0-9_]+)=", line)
    if match:
        listed.add(match.group(1))
for name in sorted(known - listed):
    fail("%s: %s (a server flag) is not listed" % (env_file, name))
for name in sorted(listed - known):
    fail("%s: %s is not a server flag variable" % (env_file, name))


def seconds(text, where):
    """An absl duration ("20s", "1m30s", "1.5h", "inf") in seconds; None
    (after fail()) when the server would refuse it too."""
    if text == "inf":
        return float("inf")
    if text == "0":  # absl's one duration without a unit
        return 0.0
    scale = {"ns": 1e-9, "us": 1e-6, "ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        fail("%s: cannot read the duration %r (e.g. 20s, 1m30s)" % (where, text))
        return None
    return sum(float(n) * scale[u] for n, u in parts)


for path in manifests:
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    configs = {d["metadata"]["name"]: d.get("data", {})
               for d in docs if d["kind"] == "ConfigMap"}
    for name, data in configs.items():
        for key in data:
            if key == "BATCHFETCH_MYSQL_PASSWORD":
                fail("%s: ConfigMap %s holds the MySQL password" % (path, name))
            elif key.startswith("BATCHFETCH_") and key not in known:
                fail("%s: ConfigMap %s: %s is not a server flag variable"
                     % (path, name, key))
    sets = [d for d in docs if d["kind"] in ("StatefulSet", "Deployment")]
    if not sets:
        fail("%s: no StatefulSet or Deployment" % path)
    for workload in sets:
        where = "%s: %s %s" % (path, workload["kind"], workload["metadata"]["name"])
        pod = workload["spec"]["template"]["spec"]
        (container,) = [c for c in pod["containers"] if c["name"] == "batchfetch"]
        env = {}
        for source_ref in container.get("envFrom", []):
            env.update(configs.get(source_ref.get("configMapRef", {}).get("name"), {}))
        for item in container.get("env", []):
            env[item["name"]] = item.get("value", "")
        grace = seconds(env.get("BATCHFETCH_SHUTDOWN_GRACE", "20s"),
                        where + ": BATCHFETCH_SHUTDOWN_GRACE")
        pre_stop = container.get("lifecycle", {}).get("preStop", {})
        command = pre_stop.get("exec", {}).get("command", [])
        sleep = float(command[1]) if command[:1] == ["/bin/sleep"] else 0
        if sleep == 0:
            fail("%s: no preStop sleep" % where)
        termination = pod.get("terminationGracePeriodSeconds", 30)
        if grace is not None and termination <= sleep + grace + 30:
            fail("%s: terminationGracePeriodSeconds %s must exceed the preStop "
                 "sleep %g + --shutdown_grace %g + 30 s"
                 % (where, termination, sleep, grace))
        ports = {p.get("name"): p["containerPort"]
                 for p in container.get("ports", [])}

        def metrics_http(probe, path=None):
            """Whether `probe` is an httpGet on the metrics port (of `path`)."""
            http = (probe or {}).get("httpGet")
            return (http is not None
                    and http.get("port") in ("metrics", ports.get("metrics"))
                    and path in (None, http.get("path")))

        readiness = container.get("readinessProbe", {})
        if "grpc" in readiness and env.get("BATCHFETCH_TLS_CERT"):
            fail("%s: readinessProbe is a grpc: probe but BATCHFETCH_TLS_CERT "
                 "is set: kubelet's gRPC probe speaks plaintext, so the pods "
                 "would never be Ready (use httpGet /readyz on the metrics "
                 "port, as deploy/k8s/overlays/tls does)" % where)
        if "grpc" not in readiness and not metrics_http(readiness, "/readyz"):
            fail("%s: readinessProbe is neither a grpc: probe nor an httpGet "
                 "of /readyz on the metrics port" % where)
        liveness = container.get("livenessProbe")
        if (liveness is None or "grpc" in liveness
                or (liveness.get("httpGet") or {}).get("path") == "/readyz"):
            fail("%s: livenessProbe missing or the server's health (a grpc: "
                 "probe or /readyz: NOT_SERVING during a MySQL outage would "
                 "restart every pod)" % where)
        probes = [container.get(k) for k in
                  ("readinessProbe", "livenessProbe", "startupProbe")]
        for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
            handlers = sorted(set(container.get(kind) or {})
                              & {"exec", "grpc", "httpGet", "tcpSocket"})
            if container.get(kind) is not None and len(handlers) != 1:
                fail("%s: %s must have exactly one handler, not %s (an "
                     "overlay replacing one sets the old one to null)"
                     % (where, kind, handlers or "none"))
        if any(metrics_http(probe) for probe in probes):
            listen = env.get("BATCHFETCH_METRICS_LISTEN", "")
            if not listen:
                fail("%s: a probe asks the metrics port but "
                     "BATCHFETCH_METRICS_LISTEN is not set" % where)
            elif listen.rpartition(":")[2] != str(ports.get("metrics")):
                fail("%s: BATCHFETCH_METRICS_LISTEN=%s is not the metrics "
                     "containerPort %s the probes ask"
                     % (where, listen, ports.get("metrics")))
        security = container.get("securityContext", {})
        pod_security = pod.get("securityContext", {})
        if not (security.get("runAsNonRoot") or pod_security.get("runAsNonRoot")):
            fail("%s: runAsNonRoot is not set" % where)
        if security.get("readOnlyRootFilesystem") is not True:
            fail("%s: readOnlyRootFilesystem is not true" % where)
        if security.get("allowPrivilegeEscalation") is not False:
            fail("%s: allowPrivilegeEscalation is not false" % where)
        if security.get("capabilities", {}).get("drop") != ["ALL"]:
            fail("%s: capabilities do not drop ALL" % where)
        spool_dir = env.get("BATCHFETCH_SPOOL_DIR", "")
        if spool_dir:
            claims = {t["metadata"]["name"]
                      for t in workload["spec"].get("volumeClaimTemplates", [])}
            mounts = [m for m in container.get("volumeMounts", [])
                      if (spool_dir + "/").startswith(m["mountPath"].rstrip("/") + "/")]
            if not any(m["name"] in claims for m in mounts):
                fail("%s: BATCHFETCH_SPOOL_DIR=%s is not on a "
                     "volumeClaimTemplate's volume" % (where, spool_dir))
    print("%s: %d objects, %d workload(s) checked" % (path, len(docs), len(sets)))

for message in failures:
    print("lint-deploy: " + message, file=sys.stderr)
sys.exit(1 if failures else 0)
EOF
echo "lint-deploy: OK (${#overlays[@]} overlay(s))"
