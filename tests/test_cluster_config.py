"""ray-cluster.yaml: Ray's own validation, versions, dashboard binding, autoscaling, secrets.

Fast and offline: nothing here starts Ray or contacts AWS. Each check is also run against a
deliberately broken input, so a check that could never fail would show up as a failing test.
"""

from __future__ import annotations

import copy
import inspect
import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "ray-cluster.yaml"
PYPROJECT = ROOT / "pyproject.toml"
CLUSTER_DOC = ROOT / "docs" / "cluster.md"

IMAGE = re.compile(r"^rayproject/ray:(?P<ray>\d+\.\d+\.\d+)-py(?P<py>\d{2,3})-(?P<kind>cpu|gpu)$")


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def ray_validate(config: dict) -> dict:
    """What `ray up` does to a config before it talks to the cloud provider.

    commands._bootstrap_config runs prepare_config (merge the provider's defaults.yaml, docker
    checks, per-type min/max workers), then the provider's resource autodetection (an AWS
    call, skipped here: every node type declares its resources), then validate_config
    (ray-schema.json plus Ray's cross-field checks). Returns the prepared config.
    """
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


@pytest.fixture(scope="module")
def prepared(raw) -> dict:
    return ray_validate(raw)


# --- Ray's own validation ---------------------------------------------------------------


def test_ray_up_path_uses_these_validators():
    from ray.autoscaler._private import commands

    src = inspect.getsource(commands._bootstrap_config)
    assert "prepare_config(config)" in src and "validate_config(config)" in src


def test_config_passes_ray_validation(prepared):
    assert prepared["provider"]["type"] == "aws"
    assert prepared["head_node_type"] in prepared["available_node_types"]


@pytest.mark.parametrize(
    "break_it",
    [
        pytest.param(lambda c: c.update(not_a_ray_key=1), id="unknown top-level key"),
        pytest.param(lambda c: c.update(max_workers="8"), id="max_workers is a string"),
        pytest.param(lambda c: c["docker"].update(imagee="x"), id="unknown docker key"),
        pytest.param(lambda c: gpu_types(c)[0][1]["resources"].update(GPU=0.5), id="fractional node GPU"),
        pytest.param(lambda c: gpu_types(c)[0][1].pop("resources"), id="node type without resources"),
        pytest.param(lambda c: c.update(head_node_type="nope"), id="head type not defined"),
    ],
)
def test_ray_validation_rejects_broken_copies(raw, break_it):
    import jsonschema

    broken = copy.deepcopy(raw)
    break_it(broken)
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        ray_validate(broken)


# --- one Ray version everywhere ---------------------------------------------------------


def images(config: dict) -> dict[str, str]:
    """Every image the launcher may start, by where it is set."""
    out = {f"docker.{k}": v for k, v in config.get("docker", {}).items() if k in ("image", "head_image", "worker_image")}
    for name, node_type in config["available_node_types"].items():
        if "worker_image" in node_type.get("docker", {}):
            out[f"{name}.docker.worker_image"] = node_type["docker"]["worker_image"]
    return out


def pinned_ray_version() -> str:
    from packaging.requirements import Requirement

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    (req,) = [Requirement(d) for d in deps if Requirement(d).name == "ray"]
    (spec,) = req.specifier
    assert spec.operator == "==", f"pyproject.toml should pin ray exactly, has {req}"
    return spec.version


def image_versions(config: dict) -> dict[str, tuple[str, str, str]]:
    out = {}
    for where, image in images(config).items():
        m = IMAGE.match(image)
        assert m, f"{where}: {image!r} is not rayproject/ray:<ray version>-py<python>-cpu|gpu"
        out[where] = (m["ray"], m["py"], m["kind"])
    return out


def test_images_match_installed_ray_and_pyproject_pin(raw):
    import ray

    pin = pinned_ray_version()
    assert pin == ray.__version__, f"pyproject pins ray {pin}, the venv has {ray.__version__}"
    versions = image_versions(raw)
    assert versions, "no docker images in ray-cluster.yaml"
    assert {v[0] for v in versions.values()} == {pin}, versions
    assert len({v[1] for v in versions.values()}) == 1, f"mixed Python versions: {versions}"


def test_image_check_catches_mismatches(raw):
    stale = copy.deepcopy(raw)
    stale["docker"]["image"] = "rayproject/ray:2.9.3-py311-cpu"
    assert image_versions(stale)["docker.image"][0] != pinned_ray_version()
    for bad in ("rayproject/ray-ml:2.60.0-py311-gpu", "rayproject/ray:latest-gpu", "rayproject/ray:2.60.0"):
        broken = copy.deepcopy(raw)
        broken["docker"]["image"] = bad
        with pytest.raises(AssertionError):
            image_versions(broken)


