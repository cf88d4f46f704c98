"""deploy/Dockerfile, checked without a Docker engine: what it copies exists and is not
excluded by .dockerignore, it installs from the lock with the Makefile's uv, runs as a non-root
user and serves the code location that workspace.yaml names."""

from __future__ import annotations

import fnmatch
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from em2q_resources.settings import PROJECT_ROOT
from tests.deploy.conftest import DEPLOY

DOCKERFILE = DEPLOY / "Dockerfile"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for word, args in self.instructions if word == keyword]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, continuation lines joined, comments dropped."""
    logical: list[str] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        word, _, args = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base=parts[0], name=name))
        elif not stages:
            assert word == "ARG", f"only ARG may precede FROM, found {word}"
            key, _, default = args.partition("=")
            global_args[key] = default
        else:
            stages[-1].instructions.append((word, args.strip()))
    return global_args, stages


def dockerignore_patterns() -> list[str]:
    lines = (PROJECT_ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(relative: str, patterns: list[str]) -> bool:
    """Whether .dockerignore drops the path or one of its parent folders."""
    parts = Path(relative).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        plain = pattern.removeprefix("**/")
        for candidate in candidates:
            if fnmatch.fnmatch(candidate, pattern) or fnmatch.fnmatch(Path(candidate).name, plain):
                return True
    return False


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def copy_sources(stage: Stage) -> list[str]:
    sources = []
    for args in stage.all("COPY"):
        words = [w for w in shlex.split(args) if not w.startswith("--")]
        assert "--from" not in args, "a COPY --from source is not in the build context"
        sources += words[:-1]
    return sources


def test_base_image_is_python_3_11_slim(dockerfile) -> None:
    global_args, stages = dockerfile
    base = stages[0].base
    if base.startswith("${"):
        base = global_args[base.strip("${}")]
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", base), base


def test_every_copied_path_exists_and_is_in_the_build_context(dockerfile) -> None:
    _, stages = dockerfile
    patterns = dockerignore_patterns()
    for stage in stages:
        for source in copy_sources(stage):
            assert (PROJECT_ROOT / source).exists(), f"COPY {source}: no such path in the repo"
            assert not ignored(source, patterns), f"COPY {source}: excluded by .dockerignore"


def test_dockerignore_check_sees_an_excluded_path() -> None:
    patterns = dockerignore_patterns()
    assert ignored(".venv/bin/python", patterns)
    assert ignored("em2q_msi/__pycache__/x.pyc", patterns)
    assert not ignored("em2q_msi/steps.py", patterns)


def test_every_package_of_the_project_is_copied(dockerfile) -> None:
    """All packages setuptools installs (em2q*, argo_bridge*), em2q_assets.step included."""
    _, stages = dockerfile
    copied = set(copy_sources(stages[0]))
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {
        path.parent.name
        for path in PROJECT_ROOT.glob("*/__init__.py")
        if any(fnmatch.fnmatch(path.parent.name, pattern) for pattern in include)
    }
    assert {"em2q", "em2q_msi", "em2q_resources", "em2q_assets", "argo_bridge"} <= packages
    assert packages <= copied, packages - copied
    # read at run time relative to the packages (editable install)
    assert {"thrift/em2q.thrift", "workspace.yaml"} <= copied


def test_dependencies_come_from_the_lock_with_the_makefiles_uv(dockerfile) -> None:
    global_args, stages = dockerfile
    runs = " ".join(stages[0].all("RUN"))
    assert "--constraint requirements.lock" in runs
    assert "uv pip install" in runs and "--no-deps -e ." in runs
    makefile = (PROJECT_ROOT / "Makefile").read_text(encoding="utf-8")
    make_uv = re.search(r"^UV_VERSION\s*:=\s*(\S+)", makefile, re.M).group(1)
    docker_uv = next(a for a in stages[0].all("ARG") if a.startswith("UV_VERSION="))
    assert docker_uv == f"UV_VERSION={make_uv}"


def test_every_dependency_install_compiles_bytecode(dockerfile) -> None:
    """Pods run as user 1000, who cannot write ``__pycache__`` into root's venv: without
    bytecode compiled at build time, every process would compile its imports from source."""
    _, stages = dockerfile
    for stage in stages:
        for run in stage.all("RUN"):
            for command in run.split("&&"):
                if "uv pip install" in command and "-e ." not in command:
                    assert "--compile-bytecode" in command, command
    assert "compileall" in " ".join(stages[0].all("RUN"))  # the project's own packages


def locked(path: Path) -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9_.\-\[\]]+)==(\S+)", path.read_text(encoding="utf-8"), re.M)
    return {re.sub(r"[-_.]+", "-", name.split("[")[0]).lower(): version for name, version in pins}


def test_every_runtime_pin_of_pyproject_is_the_locked_version() -> None:
    """With the lock as constraints, the image gets exactly the locked versions."""
    lock = locked(PROJECT_ROOT / "requirements.lock")
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    for requirement in pyproject["project"]["dependencies"]:
        name, version = re.match(r"([A-Za-z0-9_.\-\[\]]+)==(\S+)", requirement).groups()
        key = re.sub(r"[-_.]+", "-", name.split("[")[0]).lower()
        assert lock.get(key) == version, f"{requirement}: lock has {lock.get(key)}"


def test_notebook_lock_agrees_with_the_project_lock() -> None:
    lock = locked(PROJECT_ROOT / "requirements.lock")
    notebook = locked(DEPLOY / "requirements-notebook.lock")
    assert "jupyterhub" in notebook and "jupyterlab" in notebook
    clashes = {n: (v, lock[n]) for n, v in notebook.items() if n in lock and lock[n] != v}
    assert clashes == {}


def test_every_stage_ends_as_a_non_root_user(dockerfile) -> None:
    _, stages = dockerfile
    for stage in stages:
        users = stage.all("USER")
        assert users, f"stage {stage.name}: no USER (would run as root)"
        user = users[-1].split(":")[0]
        assert user not in {"root", "0"}
        # numeric, so that Kubernetes' runAsNonRoot can verify it
        assert user.isdigit()


def test_code_server_serves_the_workspace_code_location(dockerfile) -> None:
    _, stages = dockerfile
    runtime = next(stage for stage in stages if stage.name == "runtime")
    command = yaml.safe_load(runtime.all("CMD")[-1])  # the JSON form is YAML too
    assert command[:3] == ["dagster", "api", "grpc"]
    workspace = yaml.safe_load((PROJECT_ROOT / "workspace.yaml").read_text(encoding="utf-8"))
    module = workspace["load_from"][0]["python_module"]
    assert command[command.index("--module-name") + 1] == module["module_name"]
    assert command[command.index("--attribute") + 1] == module["attribute"]


def test_step_entry_point_the_image_exposes_runs() -> None:
    """`python -m em2q_msi.steps`, the command of step pods and Argo containers, answers."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "em2q_msi.steps", "--help"],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,  # a fresh venv compiles every module on first import
        cwd=PROJECT_ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert "qc" in done.stdout and "chunk" in done.stdout
