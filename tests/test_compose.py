"""docker-compose.yml and the Dockerfile: validated with Debian's docker-compose (``config -q`` needs no engine),
then the resolved configuration is checked service by service. ``make test`` installs docker-compose when it is
missing; without it (and not root) the test that runs it is skipped."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import ROOT

COMPOSE = ROOT / "docker-compose.yml"
FOVEAL_SERVICES = ("api", "worker", "worker-gpu")
#: Variables the stack must set although nothing in this repository reads them directly.
STACK_VARIABLES = {"FOVEAL_QUEUE", "FOVEAL_REDIS_URL", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"}


def _docker_compose(*args: str) -> subprocess.CompletedProcess:
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.skip("docker-compose is not installed (make test installs it from Debian when run as root)")
    return subprocess.run([tool, "-f", str(COMPOSE), *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


def test_docker_compose_accepts_the_file():
    quiet = _docker_compose("config", "-q")
    assert quiet.returncode == 0, quiet.stderr
    resolved = yaml.safe_load(_docker_compose("config").stdout)
    # with every profile's services present in the resolved file (profiles filter `up`, not `config`)
    assert set(resolved["services"]) == {"api", "worker", "worker-gpu", "redis", "elasticsearch"}


@pytest.fixture(scope="module")
def stack() -> dict:
    data = yaml.safe_load(COMPOSE.read_text())
    return data["services"] | {"__volumes__": data.get("volumes", {})}


def test_services_images_are_pinned(stack):
    assert re.fullmatch(r"redis:\d+\.\d+\.\d+(-alpine)?", stack["redis"]["image"])
    es_image = stack["elasticsearch"]["image"]
    assert re.fullmatch(r"docker\.elastic\.co/elasticsearch/elasticsearch:\d+\.\d+\.\d+", es_image)
    client = next(line for line in (ROOT / "pyproject.toml").read_text().splitlines() if '"elasticsearch==' in line)
    client_version = re.search(r"==(\d+)\.(\d+)", client).groups()
    assert es_image.rsplit(":", 1)[1].split(".")[:2] == list(client_version)  # server minor = client minor
    for name in FOVEAL_SERVICES:
        assert stack[name]["build"]["dockerfile"] == "Dockerfile"
        assert re.fullmatch(r"foveal:\d+\.\d+\.\d+(-gpu)?", stack[name]["image"])


def test_healthchecks_and_startup_order(stack):
    assert "redis-cli" in stack["redis"]["healthcheck"]["test"] and "ping" in stack["redis"]["healthcheck"]["test"]
    assert "_cluster/health" in " ".join(stack["elasticsearch"]["healthcheck"]["test"])
    assert "/readyz" in " ".join(stack["api"]["healthcheck"]["test"])
    for name in ("worker", "worker-gpu"):  # a real Celery ping of this container's own node
        kind, command = stack[name]["healthcheck"]["test"]
        assert kind == "CMD-SHELL" and "celery -A foveal.service.celery_app inspect ping" in command, name
        assert "-d celery@$$HOSTNAME" in command and command.endswith("|| exit 1"), name
    for name in FOVEAL_SERVICES:
        depends = stack[name]["depends_on"]
        assert depends == {"redis": {"condition": "service_healthy"},
                           "elasticsearch": {"condition": "service_healthy"}}, name


def test_elasticsearch_is_single_node_with_heap_and_volume(stack):
    es = stack["elasticsearch"]
    env = es["environment"]
    assert env["discovery.type"] == "single-node" and env["xpack.security.enabled"] == "false"
    assert re.search(r"-Xms(\d+[mg]) -Xmx\1", env["ES_JAVA_OPTS"])  # fixed heap
    assert "ports" not in es  # private network only, since security is off
    assert any(v.endswith(":/usr/share/elasticsearch/data") for v in es["volumes"])
    assert any(v.endswith(":/data") for v in stack["redis"]["volumes"])
    assert {"es-data", "redis-data", "foveal-home"} <= set(stack["__volumes__"])


def test_gpu_profile_reserves_an_nvidia_device(stack):
    gpu = stack["worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and devices[0]["capabilities"] == ["gpu"]
    assert "cu" in gpu["build"]["args"]["TORCH_INDEX_URL"] and gpu["build"]["args"]["FOVEAL_EXTRAS"] == "gpu"
    assert all("profiles" not in stack[name] for name in ("api", "worker", "redis", "elasticsearch"))
    assert stack["worker"]["command"][:2] == ["foveal", "worker"] and "--concurrency" in stack["worker"]["command"]
    assert stack["api"]["command"] == ["foveal", "serve", "--host", "0.0.0.0", "--port", "8000"]


def test_the_api_is_published_on_loopback_with_keys_from_a_mounted_file(stack):
    """The stack publishes the API on this host only and reads its keys from a file the operator writes; the
    example shipped is all comments (no key), and its sample lines are entries the server accepts."""
    api = stack["api"]
    assert api["ports"] == ["127.0.0.1:8000:8000"]
    from foveal.api.auth import parse_keys

    keys_file = api["environment"]["FOVEAL_API_KEYS_FILE"]
    folder = keys_file.rsplit("/", 1)[0]
    mounts = [v for v in api["volumes"] if v.split(":")[1] == folder]
    assert len(mounts) == 1 and mounts[0].endswith(":ro"), api["volumes"]
    host_folder = mounts[0].split(":")[0]
    assert host_folder.startswith("./")
    assert "/" + host_folder[2:] + "/" in (ROOT / ".gitignore").read_text().split()  # never committed
    example = ROOT / "deploy" / "api-keys.example"
    text = example.read_text()
    assert parse_keys(text, str(example)) == []  # no key in the repository
    samples = re.findall(r"^#\s+(\S+\s+\S+\s+sha256:[0-9a-f]{64}.*)$", text, re.M)
    assert len(parse_keys("\n".join(samples), "samples")) == 3
    assert "refuses to start" in text.lower() and "refuses to start" in COMPOSE.read_text()
    for name in ("worker", "worker-gpu"):  # the workers serve no HTTP: no keys, no ports
        assert "FOVEAL_API_KEYS_FILE" not in stack[name]["environment"] and "ports" not in stack[name]


def _variables_read_by_the_code() -> set[str]:
    names = set()
    for path in (ROOT / "foveal").rglob("*.py"):
        text = path.read_text()
        names.update(re.findall(r"(?:environ(?:\.get)?\(?\[?|getenv\()\s*[\"']((?:FOVEAL|HF|TRANSFORMERS)_[A-Z_]+)",
                                text))
    return names


def test_the_stack_sets_what_the_code_reads_and_nothing_else(stack):
    read = _variables_read_by_the_code()
    assert {"FOVEAL_HOME", "FOVEAL_ES_URL", "FOVEAL_DEFAULT_BACKENDS", "FOVEAL_QUEUE"} <= read  # the scan works
    needed = STACK_VARIABLES | {"FOVEAL_HOME", "FOVEAL_ES_URL", "FOVEAL_DEFAULT_BACKENDS", "FOVEAL_REDIS_PREFIX",
                                "FOVEAL_CELERY_QUEUE"}
    assert needed <= read | {"HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"}
    shared = None
    for name in FOVEAL_SERVICES:
        env = stack[name]["environment"]
        assert not needed - set(env), f"{name} does not set {sorted(needed - set(env))}"
        unknown = {key for key in env if key.startswith("FOVEAL_")} - read
        assert not unknown, f"{name} sets variables no code reads: {sorted(unknown)}"
        assert not [key for key in env if key.startswith("FOVEAL_DEBUG_")], "test hooks must not be set in the stack"
        assert env["FOVEAL_ES_URL"] == "http://elasticsearch:9200"
        assert env["FOVEAL_REDIS_URL"].startswith("redis://redis:6379")
        assert env["FOVEAL_QUEUE"] == "celery"
        # the API enqueues where the workers listen, and both read job records under the same prefix
        queue_keys = {k: env[k] for k in ("FOVEAL_REDIS_URL", "FOVEAL_REDIS_PREFIX", "FOVEAL_CELERY_QUEUE")}
        assert shared is None or queue_keys == shared
        shared = queue_keys
        home = env["FOVEAL_HOME"]
        assert any(v == f"foveal-home:{home}" for v in stack[name]["volumes"])  # shared by api and workers


def test_the_worker_health_check_finds_the_app_and_the_node_name():
    """The health check's ``-A`` module has a Celery ``app`` and ``foveal worker`` names its node ``celery@%h``."""
    import inspect

    from celery import Celery

    from foveal.service import celery_app

    assert isinstance(celery_app.app, Celery) and celery_app.app.main == "foveal"
    assert "--hostname=celery@%h" in inspect.getsource(celery_app.run_worker)