def test_gpu_workers_get_the_gpu_image_and_the_rest_cpu(raw):
    versions = image_versions(raw)
    for name, node_type in raw["available_node_types"].items():
        where = f"{name}.docker.worker_image"
        if name == raw["head_node_type"]:
            where = "docker.head_image" if "docker.head_image" in versions else "docker.image"
        elif where not in versions:
            where = "docker.worker_image" if "docker.worker_image" in versions else "docker.image"
        wants = "gpu" if node_type["resources"].get("GPU", 0) > 0 else "cpu"
        assert versions[where][2] == wants, f"{name} runs {where} ({versions[where]}), wants -{wants}"


# --- dashboard: localhost only, reached through `ray dashboard` (SSH) ----------------------


def dashboard_problems(head_start_commands: list[str]) -> list[str]:
    problems = []
    text = " ".join(head_start_commands)
    if "0.0.0.0" in text:
        problems.append("binds 0.0.0.0")
    hosts = re.findall(r"--dashboard-host[= ](\S+)", text)
    starts = [c for c in head_start_commands if re.search(r"\bray start\b.*--head\b", c)]
    if not starts:
        problems.append("no `ray start --head`")
    for c in starts:
        if "--dashboard-host=127.0.0.1" not in shlex.split(c):
            problems.append(f"head start without --dashboard-host=127.0.0.1: {c}")
    problems += [f"dashboard host {h}" for h in hosts if h != "127.0.0.1"]
    return problems


def test_dashboard_bound_to_localhost_only(raw, prepared):
    assert "0.0.0.0" not in CLUSTER_YAML.read_text()
    # The merged config is what `ray up` runs; Ray's own default here binds 0.0.0.0.
    assert dashboard_problems(prepared["head_start_ray_commands"]) == []
    for key in ("setup_commands", "head_setup_commands", "worker_setup_commands", "worker_start_ray_commands"):
        assert "--dashboard-host" not in " ".join(prepared.get(key, [])), key


def test_dashboard_check_catches_rays_default():
    from ray.autoscaler._private.providers import _get_default_config

    default = _get_default_config({"type": "aws"})["head_start_ray_commands"]
    if "0.0.0.0" in " ".join(default):  # Ray 2.60's AWS default, used if the key were missing
        assert dashboard_problems(default), default
    assert dashboard_problems(["ray stop", "ray start --head --dashboard-host=0.0.0.0"])
    assert dashboard_problems(["ray start --head --dashboard-host 10.0.0.5 --port=6379"])
    assert dashboard_problems(["ray start --head --port=6379"])


# --- autoscaling -------------------------------------------------------------------------


def gpu_types(config: dict) -> list[tuple[str, dict]]:
    return [(n, t) for n, t in config["available_node_types"].items() if t.get("resources", {}).get("GPU", 0) > 0]


def autoscaling_problems(config: dict) -> list[str]:
    problems = []
    gpus = gpu_types(config)
    if not gpus:
        problems.append("no GPU worker type")
    for name, t in gpus:
        if name == config["head_node_type"]:
            problems.append(f"{name}: the head is a GPU type")
        if t.get("min_workers", 0) != 0:
            problems.append(f"{name}: min_workers {t.get('min_workers')} (idle GPUs cost money)")
        if not t.get("max_workers", 0) > 0:
            problems.append(f"{name}: max_workers {t.get('max_workers')} (can never scale up)")
        if t.get("max_workers", 0) > config["max_workers"]:
            problems.append(f"{name}: max_workers above the cluster's max_workers")
    cpus = [n for n, t in config["available_node_types"].items() if n != config["head_node_type"] and not t["resources"].get("GPU")]
    if not cpus:
        problems.append("no CPU worker type")
    return problems


def test_gpu_workers_autoscale_from_zero(raw, prepared):
    assert autoscaling_problems(raw) == []
    assert autoscaling_problems(prepared) == []


def test_autoscaling_check_catches_bad_gpu_types(raw):
    always_on = copy.deepcopy(raw)
    gpu_types(always_on)[0][1]["min_workers"] = 1
    never = copy.deepcopy(raw)
    gpu_types(never)[0][1]["max_workers"] = 0
    no_gpu = copy.deepcopy(raw)
    for _, t in gpu_types(no_gpu):
        t["resources"].pop("GPU")
    for broken in (always_on, never, no_gpu):
        assert autoscaling_problems(broken)


