"""Structure of the three Dockerfiles (Docker cannot run on this machine, so the
Dockerfiles are parsed instead of built): each installs exactly its own lock file and
then airloop with ``--no-deps``, copies only paths that exist, runs as a numeric
non-root user set before ENTRYPOINT/CMD, and starts from a pinned base image.

The Dockerfiles are read with ``dockerfile_parse.DockerfileParser`` (continuation
lines, comments, parser directives and ``ARG`` substitution in ``FROM`` are its
business); only the shell commands inside ``RUN`` are split here, with ``shlex``.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"

#: The router and package marker every image carries, then the planes it runs.
ROOT = {"include/airloop/__init__.py", "include/airloop/cli.py"}
IMAGES = {
    "airflow": {"lock": "requirements/control.lock", "planes": {"airloop.core", "airloop_ops"},
                "copies": ROOT | {"include/airloop/core/", "include/projects/", "dags/",
                                  "plugins/"}},
    "runtime": {"lock": "requirements/runtime.lock", "planes": {"airloop.core", "airloop.runtime"},
                "copies": ROOT | {"include/airloop/core/", "include/airloop/runtime/",
                                  "include/projects/"}},
    "serving": {"lock": "requirements/serving.lock", "planes": {"airloop.core", "airloop.serving"},
                "copies": ROOT | {"include/airloop/core/", "include/airloop/serving/"}},
}
LOCKS = {"requirements/control.lock", "requirements/runtime.lock", "requirements/serving.lock"}


@dataclass(frozen=True)
class Dockerfile:
    """A parsed Dockerfile: its instructions in order (``(INSTRUCTION, value)``, comments
    dropped) and its base images."""

    instructions: list[tuple[str, str]]
    base_images: list[str]


def parse_dockerfile(path: Path) -> Dockerfile:
    parser = DockerfileParser(path=str(path))
    return Dockerfile(
        instructions=[(i["instruction"], i["value"]) for i in parser.structure
                      if i["instruction"] != "COMMENT"],
        base_images=list(parser.parent_images),
    )


def _copy_sources(args: str) -> list[str]:
    parts = [p for p in shlex.split(args) if not p.startswith("--")]
    return parts[:-1]


def _pip_installs(instructions) -> list[list[str]]:
    """Argument lists of every `pip install` in RUN instructions."""
    found = []
    for instr, args in instructions:
        if instr != "RUN":
            continue
        for cmd in re.split(r"&&|;", args):
            words = shlex.split(cmd)
            if words[:2] == ["pip", "install"] or words[1:3] == ["-m", "pip"]:
                found.append(words)
    return found


@pytest.fixture(params=sorted(IMAGES), ids=sorted(IMAGES))
def image(request):
    name = request.param
    path = DOCKER / f"{name}.Dockerfile"
    assert path.is_file(), f"missing {path}"
    return name, parse_dockerfile(path)


def test_base_image_pinned(image):
    name, dockerfile = image
    assert dockerfile.base_images, f"{name}: no FROM"
    for ref in dockerfile.base_images:
        if "@sha256:" in ref:
            assert re.fullmatch(r".+@sha256:[0-9a-f]{64}", ref), ref
            continue
        repo, _, tag = ref.rpartition(":")
        assert repo and tag and tag != "latest", f"{name}: unpinned base image {ref}"
        # An exact Python patch version, not a floating 3.11 / slim tag.
        assert re.match(r"^\d+\.\d+\.\d+-", tag), f"{name}: base tag {tag!r} is not exact"


def test_installs_exactly_its_own_lock_then_airloop_without_deps(image):
    name, dockerfile = image
    instructions = dockerfile.instructions
    expected = IMAGES[name]["lock"]
    copied_locks = {
        src for instr, args in instructions if instr == "COPY" for src in _copy_sources(args)
        if src in LOCKS
    }
    assert copied_locks == {expected}, f"{name}: copies locks {copied_locks}"
    installs = _pip_installs(instructions)
    assert len(installs) == 2, f"{name}: expected lock install + airloop install, got {installs}"
    lock_install, pkg_install = installs
    # the lock: `-r <file copied from expected>` and nothing else to install
    assert "-r" in lock_install
    target = lock_install[lock_install.index("-r") + 1]
    assert Path(target).name == Path(expected).name, f"{name}: installs {target}"
    extras = [w for w in lock_install[2:] if not w.startswith("-") and w != target]
    assert not extras, f"{name}: installs packages outside the lock: {extras}"
    assert "--no-deps" not in lock_install, "the lock must resolve exactly, not skip deps"
    # then the package, without dependencies
    assert "--no-deps" in pkg_install, f"{name}: airloop must be installed with --no-deps"
    # Every line of the lock is an exact pin.
    for line in (REPO / expected).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            assert re.fullmatch(r"[A-Za-z0-9_.\-\[\],]+==[^\s=<>~!]+", line), f"unpinned: {line}"


def test_copies_only_existing_paths(image):
    name, dockerfile = image
    instructions = dockerfile.instructions
    sources = [
        src for instr, args in instructions if instr in {"COPY", "ADD"}
        for src in _copy_sources(args)
    ]
    assert not [i for i, _ in instructions if i == "ADD"], f"{name}: use COPY, not ADD"
    for src in sources:
        assert not re.match(r"https?://", src), f"{name}: downloads {src}"
        assert (REPO / src).exists(), f"{name}: COPY source {src} does not exist in the repo"
    code = {s for s in sources if s not in LOCKS and s != "pyproject.toml"}
    assert code == IMAGES[name]["copies"], f"{name}: copies {code}"


def test_each_image_holds_every_package_its_planes_import():
    """An image copies only its planes; the import graph (grimp, as import-linter builds
    it) shows that nothing those planes import, directly or not, is left out."""
    import sys

    import grimp

    sys.path.insert(0, str(REPO / "plugins"))
    graph = grimp.build_graph("airloop", "airloop_ops")
    for name, image in IMAGES.items():
        for plane in image["planes"]:
            imported = {".".join(m.split(".")[:2]) if m.startswith("airloop.") else m
                        for m in graph.find_upstream_modules(plane, as_package=True)}
            imported = {m for m in imported if m.startswith(("airloop.", "airloop_ops"))}
            assert imported <= image["planes"], f"{name}: {plane} imports {imported}"


def test_non_root_user_before_entrypoint(image):
    name, dockerfile = image
    instructions = dockerfile.instructions
    kinds = [i for i, _ in instructions]
    users = [(n, args) for n, (i, args) in enumerate(instructions) if i == "USER"]
    assert users, f"{name}: no USER"
    last_pos, last_user = users[-1]
    uid = last_user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"{name}: USER {last_user} must be a numeric non-root uid"
    if name == "airflow":
        assert uid == "50000", "airflow image uses the official image's uid 50000"
    starts = [n for n, i in enumerate(kinds) if i in {"CMD", "ENTRYPOINT"}]
    assert starts and all(last_pos < n for n in starts), f"{name}: USER after CMD/ENTRYPOINT"


def test_no_downloads_at_build_time(image):
    name, dockerfile = image
    for instr, args in dockerfile.instructions:
        if instr == "RUN":
            assert not re.search(r"\b(curl|wget)\b|https?://", args), f"{name}: RUN downloads: {args}"


def test_parser_catches_a_wrong_lock(tmp_path):
    """The checks above can fail: a Dockerfile installing another lock is caught."""
    bad = (DOCKER / "serving.Dockerfile").read_text().replace("serving.lock", "runtime.lock")
    path = tmp_path / "serving.Dockerfile"
    path.write_text(bad)
    with pytest.raises(AssertionError, match="serving: copies locks {'requirements/runtime.lock'}"):
        test_installs_exactly_its_own_lock_then_airloop_without_deps(
            ("serving", parse_dockerfile(path))
        )


def test_parser_sees_through_continuations_and_comments(tmp_path):
    """What a hand parser gets wrong: a comment line inside a continued RUN is dropped by
    Docker, and the install after it still counts (here: a package outside the lock)."""
    good = (DOCKER / "serving.Dockerfile").read_text()
    old = "RUN pip install --no-cache-dir -r /tmp/serving.lock && rm /tmp/serving.lock"
    assert old in good
    bad = good.replace(old, (
        "RUN pip install --no-cache-dir -r /tmp/serving.lock \\\n"
        "# pinned elsewhere\n"
        "    requests \\\n"
        "    && rm /tmp/serving.lock"
    ))
    path = tmp_path / "serving.Dockerfile"
    path.write_text(bad)
    parsed = parse_dockerfile(path)
    (run,) = [v for i, v in parsed.instructions if i == "RUN" and "serving.lock" in v]
    assert "requests" in run and "pinned elsewhere" not in run
    with pytest.raises(AssertionError, match="installs packages outside the lock: \\['requests'\\]"):
        test_installs_exactly_its_own_lock_then_airloop_without_deps(("serving", parsed))
