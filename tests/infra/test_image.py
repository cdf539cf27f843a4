"""The Lambda image (functions/Dockerfile), checked without a Docker engine.

The Dockerfile is parsed, its build context is computed from .dockerignore, and its
COPY instructions are replayed into a temporary directory standing in for /var/task.
That tree is then run with the venv's interpreter, the way the Lambda runtime runs
it: /var/task first on sys.path, the Dockerfile's ENV, and CMD as the handler.
"""

from __future__ import annotations

import fnmatch
import importlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "functions" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
REQUIREMENTS = REPO / "functions" / "requirements.txt"
PYPROJECT = REPO / "pyproject.toml"
MANIFEST = REPO / "model_artifacts" / "manifest.json"
TASK_ROOT = "/var/task"  # LAMBDA_TASK_ROOT of the AWS Lambda base images

# Build-time-only or benchmark-only: never in the image, not even transitively.
FORBIDDEN_DISTS = {"torch", "torchvision", "transformers", "sentence-transformers", "onnx",
                   "pytest", "hypothesis", "ruff", "aws-cdk-lib", "constructs", "cdk-nag"}


# ---------------------------------------------------------------- Dockerfile parsing


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def parse_dockerfile(path: Path = DOCKERFILE) -> list[Instruction]:
    """Instructions in order, with line continuations joined and comments dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comment lines inside a continued instruction are ignored by Docker
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip()))
    assert not pending, "Dockerfile ends inside a continued line"
    return instructions


def expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m.group(1) or m.group(2), m.group(0)), value)


def split_args(args: str) -> list[str]:
    """Exec (JSON array) form or shell-words form."""
    if args.startswith("["):
        return json.loads(args)
    return shlex.split(args)


def build_env(instructions: list[Instruction]) -> dict[str, str]:
    """ENV of the final image (the base image provides LAMBDA_TASK_ROOT)."""
    env = {"LAMBDA_TASK_ROOT": TASK_ROOT}
    for ins in instructions:
        if ins.keyword == "ENV":
            for word in shlex.split(ins.args):
                key, sep, value = word.partition("=")
                assert sep, f"use the ENV key=value form: {ins.args!r}"
                env[key] = expand(value, env)
    return env


@dataclass(frozen=True)
class Copy:
    sources: tuple[str, ...]
    dest: str  # absolute path in the image
    from_stage: str | None


def copies(instructions: list[Instruction]) -> list[Copy]:
    env = {"LAMBDA_TASK_ROOT": TASK_ROOT}
    found = []
    for ins in instructions:
        if ins.keyword == "ENV":
            env = build_env([i for i in instructions if i.keyword == "ENV"])
        if ins.keyword in ("COPY", "ADD"):
            assert ins.keyword == "COPY", "use COPY, not ADD"
            words = [expand(w, env) for w in split_args(ins.args)]
            flags = [w for w in words if w.startswith("--")]
            paths = [w for w in words if not w.startswith("--")]
            from_stage = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
            found.append(Copy(tuple(paths[:-1]), paths[-1], from_stage))
    return found


def bind_mount_sources(instructions: list[Instruction]) -> list[str]:
    """Context files a RUN reads through ``--mount=type=bind,source=...`` (no layer)."""
    found = []
    for ins in instructions:
        if ins.keyword == "RUN":
            for word in shlex.split(ins.args):
                if not word.startswith("--mount="):
                    break
                options = dict(o.partition("=")[::2] for o in word.removeprefix("--mount=").split(","))
                if options.get("type") == "bind" and "from" not in options:
                    found.append(options.get("source", options.get("src", ".")))
    return found


def cmds(instructions: list[Instruction]) -> list[list[str]]:
    return [split_args(i.args) for i in instructions if i.keyword == "CMD"]


# ------------------------------------------------------------ build context (.dockerignore)


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus `**`) as a regex over a relative path."""
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif c == "*":
            out, i = out + "[^/]*", i + 1
        elif c == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(c), i + 1
    return re.compile(out)


