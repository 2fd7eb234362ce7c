"""Deployment files: the Kubernetes manifests parse and carry the fields a
rollout depends on (probes on the health routes, resources, drain), and the
Dockerfiles build with the same commands the README and CI run."""
import os
import re

import yaml

from vstest import check, done

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
K8S = os.path.join(ROOT, "deploy", "k8s")

docs = {}
for name in sorted(os.listdir(K8S)):
    if name.endswith(".yaml"):
        with open(os.path.join(K8S, name)) as f:
            loaded = [d for d in yaml.safe_load_all(f) if d]
        check(loaded, f"{name}: empty")
        for d in loaded:
            check("kind" in d and "apiVersion" in d, f"{name}: kind/apiVersion missing")
            docs.setdefault(d["kind"], []).append((name, d))

kust = docs["Kustomization"][0][1]
for r in kust["resources"]:
    check(os.path.exists(os.path.join(K8S, r)), f"kustomization lists missing {r}")

dep = docs["Deployment"][0][1]
labels = dep["spec"]["selector"]["matchLabels"]
tmpl = dep["spec"]["template"]
check(all(tmpl["metadata"]["labels"].get(k) == v for k, v in labels.items()),
      "pod template labels match the selector")
c = tmpl["spec"]["containers"][0]
check(c["readinessProbe"]["httpGet"]["path"] == "/health/ready", "readiness on /health/ready")
check(c["livenessProbe"]["httpGet"]["path"] == "/health/live", "liveness on /health/live")
check(c["startupProbe"]["httpGet"]["path"] == "/health/ready", "startup on /health/ready")
check(any(p["containerPort"] == 7860 for p in c["ports"]), "container port 7860")
check("requests" in c["resources"] and "memory" in c["resources"]["requests"], "memory request")
check("preStop" in c["lifecycle"], "preStop delay for zero-downtime rollouts")
env = {e["name"]: e.get("value") for e in c["env"]}
grace = int(env["VITSERVE_SHUTDOWN_GRACE_S"])
check(tmpl["spec"]["terminationGracePeriodSeconds"] > grace + 5,
      "pod grace period covers the preStop delay and the server's drain")
mounts = {m["name"] for m in c["volumeMounts"]}
vols = {v["name"] for v in tmpl["spec"]["volumes"]}
check(mounts <= vols, f"every volume mount has a volume ({mounts - vols})")
check(tmpl["spec"]["securityContext"]["runAsUser"] == 1000, "runs as uid 1000")

svc = docs["Service"][0][1]
check(svc["spec"]["selector"] == labels, "service selects the deployment's pods")
hpa = docs["HorizontalPodAutoscaler"][0][1]
check(hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"], "HPA targets the deployment")
check(hpa["spec"]["minReplicas"] >= 1 and hpa["spec"]["maxReplicas"] >= hpa["spec"]["minReplicas"], "HPA bounds")
sm = docs["ServiceMonitor"][0][1]
check(sm["spec"]["endpoints"][0]["path"] == "/metrics", "scrape /metrics")
pvc_names = {d["metadata"]["name"] for _, d in docs["PersistentVolumeClaim"]}
claims = {v["persistentVolumeClaim"]["claimName"] for v in tmpl["spec"]["volumes"] if "persistentVolumeClaim" in v}
check(claims <= pvc_names, "claims exist")

# Dockerfile: the README's build steps, Spaces' conventions.
docker = open(os.path.join(ROOT, "Dockerfile")).read()
check("scripts/install-deps.sh" in docker and "cmake --preset release" in docker,
      "Dockerfile builds with the README's commands")
serve_sh = open(os.path.join(ROOT, "scripts", "serve.sh")).read()
check("cmake --preset release" in serve_sh, "serve.sh uses the release preset too")
check(re.search(r"^EXPOSE 7860$", docker, re.M), "EXPOSE 7860")
check(re.search(r"useradd --uid 1000", docker) and re.search(r"^USER user$", docker, re.M), "non-root uid 1000")
check("HEALTHCHECK" in docker and "/health/ready" in docker, "HEALTHCHECK on /health/ready")
check(re.search(r"^VOLUME /data$", docker, re.M) and "HF_HOME=/data" in docker, "model cache on a volume")
check(docker.count("FROM ") == 2, "multi-stage")
cuda = open(os.path.join(ROOT, "Dockerfile.cuda")).read()
check("VS_CUDA=ON" in cuda and "runtime" in cuda, "CUDA variant builds the backend and runs on the runtime image")
# The CUDA image builds on Ubuntu 22.04, whose CMake (3.22) predates the
# presets file's version 6 (CMake 3.25): it must not use --preset, and it
# must set what the release preset sets.
m = re.search(r"ubuntu(\d+)\.(\d+)", cuda)
if m and (int(m.group(1)), int(m.group(2))) < (24, 4):
    check("--preset" not in cuda and "CMAKE_BUILD_TYPE=Release" in cuda and "VS_TESTS=OFF" in cuda,
          "Dockerfile.cuda on an Ubuntu before 24.04 (CMake < 3.25) builds without presets")
# The README has a Space set VITSERVE_MODEL (and every option as a variable):
# a flag in the image's ENTRYPOINT/CMD would win over the variable.
for name, text in (("Dockerfile", docker), ("Dockerfile.cuda", cuda)):
    argv = " ".join(l for l in text.splitlines() if re.match(r"^(ENTRYPOINT|CMD) ", l))
    check(re.search(r'^ENTRYPOINT \["vitserve", "serve"\]$', text, re.M) and "--" not in argv,
          f"{name}: no flags in ENTRYPOINT/CMD, so VITSERVE_* variables apply: {argv}")
done()
