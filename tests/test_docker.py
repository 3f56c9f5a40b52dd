"""The Docker files: no secret on a command line, no default password, non-root images; and
`docker compose config` where a Compose v2 client exists (no engine needed for it)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

DOCKER = Path(__file__).resolve().parents[1] / "docker"
COMPOSE = DOCKER / "compose.yaml"


def compose_file() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def command_lines(service: dict[str, Any]) -> list[str]:
    """Every argv word a service's container starts with."""
    words = []
    for key in ("entrypoint", "command"):
        value = service.get(key) or []
        words += [value] if isinstance(value, str) else value
    return words


def test_no_password_on_a_command_line_or_in_a_url() -> None:
    for name, service in compose_file()["services"].items():
        for word in command_lines(service):
            assert "PASSWORD" not in word.upper(), f"{name}: {word}"
            assert not re.search(r"://[^/@:]+:[^@]+@", word), f"{name}: a password in a URL: {word}"
        for key, value in (service.get("environment") or {}).items():
            assert key != "POSTGRES_PASSWORD" and not re.search(r"://[^/@:]+:[^@]+@", str(value)), f"{name}: {key}"


def test_no_default_password_and_dotenv_is_ignored() -> None:
    text = COMPOSE.read_text()
    assert "change-me" not in text and ":-" not in re.findall(r"\$\{POSTGRES_PASSWORD[^}]*\}", text)[0]
    assert "${POSTGRES_PASSWORD:?" in text  # compose refuses to start without it
    example = (DOCKER / ".env.example").read_text()
    assert re.search(r"^POSTGRES_PASSWORD=$", example, re.M)  # shipped empty
    ignored = subprocess.run(["git", "check-ignore", "-q", str(DOCKER / ".env")], cwd=DOCKER, check=False)
    assert ignored.returncode == 0, "docker/.env must be git-ignored"
    assert subprocess.run(["git", "check-ignore", "-q", str(DOCKER / ".env.example")], cwd=DOCKER, check=False).returncode == 1


def test_images_run_unprivileged() -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
    assert users and users[-1] not in ("root", "0")
    for name, service in compose_file()["services"].items():
        assert str(service.get("user", "")) not in ("root", "0"), name
        assert not service.get("privileged"), name


def _compose() -> list[str]:
    """The Compose v2 command line, or skip with the reason."""
    if shutil.which("docker") is None:
        pytest.skip("no docker client on this machine")
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        first = (probe.stderr or probe.stdout).strip().splitlines()[0]
        pytest.skip(f"docker client without the Compose v2 plugin ({first}); `docker compose config` not run")
    return ["docker", "compose", "-f", str(COMPOSE)]


def test_compose_config_resolves_and_refuses_to_start_without_a_password(tmp_path: Path) -> None:
    compose = _compose()
    env = {k: v for k, v in os.environ.items() if k != "POSTGRES_PASSWORD"}
    # --env-file: an empty one, so a developer's real docker/.env is neither read nor needed.
    empty = tmp_path / "empty.env"
    empty.write_text("")
    refused = subprocess.run([*compose, "--env-file", str(empty), "config"], capture_output=True, text=True, env=env, check=False)
    assert refused.returncode != 0 and "set POSTGRES_PASSWORD in docker/.env" in refused.stderr
    ok = subprocess.run(
        [*compose, "--env-file", str(empty), "config", "--format", "json"], capture_output=True, text=True,
        env=env | {"POSTGRES_PASSWORD": "s3cret-test"}, check=False,
    )
    assert ok.returncode == 0, ok.stderr
    resolved = yaml.safe_load(ok.stdout)
    assert {"postgres", "mlflow", "sweep"} <= set(resolved["services"])
    for name, service in resolved["services"].items():
        assert all("s3cret-test" not in w for w in command_lines(service)), name
        assert "s3cret-test" not in str(service.get("environment", {})), name