# --- token authentication ----------------------------------------------------------------


def test_token_auth_on_every_node(raw):
    from ray._private.authentication.authentication_token_setup import AUTH_MODE_ENV_VAR, _get_default_token_path

    assert AUTH_MODE_ENV_VAR == "RAY_AUTH_MODE"
    default_token = "~/" + _get_default_token_path().relative_to(Path.home()).as_posix()
    assert raw["file_mounts"].get(default_token) == default_token, "the local token must reach every node"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in raw[key] if "ray start" in c]
        assert starts, key
        assert all("RAY_AUTH_MODE=token ray start" in c for c in starts), (key, starts)


# --- no credentials, no machine-specific paths ---------------------------------------------


SECRET_PATTERNS = {
    "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "AWS secret key name": re.compile(r"aws_secret_access_key|aws_access_key_id|aws_session_token", re.I),
    "AWS account id": re.compile(r"(?<![\d.])\d{12}(?![\d.])"),
    "ARN with an account": re.compile(r"arn:aws[\w-]*:[\w-]+:[\w-]*:\d{12}:"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
}


def secret_problems(text: str, config: dict) -> list[str]:
    problems = [name for name, rx in SECRET_PATTERNS.items() if rx.search(text)]
    if "ssh_private_key" in config.get("auth", {}):
        problems.append("auth.ssh_private_key names a local key")
    for name, t in config["available_node_types"].items():
        if "KeyName" in t.get("node_config", {}):
            problems.append(f"{name}: KeyName")
    return problems


def test_no_credentials_in_cluster_yaml(raw):
    assert secret_problems(CLUSTER_YAML.read_text(), raw) == []


def test_credential_check_catches_secrets(raw):
    fake_key = "AKIA" + "ABCDEFGHIJKLMNOP"
    assert secret_problems(f"x: {fake_key}", raw)
    assert secret_problems("aws_secret_access_key: x", raw)
    assert secret_problems("IamInstanceProfile: {Arn: arn:aws:iam::" + "123456789012" + ":instance-profile/x}", raw)
    keyed = copy.deepcopy(raw)
    gpu_types(keyed)[0][1]["node_config"]["KeyName"] = "someones-key"
    assert secret_problems("", keyed)


def test_file_mounts_are_relative_or_home(raw):
    for remote, local in raw["file_mounts"].items():
        assert local.startswith("~/") or not Path(local).is_absolute(), f"{remote}: machine-specific path {local}"
        assert remote.startswith("~/"), f"{remote}: should live in the container user's home"


# --- the guide only uses flags this Ray has -------------------------------------------------


def ray_commands_in(doc: str) -> list[list[str]]:
    """`ray ...` commands: lines of ``` blocks (continuations joined) and inline `ray ...` spans."""
    blocks = re.findall(r"```[^\n]*\n(.*?)```", doc, re.S)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    prose = re.sub(r"```.*?```", "", doc, flags=re.S)
    lines += re.findall(r"`(ray [^`]+)`", prose.replace("\n", " "))
    out = []
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line.startswith("ray "):
            out.append(shlex.split(line))
    return out


def unknown_ray_flags(argv: list[str]) -> list[str]:
    import click
    from ray.scripts.scripts import cli

    cmd, rest = cli, argv[1:]
    while isinstance(cmd, click.Group) and rest and rest[0] in cmd.commands:
        cmd, rest = cmd.commands[rest[0]], rest[1:]
    if cmd is cli:
        return [f"unknown command: {' '.join(argv[:2])}"]
    if "--" in rest:
        rest = rest[: rest.index("--")]
    known = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
    return [a.split("=", 1)[0] for a in rest if a.startswith("-") and a.split("=", 1)[0] not in known]


def test_cluster_guide_uses_real_ray_cli_flags():
    commands = ray_commands_in(CLUSTER_DOC.read_text())
    names = {" ".join(c[:3]) if c[1:2] == ["job"] else " ".join(c[:2]) for c in commands}
    assert {"ray up", "ray dashboard", "ray job submit", "ray job logs", "ray down", "ray get-auth-token"} <= names, names
    for argv in commands:
        assert unknown_ray_flags(argv) == [], argv


def test_flag_check_catches_invented_flags():
    assert unknown_ray_flags(["ray", "job", "submit", "--gpus", "1", "--", "python", "-m", "x"]) == ["--gpus"]
    assert unknown_ray_flags(["ray", "launch", "x.yaml"])
    assert unknown_ray_flags(["ray", "job", "submit", "--working-dir", ".", "--", "python", "--bogus"]) == []
