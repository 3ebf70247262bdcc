"""``docker-compose.yml``, checked the way CI can check it without a Docker engine.

Debian's ``docker-compose`` 1.29 parses, interpolates and validates the file against the Compose
schema (``docker-compose config``) without talking to an engine; ``scripts/system-deps``
installs it. Its resolved output is then held to the rules the file's header states: pinned
images, a health check and a restart policy on every long-running service, secrets only from the
environment, a scalable ``worker``, the README's service list, mounted files that exist, and
commands the ``funnel`` CLI accepts. What needs an engine (pulling, building, starting, the
health checks passing) is not covered here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from funnel.cli import main

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
README_SECTION = "## Production-like: docker compose"

#: Services that run to completion; every other service is long-running.
ONE_SHOT = {"migrate", "simulator"}
#: Environment variable names that hold secrets.
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|WRITE_KEY|API_KEY|CREDENTIAL")
#: A reference to the environment whose default, if any, is empty or an error message.
ENV_REFERENCE = re.compile(r"\$\{[A-Z][A-Z0-9_]*(?::?\?[^}]*|:?-)?\}")
#: The password part of a URL with credentials (``scheme://user:password@host``).
URL_PASSWORD = re.compile(r"://[^/@\s]*?:(\$\{[^}]*\}|[^@/\s]+)@")


def _compose(*args: str, env_file: Path = ENV_EXAMPLE) -> subprocess.CompletedProcess[str]:
    """Run ``docker-compose`` on the repository's file with only ``env_file`` for variables."""
    # Variables of the calling shell would override the env file: pass none of them.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose is missing: sudo ./scripts/system-deps --install"
    return subprocess.run(
        [exe, "-f", str(COMPOSE), "--env-file", str(env_file), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _yaml(text: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


@cache
def _config() -> dict[str, Any]:
    """The resolved configuration (``docker-compose config``), all profiles included."""
    proc = _compose("--profile", "simulator", "config")
    assert proc.returncode == 0, proc.stderr
    return _yaml(proc.stdout)


def _services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = _config()["services"]
    return services


def _raw_services() -> dict[str, dict[str, Any]]:
    """The services as written (anchors merged, ``${...}`` references not interpolated)."""
    # not `config --no-interpolate`: 1.29 then rejects "${PORT:-8000}:8000" as a port
    services: dict[str, dict[str, Any]] = _yaml(COMPOSE.read_text())["services"]
    return services


def _project_version() -> str:
    version: str = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    return version


def _readme_section() -> str:
    text = (ROOT / "README.md").read_text()
    assert README_SECTION in text, f"README.md has no {README_SECTION!r} section"
    section = text.split(README_SECTION, 1)[1]
    return re.split(r"^## ", section, maxsplit=1, flags=re.MULTILINE)[0]


def _split_image(image: str) -> tuple[str, str | None, str | None]:
    """``name[:tag][@digest]`` -> (name, tag, digest); a registry port is not a tag."""
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = last.rsplit(":", 1)[1] if ":" in last else None
    if tag is not None:
        name = name[: -len(tag) - 1]
    return name, tag, digest or None


@pytest.mark.parametrize("profile", [(), ("--profile", "simulator")], ids=["default", "simulator"])
def test_the_file_is_valid_for_docker_compose(profile: tuple[str, ...]) -> None:
    proc = _compose(*profile, "config", "--quiet")
    assert proc.returncode == 0, proc.stderr
    services = set(_compose(*profile, "config", "--services").stdout.split())
    assert {"kafka", "clickhouse", "migrate", "collector", "worker", "sink"} <= services
    assert {"prometheus", "grafana"} <= services
    if profile:
        assert "simulator" in services
    assert _services()["simulator"]["profiles"] == ["simulator"]


def test_required_secrets_have_no_defaults(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("# nothing set\n")
    proc = _compose("config", "--quiet", env_file=empty)
    assert proc.returncode != 0
    assert "set CLICKHOUSE_PASSWORD in .env" in proc.stderr


def test_every_image_is_pinned_to_a_version() -> None:
    version = _project_version()
    for name, service in _services().items():
        image = service.get("image")
        assert image, f"{name}: no image (a built service names its image and tag)"
        repo, tag, digest = _split_image(image)
        assert digest or (tag and tag != "latest"), f"{name}: {image} is not pinned"
        if "build" in service:
            assert (repo, tag) == ("funnel", version), f"{name}: built as {image}"
    dockerfile = (ROOT / "Dockerfile").read_text()
    bases = re.findall(r"^FROM\s+(\S+)", dockerfile, flags=re.MULTILINE)
    assert bases
    for base in bases:
        _, tag, digest = _split_image(base)
        assert digest or (tag and tag != "latest"), f"Dockerfile: FROM {base} is not pinned"


def test_long_running_services_have_health_checks_and_restart_policies() -> None:
    services = _services()
    assert set(services) >= ONE_SHOT
    for name, service in services.items():
        if name in ONE_SHOT:
            assert service.get("restart", "no") == "no", f"{name} runs once"
            assert "healthcheck" not in service, name
            continue
        check = service.get("healthcheck")
        assert check, f"{name}: no health check"
        assert not check.get("disable"), name
        assert check["test"][0] in {"CMD", "CMD-SHELL"}, name
        assert service.get("restart") in {"always", "unless-stopped"}, f"{name}: restart policy"


def test_dependencies_wait_for_health_or_completion() -> None:
    services = _services()
    for name, service in services.items():
        for dependency, spec in service.get("depends_on", {}).items():
            want = "service_completed_successfully" if dependency in ONE_SHOT else "service_healthy"
            assert spec.get("condition") == want, f"{name} -> {dependency}: {spec}"
    assert "migrate" in services["sink"]["depends_on"]
    assert "clickhouse" in services["migrate"]["depends_on"]


def test_no_literal_secrets_in_the_file() -> None:
    for name, service in _raw_services().items():
        for key, value in (service.get("environment") or {}).items():
            value = str(value)
            if SECRET_NAME.search(key):
                assert ENV_REFERENCE.fullmatch(value), f"{name}.{key} = {value!r}"
            for password in URL_PASSWORD.findall(value):
                assert ENV_REFERENCE.fullmatch(password), f"{name}.{key}: password in a URL"
    # the resolved config takes the secrets from the env file
    sink_store = _services()["sink"]["environment"]["FUNNEL_STORE"]
    assert ":change-me@clickhouse:9000/" in sink_store


def test_the_env_example_holds_placeholders_and_env_files_stay_private() -> None:
    values = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    secrets = {key: value for key, value in values.items() if SECRET_NAME.search(key)}
    assert {"CLICKHOUSE_PASSWORD", "GRAFANA_ADMIN_PASSWORD", "FUNNEL_WRITE_KEYS"} <= set(secrets)
    for key, value in secrets.items():
        assert value.startswith("change-me"), f".env.example: {key} is not a placeholder"
    # every variable the file reads is documented in .env.example (FUNNEL_TOPIC_PREFIX has a
    # default that matches the CLI's)
    raw = COMPOSE.read_text()
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", raw)) - {"FUNNEL_TOPIC_PREFIX"}
    assert used <= set(values), used - set(values)
    for ignore_file in (".gitignore", ".dockerignore"):
        lines = (ROOT / ignore_file).read_text().splitlines()
        assert ".env" in lines, f"{ignore_file} must exclude .env"


def test_workers_scale() -> None:
    worker = _services()["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker, "a fixed host port would stop --scale worker=N"
    assert "6066" in [str(port) for port in worker.get("expose", [])]
    assert "volumes" not in worker, "replicas must not share a data directory"


def test_the_readme_names_exactly_the_services_of_the_file() -> None:
    section = _readme_section()
    named = set(re.findall(r"^\| `([a-z][a-z0-9_-]*)` \|", section, flags=re.MULTILINE))
    assert named == set(_services()), (named, set(_services()))
    for command in (
        "cp .env.example .env",
        "docker compose up -d",
        "--scale worker=",
        "--profile simulator",
    ):
        assert command in section, command


def test_mounted_paths_exist_in_the_repository() -> None:
    for name, service in _services().items():
        for volume in service.get("volumes", []):
            if isinstance(volume, dict):
                source = volume.get("source", "") if volume.get("type") == "bind" else ""
            else:
                source = volume.split(":", 1)[0] if volume.startswith(("/", ".")) else ""
            if not source:
                continue  # a named volume
            path = Path(source)
            assert path.is_relative_to(ROOT), f"{name}: {source} is outside the repository"
            assert path.exists(), f"{name}: {source} does not exist"
        build = service.get("build")
        if build:
            context = Path(build["context"] if isinstance(build, dict) else build)
            assert (context / "Dockerfile").is_file(), name


def test_funnel_commands_are_accepted_by_the_cli() -> None:
    runner = CliRunner()
    for name, service in _services().items():
        if "build" not in service:
            continue
        command = [str(arg) for arg in service["command"]]
        # --help after the arguments: unknown options and bad values still fail the parse
        result = runner.invoke(main, [*command, "--help"])
        assert result.exit_code == 0, f"{name}: funnel {' '.join(command)}\n{result.output}"


def test_health_checks_probe_the_ports_the_commands_open() -> None:
    services = _services()
    expected = {
        "collector": ("--port", "/health"),
        "worker": ("--web-port", "/metrics"),
        "sink": ("--metrics-port", "/metrics"),
    }
    for name, (option, path) in expected.items():
        command = [str(arg) for arg in services[name]["command"]]
        port = command[command.index(option) + 1]
        probe = " ".join(services[name]["healthcheck"]["test"])
        assert f"127.0.0.1:{port}{path}" in probe, f"{name}: {probe}"


def test_funnel_environment_variables_exist_in_the_code() -> None:
    sources = "\n".join(
        path.read_text()
        for package in ("funnel", "producers", "stream_processors", "storage")
        for path in (ROOT / package).rglob("*.py")
    )
    for name, service in _services().items():
        for key in service.get("environment") or {}:
            if key.startswith("FUNNEL_"):
                assert f'"{key}"' in sources, f"{name}: nothing reads {key}"


def test_each_service_reaches_clickhouse_with_the_least_it_needs() -> None:
    """Issue 19: the administrator for migrations, a writer (SELECT, INSERT) for the sink, a
    read-only account for Grafana; the accounts are made by the mounted init script."""
    services = _services()
    user_of = {
        name: re.match(r"clickhouse://([^:]+):", services[name]["environment"]["FUNNEL_STORE"])
        for name in ("migrate", "sink")
    }
    assert user_of["migrate"]
    assert user_of["migrate"].group(1) == "funnel"
    assert user_of["sink"]
    assert user_of["sink"].group(1) == "funnel_writer"
    assert services["grafana"]["environment"]["CLICKHOUSE_USER"] == "funnel_reader"
    mounts = [str(v) for v in _raw_services()["clickhouse"]["volumes"]]
    assert "./storage/clickhouse/initdb:/docker-entrypoint-initdb.d:ro" in mounts
    script = (ROOT / "storage/clickhouse/initdb/10-users.sh").read_text()
    grants = re.findall(r"^GRANT (.+) ON (\S+) TO \{(\w+):Identifier\};$", script, re.M)
    assert grants == [("SELECT, INSERT", "funnel.*", "writer"), ("SELECT", "funnel.*", "reader")]
    assert "readonly = 2" in script
    assert "change-me" not in script
