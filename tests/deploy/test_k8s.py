"""deploy/k8s: both overlays render with kustomize, every object is valid for Kubernetes (strict schemas), and the
rendered objects say what the design needs: GPUs only in the gpu overlay, native gRPC probes, headless Services with
client-side round robin, disruption budgets, an autoscaler, secrets held in Secrets, pinned images."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import replace

import kubernetes_validate
import pytest
import yaml

from tests.deploy.conftest import DEPLOY, OVERLAYS, run, tool

BACKENDS = {"music": ("tunereel.v1.MusicService", 50051), "video": ("tunereel.v1.VideoService", 50052)}
COMPOSER = ("tunereel.v1.ComposerService", 50050)
GPU = "nvidia.com/gpu"


def objects(docs: list[dict], kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def pod_spec(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"]


def all_containers(doc: dict) -> list[dict]:
    spec = pod_spec(doc)
    return [*spec.get("initContainers", []), *spec["containers"]]


def workloads(docs: list[dict]) -> list[dict]:
    return [doc for doc in docs if doc["kind"] in ("Deployment", "StatefulSet", "Job")]


def env_of(container: dict) -> dict[str, dict]:
    return {item["name"]: item for item in container.get("env", [])}


def args_of(container: dict) -> dict[str, str]:
    """--flag value / --flag=value → {flag: value}."""
    args, parsed = list(container.get("args", [])), {}
    while args:
        flag = args.pop(0)
        if "=" in flag:
            flag, value = flag.split("=", 1)
        else:
            value = args.pop(0) if args and not args[0].startswith("--") else ""
        parsed[flag] = value
    return parsed


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_object_is_valid_for_kubernetes(rendered, overlay):
    version = kubernetes_validate.latest_version()
    docs = rendered[overlay]
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(
                f"{overlay}: {doc['kind']}/{doc['metadata']['name']} is not valid for {version}: {error.message}"
            )
    kinds = {doc["kind"] for doc in docs}
    assert {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "Ingress", "ConfigMap"} <= kinds


def test_the_validator_rejects_what_kubernetes_would(rendered):
    """Strict validation is real: an unknown field and a wrong type are caught."""
    version = kubernetes_validate.latest_version()
    deployment = copy.deepcopy(objects(rendered["gpu"], "Deployment")["music"])
    pod_spec(deployment)["containers"][0]["readinessProbe"]["grpcc"] = {"port": 1}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, version, strict=True)
    deployment = copy.deepcopy(objects(rendered["gpu"], "Deployment")["music"])
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, version, strict=True)


def test_the_rendered_files_validate_with_the_cli_too(tmp_path, rendered):
    """What CI runs by hand: `kubectl kustomize … > file` then `kubernetes-validate --strict file`."""
    for overlay, docs in rendered.items():
        path = tmp_path / f"{overlay}.yaml"
        path.write_text(yaml.safe_dump_all(docs))
        result = run([tool("kubernetes-validate"), "--strict", "--quiet", str(path)])
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gpu_requests_node_pool_and_taint_in_the_gpu_overlay_only(rendered, overlay):
    docs = rendered[overlay]
    deployments = objects(docs, "Deployment")
    if overlay == "cpu-tiny":
        assert GPU not in json.dumps(docs)
        for doc in deployments.values():
            assert "nodeSelector" not in pod_spec(doc) and "tolerations" not in pod_spec(doc)
        return
    for name in BACKENDS:
        spec = pod_spec(deployments[name])
        resources = spec["containers"][0]["resources"]
        assert resources["limits"][GPU] == 1 and resources["requests"][GPU] == 1
        assert spec["nodeSelector"], "music and video must select the GPU node pool"
        assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    for name in ("composer", "gateway", "envoy"):  # CPU only
        assert GPU not in json.dumps(deployments[name])


def test_gpu_weights_come_from_the_volume_filled_once_by_a_job(rendered):
    docs = rendered["gpu"]
    deployments = objects(docs, "Deployment")
    claims = objects(docs, "PersistentVolumeClaim")
    assert "model-cache" in claims
    for name in BACKENDS:
        spec = pod_spec(deployments[name])
        volumes = {volume["name"]: volume for volume in spec["volumes"]}
        assert volumes["models"] == {
            "name": "models",
            "persistentVolumeClaim": {"claimName": "model-cache", "readOnly": True},
        }
        container = spec["containers"][0]
        mount = next(m for m in container["volumeMounts"] if m["name"] == "models")
        assert mount["readOnly"] is True
        assert env_of(container)["HF_HOME"]["value"].startswith(mount["mountPath"] + "/")
        assert "HF_HUB_OFFLINE" not in env_of(container)  # the image's HF_HUB_OFFLINE=1 stands: never download
        assert args_of(container)["--preset"] != "tiny"
        init = [c["name"] for c in spec.get("initContainers", [])]
        assert init == ["wait-for-weights"], init  # no tiny models here; wait for the Job's marker
    job = objects(docs, "Job")["load-weights"]
    container = pod_spec(job)["containers"][0]
    assert env_of(container)["HF_HUB_OFFLINE"]["value"] == "0"
    assert "hf download" in " ".join(container["command"])
    marker = re.search(r"touch \"\$HF_HOME/([^\"]+)\"", " ".join(container["command"])).group(1)
    wait = pod_spec(deployments["music"])["initContainers"][0]
    assert marker in " ".join(wait["command"])
    job_volume = {v["name"]: v for v in pod_spec(job)["volumes"]}["models"]
    assert job_volume["persistentVolumeClaim"]["claimName"] == "model-cache"
    # only the Job downloads
    for doc in workloads(docs):
        if doc["kind"] != "Job":
            assert "hf download" not in json.dumps(doc)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_grpc_container_has_native_grpc_probes(rendered, overlay):
    deployments = objects(rendered[overlay], "Deployment")
    expected = {**BACKENDS, "composer": COMPOSER}
    for name, (service, port) in expected.items():
        container = pod_spec(deployments[name])["containers"][0]
        assert {"name": "grpc", "containerPort": port} in container["ports"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"] == {"port": port, "service": service}, (name, probe)
    for doc in deployments.values():  # any other container exposing gRPC is probed the same way
        for container in pod_spec(doc)["containers"]:
            if any(port.get("name") == "grpc" for port in container.get("ports", [])):
                assert "grpc" in container["readinessProbe"] and "grpc" in container["livenessProbe"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_graceful_shutdown_drains_in_flight_streams(rendered, overlay):
    for name, doc in objects(rendered[overlay], "Deployment").items():
        spec = pod_spec(doc)
        container = spec["containers"][0]
        pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
        assert pre_stop[0] == "sleep"
        drain = float(env_of(container).get("TUNEREEL_DRAIN_SECONDS", {}).get("value", 0))
        assert spec["terminationGracePeriodSeconds"] > float(pre_stop[1]) + drain, name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_headless_services_and_round_robin_over_dns(rendered, overlay):
    docs = rendered[overlay]
    services = objects(docs, "Service")
    deployments = objects(docs, "Deployment")
    for name, (_, port) in {**BACKENDS, "composer": COMPOSER}.items():
        service = services[name]
        assert service["spec"]["clusterIP"] == "None", f"{name} must be headless"
        assert service["spec"]["ports"][0]["port"] == port
        labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()
    composer = args_of(pod_spec(deployments["composer"])["containers"][0])
    assert composer["--music"] == "dns:///music:50051"
    assert composer["--video"] == "dns:///video:50052"
    assert args_of(pod_spec(deployments["gateway"])["containers"][0])["--composer"] == "dns:///composer:50050"
    # the round-robin, health-checked policy is the one the code ships (tunereel/service_config.json)
    from tunereel.channels import service_config

    config = service_config("tunereel.v1.MusicService")
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    assert config["healthCheckConfig"] == {"serviceName": "tunereel.v1.MusicService"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_disruption_budgets_autoscaler_and_resources(rendered, overlay):
    docs = rendered[overlay]
    deployments = objects(docs, "Deployment")
    budgets = objects(docs, "PodDisruptionBudget")
    for name in ("music", "video", "composer", "gateway", "envoy"):
        selector = budgets[name]["spec"]["selector"]["matchLabels"]
        assert selector.items() <= deployments[name]["spec"]["template"]["metadata"]["labels"].items()
        assert budgets[name]["spec"]["minAvailable"] >= 1
    hpa = objects(docs, "HorizontalPodAutoscaler")["composer"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "composer"}
    assert 1 < hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    assert "replicas" not in deployments["composer"]["spec"], "the autoscaler owns the composer's replica count"
    for name in BACKENDS:
        assert deployments[name]["spec"]["replicas"] >= 2
    for doc in workloads(docs):
        for container in all_containers(doc):
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= container["resources"][bound].keys(), (doc["metadata"]["name"], bound)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_are_pinned_and_pods_run_as_non_root(rendered, overlay):
    for doc in workloads(rendered[overlay]):
        spec = pod_spec(doc)
        assert spec["securityContext"]["runAsNonRoot"] is True, doc["metadata"]["name"]
        for container in all_containers(doc):
            image = container["image"]
            name, _, tag = image.rpartition(":")
            assert name and tag and "/" not in tag and tag != "latest", f"{image} must name a version"
            assert container["securityContext"]["allowPrivilegeEscalation"] is False


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_hold_the_database_url_and_api_keys(rendered, overlay):
    docs = rendered[overlay]
    secrets = objects(docs, "Secret")
    composer = pod_spec(objects(docs, "Deployment")["composer"])["containers"][0]
    database = env_of(composer)["TUNEREEL_DATABASE_URL"]
    assert "value" not in database
    reference = database["valueFrom"]["secretKeyRef"]
    assert reference["key"] == "url" and reference["name"].startswith("tunereel-database")
    referenced = {
        ref["name"]
        for doc in workloads(docs)
        for container in all_containers(doc)
        for item in container.get("env", [])
        if (ref := item.get("valueFrom", {}).get("secretKeyRef")) and not ref.get("optional")
    }
    if overlay == "cpu-tiny":  # everything generated: the overlay runs as is
        assert referenced <= secrets.keys()
        url = secrets[reference["name"]]["data"]["url"]
        import base64

        assert base64.b64decode(url).decode().startswith("postgresql+psycopg://")
        assert "postgres" in objects(docs, "StatefulSet")
    else:  # created by the operator before applying (deploy/README.md), never committed
        assert not secrets
        assert referenced == {"tunereel-api-keys", "tunereel-service-key", "tunereel-database"}
        readme = (DEPLOY / "README.md").read_text()
        assert all(name in readme for name in referenced)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_envoy_runs_the_validated_config_and_the_ingress_routes(rendered, overlay, tmp_path):
    docs = rendered[overlay]
    config_maps = objects(docs, "ConfigMap")
    (name,) = [name for name in config_maps if name.startswith("envoy-config")]
    text = config_maps[name]["data"]["envoy.yaml"]
    assert text == (DEPLOY / "envoy" / "envoy.yaml").read_text()
    envoy = pod_spec(objects(docs, "Deployment")["envoy"])
    assert {"name": "config", "configMap": {"name": name}} in envoy["volumes"]
    listen = yaml.safe_load(text)["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"]
    assert {"name": "grpc-web", "containerPort": listen} in envoy["containers"][0]["ports"]
    clusters = yaml.safe_load(text)["static_resources"]["clusters"]
    address = clusters[0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    composer = objects(docs, "Service")[address["address"]]
    assert composer["spec"]["ports"][0]["port"] == address["port_value"] and composer["spec"]["clusterIP"] == "None"
    assert re.fullmatch(r"envoyproxy/envoy:v\d+\.\d+\.\d+", envoy["containers"][0]["image"])
    if overlay == "gpu":  # the same text, as Envoy reads it from the volume
        path = tmp_path / "envoy.yaml"
        path.write_text(text)
        result = run([tool("envoy"), "--mode", "validate", "-c", str(path)])
        assert result.returncode == 0, result.stdout + result.stderr

    services = objects(docs, "Service")
    routes = {
        path["path"]: path["backend"]["service"]
        for rule in objects(docs, "Ingress")["tunereel"]["spec"]["rules"]
        for path in rule["http"]["paths"]
    }
    assert routes["/"]["name"] == "gateway"
    assert routes["/tunereel.v1.JobService"]["name"] == "envoy"
    for backend in routes.values():
        ports = [port["name"] for port in services[backend["name"]]["spec"]["ports"]]
        assert backend["port"]["name"] in ports


def test_gpu_presets_and_their_downloads_come_from_the_preset_table(rendered):
    """One table: the gpu overlay's `--preset`s, the Dockerfile's defaults and the Job's `hf download` lines all name
    catalog.GPU_PRESETS, the Job's lines are the table's commands, and no hub id is written anywhere else in deploy/."""
    from tunereel import catalog

    docs = rendered["gpu"]
    deployments = objects(docs, "Deployment")
    for kind, name in catalog.GPU_PRESETS.items():
        assert args_of(pod_spec(deployments[kind])["containers"][0])["--preset"] == name
        cmd = re.search(rf"FROM gpu-runtime AS {kind}\n.*?^CMD (\[.*?\])$", (DEPLOY / "docker" / "Dockerfile").read_text(),
                        re.DOTALL | re.MULTILINE)  # fmt: skip
        assert args_of({"args": json.loads(cmd.group(1))})["--preset"] == name, f"Dockerfile {kind} default"
    script = pod_spec(objects(docs, "Job")["load-weights"])["containers"][0]["command"][-1]
    downloads = [line for line in script.splitlines() if line.startswith("hf download")]
    assert downloads == [
        command for k, n in catalog.GPU_PRESETS.items() for command in catalog.download_commands(catalog.preset_of(k, n))
    ]
    assert any("LTX-Video-0.9.5" in line for line in downloads)  # the single-file preset's configs and T5 come too
    source = (DEPLOY / "k8s" / "overlays" / "gpu" / "load-weights.yaml").read_text()
    assert catalog.generated_job(source) == source, "run `python -m tunereel.catalog --write`"
    hub_ids = {p.source for _, p in catalog.all_presets() if not catalog.is_local(p)}
    for path in DEPLOY.rglob("*"):
        if path.is_file() and path.suffix in (".yaml", ".md", "") and path.name != "load-weights.yaml":
            text = path.read_text(errors="replace")
            assert not [hub_id for hub_id in hub_ids if hub_id in text], f"{path}: a hub id outside the table"


def test_the_job_fetches_a_pinned_gpu_preset_at_its_commit_and_marks_ready_last(monkeypatch):
    """The Job runs its downloads under `sh -e` and writes the ready marker after the last one (a failed download, e.g.
    of a commit the Hub does not have, leaves the deployments waiting); a preset pinned in the table is fetched at
    exactly its commit, one that is not pinned at its main branch."""
    from tests.fake_hub import FAKE_PIN, pinned
    from tunereel import catalog
    from tunereel.presets import MUSIC_PRESETS

    path = DEPLOY / "k8s" / "overlays" / "gpu" / "load-weights.yaml"
    job_doc = next(doc for doc in yaml.safe_load_all(path.read_text()) if doc and doc["kind"] == "Job")
    container = pod_spec(job_doc)["containers"][0]
    assert container["command"][:2] == ["sh", "-ec"]
    script = [line for line in container["command"][-1].splitlines() if line.strip() and not line.startswith("#")]
    assert script[-1].startswith("touch ") and all(line.startswith("hf download ") for line in script[:-1])

    name = catalog.GPU_PRESETS["music"]
    repo = MUSIC_PRESETS[name].source
    unpinned = catalog.download_command(replace(MUSIC_PRESETS[name], revision=None))
    assert unpinned.startswith(f"hf download {repo} --include ")
    monkeypatch.setitem(MUSIC_PRESETS, name, pinned(name))
    job = catalog.generated_job(path.read_text())
    lines = [line.strip() for line in job.splitlines() if line.strip().startswith(f"hf download {repo} ")]
    assert lines == [unpinned.replace(f"hf download {repo} ", f"hf download {repo} --revision {FAKE_PIN} ", 1)]


# --- issue 13: network policies, no API tokens in pods, no committed secrets, Envoy's limits ----------------------------

def _selects(policy: dict, labels: dict) -> bool:
    wanted = policy["spec"]["podSelector"].get("matchLabels", {})
    return all(labels.get(key) == value for key, value in wanted.items())


def _peers(rules: list[dict]) -> set[str]:
    return {peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name", "ipBlock" if "ipBlock" in peer else "?")
            for rule in rules for peer in rule.get("from", rule.get("to", []))}  # fmt: skip


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_let_each_pod_talk_only_to_what_it_needs(rendered, overlay):
    docs = rendered[overlay]
    policies = objects(docs, "NetworkPolicy")
    deny = policies["default-deny"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"} and "ingress" not in deny
    for workload in workloads(docs):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert _selects(policies["default-deny"], labels)
    for backend in ("music", "video"):
        policy = policies[backend]["spec"]
        assert _peers(policy["ingress"]) == {"composer"} and policy["egress"] == []
    assert _peers(policies["postgres"]["spec"]["ingress"]) == {"composer"}
    assert _peers(policies["composer"]["spec"]["ingress"]) == {"gateway", "envoy"}
    assert _peers(policies["composer"]["spec"]["egress"]) == {"music", "video", "postgres", "ipBlock"}
    for name in ("gateway", "envoy"):
        assert _peers(policies[name]["spec"]["egress"]) == {"composer"}
    # The composer's way out (webhooks) excludes the cluster, the node and the metadata service.
    (block,) = [peer["ipBlock"] for rule in policies["composer"]["spec"]["egress"] for peer in rule["to"] if "ipBlock" in peer]
    assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "127.0.0.0/8"} <= set(block["except"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_pod_mounts_a_service_account_token(rendered, overlay):
    for workload in workloads(rendered[overlay]):
        assert pod_spec(workload).get("automountServiceAccountToken") is False, workload["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_tenant_keys_never_reach_music_or_video(rendered, overlay):
    """Music and video take only the service key; the composer presents it; tenants' keys stay at the front."""
    deployments = objects(rendered[overlay], "Deployment")
    composer = env_of(pod_spec(deployments["composer"])["containers"][0])
    service_key = composer["TUNEREEL_SERVICE_KEY"]["valueFrom"]["secretKeyRef"]
    assert service_key["name"].startswith("tunereel-service-key") and service_key["key"] == "key"
    assert composer["TUNEREEL_API_KEYS"]["valueFrom"]["secretKeyRef"]["name"] != service_key["name"]
    for name in ("music", "video"):
        env = env_of(pod_spec(deployments[name])["containers"][0])
        assert "TUNEREEL_API_KEYS" not in env, f"{name} would accept tenants' keys"
        assert env["TUNEREEL_SERVICE_KEYS"]["valueFrom"]["secretKeyRef"] == service_key