def test_dockerfile():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11[\w.\-]*slim", text, re.M)
    assert "download.pytorch.org/whl/cpu" in text and "ARG TORCH_INDEX_URL" in text
    assert re.search(r"^USER (?!root)\w+", text, re.M)  # not root
    assert "HF_HUB_OFFLINE=1" in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "tests", ".foveal"} <= set(ignored)
    for copied in re.findall(r"^COPY (\S+)", text, re.M):
        assert (ROOT / copied).exists(), copied


def test_gpu_image_installs_faiss_gpu_instead_of_faiss_cpu():
    """Both builds ship the ``faiss`` module: the GPU image's list has faiss-gpu and no faiss-cpu, and foveal is
    then installed with --no-deps so pip does not bring faiss-cpu back."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("requirements", ROOT / "deploy" / "requirements.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    gpu = module.requirements("faiss-gpu==1.15.1", ["gpu"])
    assert "faiss-gpu==1.15.1" in gpu and not any(r.startswith("faiss-cpu") for r in gpu) and "triton==3.7.1" in gpu
    assert any(r.startswith("faiss-cpu") for r in module.requirements())
    text = (ROOT / "Dockerfile").read_text()
    assert "ARG FAISS_PACKAGE=faiss-cpu" in text and "pip install --no-deps ." in text
    assert '--faiss "${FAISS_PACKAGE}"' in text
    compose = (ROOT / "docker-compose.yml").read_text()
    assert "FAISS_PACKAGE: faiss-gpu==1.15.1" in compose