def ignore_rules() -> list[tuple[re.Pattern[str], bool]]:
    rules = []
    for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = str(PurePosixPath(line.lstrip("!").strip().lstrip("/")))
        rules.append((_pattern_regex(pattern), negate))
    return rules


def is_ignored(rel: str, rules: list[tuple[re.Pattern[str], bool]]) -> bool:
    """Docker's rule: the last pattern that matches the path, or one of its parent
    directories, decides."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for regex, negate in rules:
        if any(regex.fullmatch(p) for p in prefixes):
            ignored = not negate
    return ignored


def build_context() -> set[str]:
    """Relative paths of the files sent to the Docker daemon."""
    rules = ignore_rules()
    prune = not any(negate for _, negate in rules)
    files = set()
    for dirpath, dirnames, filenames in os.walk(REPO):
        rel_dir = Path(dirpath).relative_to(REPO).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        if prune:
            dirnames[:] = [d for d in dirnames if not is_ignored(rel_dir + d, rules)]
        files.update(rel_dir + f for f in filenames if not is_ignored(rel_dir + f, rules))
    return files


def image_files(context: set[str]) -> dict[str, str]:
    """Replay every COPY: image path -> repo-relative source file."""
    placed: dict[str, str] = {}
    for copy in copies(parse_dockerfile()):
        assert copy.from_stage is None, "multi-stage COPY --from is not modelled by this test"
        if len(copy.sources) > 1:
            assert copy.dest.endswith("/"), f"COPY of several sources needs a directory dest: {copy}"
        for source in copy.sources:
            src = source.strip("/").removeprefix("./")
            matched_files = sorted(f for f in context if fnmatch.fnmatchcase(f, src))
            under_dirs = sorted(f for f in context if any(f.startswith(d + "/") for d in _glob_dirs(src, context)))
            if matched_files:  # files named (or globbed) directly
                for f in matched_files:
                    target = copy.dest + PurePosixPath(f).name if copy.dest.endswith("/") or len(matched_files) > 1 \
                        else copy.dest
                    placed[str(PurePosixPath(target))] = f
            for f in under_dirs:  # a directory source copies its contents
                base = next(d for d in _glob_dirs(src, context) if f.startswith(d + "/"))
                placed[str(PurePosixPath(copy.dest) / f[len(base) + 1:])] = f
    return placed


def _glob_dirs(pattern: str, context: set[str]) -> set[str]:
    dirs = {str(p) for f in context for p in PurePosixPath(f).parents if str(p) != "."}
    return {d for d in dirs if fnmatch.fnmatchcase(d, pattern)}


@pytest.fixture(scope="module")
def context() -> set[str]:
    return build_context()


@pytest.fixture(scope="module")
def placed(context: set[str]) -> dict[str, str]:
    return image_files(context)


# ---------------------------------------------------------------- requirements


def requirements() -> list[Requirement]:
    lines = [ln.split("#", 1)[0].strip() for ln in REQUIREMENTS.read_text(encoding="utf-8").splitlines()]
    return [Requirement(ln) for ln in lines if ln]


def dependency_closure(reqs: list[Requirement]) -> set[str]:
    """Canonical names of the installed distributions the requirements pull in."""
    seen: set[str] = set()
    todo = [(r, frozenset(r.extras)) for r in reqs]
    seen_with_extras: set[tuple[str, frozenset[str]]] = set()
    while todo:
        req, extras = todo.pop()
        name = canonicalize_name(req.name)
        if (name, extras) in seen_with_extras:
            continue
        seen_with_extras.add((name, extras))
        seen.add(name)
        for raw in metadata.distribution(name).requires or []:
            sub = Requirement(raw)
            wanted = sub.marker is None or any(
                sub.marker.evaluate({"extra": e}) for e in (extras or {""}))
            if wanted:
                todo.append((sub, frozenset(sub.extras)))
    return seen


def import_names(dists: set[str]) -> set[str]:
    """Top-level modules provided by the given distributions."""
    names = set()
    for module, providers in metadata.packages_distributions().items():
        if any(canonicalize_name(p) in dists for p in providers):
            names.add(module)
    return names


# ====================================================================== tests


def test_base_image_is_the_lambda_python_312_image():
    # GIVEN the Dockerfile
    froms = [i.args for i in parse_dockerfile() if i.keyword == "FROM"]
    # THEN it is a single-stage build on the AWS Lambda Python 3.12 base image
    assert froms == ["public.ecr.aws/lambda/python:3.12"]


def test_every_copy_source_exists_and_is_in_the_build_context(context):
    # GIVEN every COPY of the Dockerfile (and every context file a RUN bind-mounts)
    instructions = parse_dockerfile()
    sources = [(s, c) for c in copies(instructions) for s in c.sources]
    sources += [(s, None) for s in bind_mount_sources(instructions)]
    assert sources
    for source, copy in sources:
        src = source.strip("/")
        # THEN the source exists in the repo (globs expanded) ...
        in_repo = sorted(REPO.glob(src))
        assert in_repo, f"COPY source {source!r} does not exist in the repo"
        # ... and .dockerignore does not hide it from the daemon
        for path in in_repo:
            rel = path.relative_to(REPO).as_posix()
            sent = rel in context if path.is_file() else any(f.startswith(rel + "/") for f in context)
            assert sent, f"COPY source {rel!r} is excluded by .dockerignore"
        # AND every COPY lands under LAMBDA_TASK_ROOT
        assert copy is None or copy.dest.startswith(TASK_ROOT + "/"), copy


def test_dockerignore_keeps_dev_and_heavy_files_out_of_the_context(context):
    # GIVEN the build context computed from .dockerignore
    # THEN none of these reach the daemon
    for prefix in (".venv/", ".git/", "tests/", "bench/", "docs/", "cdk.out/", ".ragserve/"):
        assert not any(f.startswith(prefix) for f in context), prefix
    # the model-build venv (`make model`: torch, over a GB) lives in the repo too
    assert is_ignored(".venv-model", ignore_rules())
    assert not any("/__pycache__/" in f or f.startswith("__pycache__/") or f.endswith(".pyc") for f in context)
    assert not any(f.endswith("model_fp32.onnx") for f in context)
    # AND what the image needs is there
    assert {"functions/Dockerfile", "functions/requirements.txt", "model_artifacts/manifest.json",
            "layers/ragserve/__init__.py"} <= context


def test_image_layout_puts_package_functions_and_model_under_task_root(placed):
    # GIVEN the files the COPY instructions place in the image
    # THEN the package, the functions and the manifest are where Lambda imports them from
    assert placed[f"{TASK_ROOT}/ragserve/__init__.py"] == "layers/ragserve/__init__.py"
    assert placed[f"{TASK_ROOT}/ragserve/settings.py"] == "layers/ragserve/settings.py"
    assert placed[f"{TASK_ROOT}/functions/__init__.py"] == "functions/__init__.py"
    assert placed[f"{TASK_ROOT}/model_artifacts/manifest.json"] == "model_artifacts/manifest.json"
    # AND no source is copied twice to different places
    assert len(set(placed.values())) == len(placed)


def test_model_artifacts_in_image_are_exactly_the_manifest_defaults(placed):
    # GIVEN the manifest: per model, the default variant's file and the tokenizer
    manifest = json.loads(MANIFEST.read_text(encoding="utf-8"))
    expected = {"manifest.json"}
    for model in manifest["models"]:
        expected.add(model["variants"][model["default_variant"]]["file"])
        expected.add(model["tokenizer"]["file"])
    assert manifest["default_model"] in {m["id"] for m in manifest["models"]}
    # WHEN listing what the Dockerfile copies into model_artifacts/
    prefix = f"{TASK_ROOT}/model_artifacts/"
    in_image = {p[len(prefix):] for p in placed if p.startswith(prefix)}
    # THEN it is exactly that: no build.py, no golden texts, no fp32 model
    assert in_image == expected
    for rel in in_image:
        assert placed[prefix + rel] == f"model_artifacts/{rel}"


def test_image_copies_nothing_torch_related_or_build_only(placed):
    # GIVEN every file the image receives
    for source in placed.values():
        # THEN none is torch-related, the fp32 model, or build/bench/test tooling
        lowered = source.lower()
        assert "torch" not in lowered, source
        assert not lowered.endswith("model_fp32.onnx"), source
        assert not source.startswith(("model_artifacts/build.py", "model_artifacts/golden_texts.py",
                                      "tests/", "bench/", "infra/", "docs/", ".venv/")), source
        assert "__pycache__" not in source and not source.endswith(".pyc"), source
    # AND no instruction installs torch or the other build/bench-only packages
    text = " ".join(i.args for i in parse_dockerfile() if i.keyword == "RUN").lower()
    assert "torch" not in text and "sentence-transformers" not in text


def test_cmd_names_an_importable_lambda_handler():
    # GIVEN every CMD of the Dockerfile (the default handler; CDK overrides it per function)
    found = cmds(parse_dockerfile())
    assert found, "the Dockerfile has no CMD"
    for cmd in found:
        assert len(cmd) == 1, f"CMD must be exec form with one handler: {cmd}"
        module_name, _, attr = cmd[0].rpartition(".")
        # WHEN importing the module (loads the real model)
        module = importlib.import_module(module_name)
        # THEN it has a callable of that name
        assert attr == "lambda_handler"
        assert callable(getattr(module, attr)), cmd


def test_every_routed_function_has_an_importable_handler_in_the_image(placed):
    from ragserve.routes import functions

    # GIVEN the function folders of the routes table
    names = functions()
    assert names
    for name in names:
        # THEN each has functions/<name>/handler.py, copied into the image ...
        assert (REPO / "functions" / name / "handler.py").is_file(), name
        assert placed.get(f"{TASK_ROOT}/functions/{name}/handler.py") == f"functions/{name}/handler.py"
        # ... and it imports with a callable lambda_handler
        module = importlib.import_module(f"functions.{name}.handler")
        assert callable(getattr(module, "lambda_handler", None)), name


def test_requirements_match_the_runtime_extra():
    # GIVEN requirements.txt and pyproject's runtime extra
    runtime = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["optional-dependencies"]["runtime"]

    def key(r: Requirement) -> tuple:
        return canonicalize_name(r.name), frozenset(r.extras), str(r.specifier)

    # THEN they name the same packages, extras and bounds
    assert {key(r) for r in requirements()} == {key(Requirement(r)) for r in runtime}
    # AND every requirement has a lower bound
    for req in requirements():
        assert any(s.operator in (">=", "==", "~=") for s in req.specifier), f"{req} has no lower bound"


def test_requirements_are_installed_and_importable():
    # GIVEN each requirement (with its extras)
    for req in requirements():
        dist = metadata.distribution(req.name)
        # THEN the installed version satisfies it ...
        assert req.specifier.contains(dist.version, prereleases=True), f"{req}: installed {dist.version}"
        # ... and every module it provides, and those of its extras' requirements, import
        closure = dependency_closure([req])
        modules = import_names({canonicalize_name(req.name)})
        assert modules, f"{req.name} provides no importable module"
        for module in sorted(modules):
            if module.startswith("_"):
                continue
            importlib.import_module(module)
        for extra in req.extras:
            for raw in dist.requires or []:
                sub = Requirement(raw)
                if sub.marker is not None and sub.marker.evaluate({"extra": extra}):
                    assert canonicalize_name(sub.name) in closure
                    for module in sorted(import_names({canonicalize_name(sub.name)})):
                        if not module.startswith("_"):
                            importlib.import_module(module)


def test_runtime_dependency_closure_has_no_torch_or_dev_tools():
    # GIVEN every distribution the requirements pull in, transitively
    closure = dependency_closure(requirements())
    # THEN none is build-only, bench-only or dev tooling
    assert not closure & {canonicalize_name(n) for n in FORBIDDEN_DISTS}, closure
    assert not any(n.startswith("nvidia-") for n in closure)


def _materialize(placed: dict[str, str], root: Path) -> None:
    for image_path, source in placed.items():
        target = root / Path(image_path).relative_to(TASK_ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / source, target)  # real copies: settings resolves __file__


_RUN_IN_TASK_ROOT = textwrap.dedent(
    """
    import json, os, sys, sysconfig
    baseline = set(sys.modules)

    def third_party(names):
        # top-level modules that are neither built in nor from the standard library
        stdlib = {os.path.realpath(sysconfig.get_paths()[k]) for k in ("stdlib", "platstdlib")}
        found = set()
        for name in {n.split(".")[0] for n in names}:
            module = sys.modules.get(name)
            origin = getattr(module, "__file__", None)
            if name in sys.stdlib_module_names or origin is None:
                continue
            real = os.path.realpath(origin)
            if any(real.startswith(d + os.sep) for d in stdlib) and "site-packages" not in real:
                continue
            found.add(name)
        return found

    root = os.environ["LAMBDA_TASK_ROOT"]
    module_name, _, attr = sys.argv[1].rpartition(".")
    import importlib
    handler_module = importlib.import_module(module_name)
    handler = getattr(handler_module, attr)
    import ragserve, ragserve.settings
    from ragserve.local.events import LocalContext, rest_event
    response = handler(rest_event("GET", "/health"), LocalContext(function_name="ragserve-embed"))
    print(json.dumps({
        "ragserve": ragserve.__file__,
        "handler": handler_module.__file__,
        "artifacts_dir": str(ragserve.settings.default_artifacts_dir()),
        "status": response["statusCode"],
        "body": json.loads(response["body"]),
        "modules": sorted(third_party(set(sys.modules) - baseline)),
    }))
    """
)


def test_handler_runs_from_the_image_layout(placed, tmp_path):
    # GIVEN the image's /var/task replayed into a temporary directory, and the image's ENV
    root = tmp_path / "task"
    _materialize(placed, root)
    before = sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAGSERVE_", "AWS_", "POWERTOOLS_"))}
    env.pop("PYTHONPATH", None)
    image_env = build_env(parse_dockerfile())
    image_env = {k: v.replace(TASK_ROOT, str(root)) for k, v in image_env.items()}
    image_env["HOME"] = image_env["XDG_CACHE_HOME"] = str(tmp_path / "home")  # the "/tmp" of this run
    image_env["RAGSERVE_DATA_DIR"] = str(tmp_path / "data")
    env.update(image_env, LAMBDA_TASK_ROOT=str(root), PYTHONPATH=str(root))
    handler = cmds(parse_dockerfile())[-1][0]

    # WHEN the Lambda runtime would import CMD's handler and answer GET /health
    done = subprocess.run([sys.executable, "-c", _RUN_IN_TASK_ROOT, handler], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])

    # THEN the package and handler come from the task root, not from the repo
    assert Path(result["ragserve"]).resolve().is_relative_to(root.resolve())
    assert Path(result["handler"]).resolve().is_relative_to(root.resolve())
    # AND settings.default_artifacts_dir() finds /var/task/model_artifacts
    assert Path(result["artifacts_dir"]).resolve() == (root / "model_artifacts").resolve()
    # AND the model loaded from there
    assert result["status"] == 200, result["body"]
    assert result["body"]["status"] == "healthy"
    # AND nothing was written into the (read-only in Lambda) task root
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == before
    # AND the handler imported only the stdlib, the package and the runtime dependencies
    allowed = import_names(dependency_closure(requirements())) | {"ragserve", "functions"}
    assert set(result["modules"]) - allowed == set()