def test_the_cpu_tiny_ingress_has_a_host_and_tls(rendered):
    ingress = objects(rendered["cpu-tiny"], "Ingress")["tunereel"]["spec"]
    hosts = [rule.get("host") for rule in ingress["rules"]]
    assert hosts and all(hosts), "a rule without a host answers every name"
    (tls,) = ingress["tls"]
    assert set(hosts) <= set(tls["hosts"]) and tls["secretName"]
    readme = (DEPLOY / "README.md").read_text()
    assert all(host in readme for host in hosts) and tls["secretName"] in readme  # how to set them is documented


def test_the_cpu_tiny_overlay_commits_no_secret_values():
    text = (DEPLOY / "k8s" / "overlays" / "cpu-tiny" / "kustomization.yaml").read_text()
    assert "literals" not in text and "password=" not in text and "keys=" not in text
    ignored = (DEPLOY.parent / ".gitignore").read_text()
    assert "deploy/k8s/overlays/cpu-tiny/*.env" in ignored


def test_envoy_limits_bodies_streams_and_load_and_trusts_only_its_own_view_of_the_client():
    config = yaml.safe_load((DEPLOY / "envoy" / "envoy.yaml").read_text())
    listener = config["static_resources"]["listeners"][0]
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    assert manager["use_remote_address"] is True
    assert manager["http2_protocol_options"]["max_concurrent_streams"] <= 100
    assert listener["per_connection_buffer_limit_bytes"] <= 65536
    (buffer,) = [f for f in manager["http_filters"] if f["name"] == "envoy.filters.http.buffer"]
    assert buffer["typed_config"]["max_request_bytes"] == 1024 * 1024
    assert manager["http_filters"][0] is buffer  # before anything reads the body
    origins = manager["route_config"]["virtual_hosts"][0]["typed_per_filter_config"]["envoy.filters.http.cors"]
    assert all("exact" in match for match in origins["allow_origin_string_match"])  # no wildcard
    monitors = {m["name"] for m in config["overload_manager"]["resource_monitors"]}
    assert {"envoy.resource_monitors.fixed_heap", "envoy.resource_monitors.global_downstream_max_connections"} <= monitors
    assert config["static_resources"]["clusters"][0]["circuit_breakers"]["thresholds"]
