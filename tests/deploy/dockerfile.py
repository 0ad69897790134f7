"""A small Dockerfile and .dockerignore reader for the deployment tests.

There is no Docker engine on the development and CI machines, so the tests
read the Dockerfiles themselves: the static tests check their contract (CMD,
ENV, USER, EXPOSE, HEALTHCHECK...), and the install rehearsal replays the
serving image's build steps from the parsed instructions, so a change to the
Dockerfile is a change to what the rehearsal runs.

Only the subset of the Dockerfile syntax this project uses is supported:
line continuations, comments and parser directives, ``ARG``/``ENV``
expansion of ``$VAR``/``${VAR}``/``${VAR:-default}``, ``--flag=value``
options and the JSON (exec) form. Anything else is an error, not a guess.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

#: PATH of a container whose image does not set one (Docker's default).
DOCKER_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_VAR = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def expand(text: str, env: Mapping[str, str]) -> str:
    """Substitute ``$VAR``, ``${VAR}`` and ``${VAR:-default}`` as Docker does (unset -> empty)."""

    def sub(m: re.Match[str]) -> str:
        name = m.group("braced") or m.group("bare")
        value = env.get(name, "")
        if m.group("braced") and m.group("default") is not None and not value:
            return m.group("default")
        return value

    return _VAR.sub(sub, text)


@dataclass
class Instruction:
    """One instruction: upper-case keyword, ``--flags``, and the rest of the line."""

    keyword: str
    flags: dict[str, str]
    args: str
    lineno: int

    def exec_form(self) -> list[str] | None:
        """The JSON array form of the arguments, or None for the shell form."""
        text = self.args.strip()
        if not text.startswith("["):
            return None
        value = json.loads(text)
        if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise ValueError(f"line {self.lineno}: exec form must be a JSON array of strings")
        return value


@dataclass
class Stage:
    """A build stage with its resolved ENV, WORKDIR and USER after each instruction."""

    name: str | None
    base: str
    instructions: list[Instruction] = field(default_factory=list)
    args: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    user: str | None = None

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def one(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        if len(found) != 1:
            raise AssertionError(
                f"stage {self.name or self.base}: expected one {keyword}, found {len(found)}"
            )
        return found[0]


@dataclass
class Copy:
    """A parsed COPY: sources (context-relative or from a stage), absolute destination."""

    sources: list[str]
    dest: str
    from_stage: str | None
    chmod: str | None
    chown: str | None
    lineno: int


@dataclass
class Dockerfile:
    path: Path
    global_args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)

    @property
    def final(self) -> Stage:
        return self.stages[-1]


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Join continuation lines; drop comments and blank lines (as Docker's parser does)."""
    buf: list[str] = []
    start = 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        stripped = line.lstrip()
        if stripped.startswith("#"):
            continue  # comments (and parser directives) never continue a line
        if not stripped and not buf:
            continue
        if not buf:
            start = n
        if line.endswith("\\"):
            buf.append(line[:-1])
            continue
        buf.append(line)
        joined = " ".join(part.strip() for part in buf if part.strip())
        buf = []
        if joined:
            yield start, joined
    if buf:
        raise ValueError("Dockerfile ends inside a line continuation")


def _split_flags(rest: str) -> tuple[dict[str, str], str]:
    """Leading ``--name=value`` options (repeated names are joined with ';')."""
    flags: dict[str, str] = {}
    while rest.startswith("--"):
        token, _, rest = rest.partition(" ")
        name, _, value = token[2:].partition("=")
        flags[name] = f"{flags[name]};{value}" if name in flags else value
        rest = rest.lstrip()
    return flags, rest


def _env_pairs(args: str) -> list[tuple[str, str]]:
    tokens = shlex.split(args, posix=True)
    if tokens and "=" not in tokens[0]:
        return [(tokens[0], " ".join(tokens[1:]))]  # legacy ``ENV KEY value``
    pairs = []
    for tok in tokens:
        key, sep, value = tok.partition("=")
        if not sep:
            raise ValueError(f"ENV token {tok!r} is not KEY=VALUE")
        pairs.append((key, value))
    return pairs


def parse(path: Path | str, base_env: Mapping[str, str] | None = None) -> Dockerfile:
    """Parse a Dockerfile; ``base_env`` stands for the base image's ENV (default: PATH only)."""
    path = Path(path)
    base_env = dict(base_env or {"PATH": DOCKER_DEFAULT_PATH})
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for lineno, line in _logical_lines(path.read_text(encoding="utf-8")):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        flags, rest = _split_flags(rest.strip())
        ins = Instruction(keyword, flags, rest, lineno)
        if keyword == "ARG":
            name, _, default = rest.partition("=")
            name = name.strip()
            if not stages:
                global_args[name] = default
                continue
            stage = stages[-1]
            # A bare ARG inside a stage re-imports the global default.
            stage.args[name] = (
                expand(default, {**stage.args, **stage.env}) if default else global_args.get(name, "")
            )
        elif keyword == "FROM":
            words = rest.split()
            base = expand(words[0], global_args)
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(name=name, base=base, env=dict(base_env)))
        elif not stages:
            raise ValueError(f"{path.name}:{lineno}: {keyword} before FROM")
        stage = stages[-1]
        if keyword == "ENV":
            for key, value in _env_pairs(rest):
                stage.env[key] = expand(value, {**stage.args, **stage.env})
        elif keyword == "WORKDIR":
            target = expand(rest.strip(), {**stage.args, **stage.env})
            stage.workdir = str(PurePosixPath(stage.workdir, target))
        elif keyword == "USER":
            stage.user = expand(rest.strip(), {**stage.args, **stage.env})
        if keyword != "FROM":
            stage.instructions.append(ins)
    if not stages:
        raise ValueError(f"{path}: no FROM")
    return Dockerfile(path=path, global_args=global_args, stages=stages)


def copies(stage: Stage) -> list[Copy]:
    """The stage's COPY instructions with destinations made absolute against WORKDIR at that point."""
    out = []
    workdir = "/"
    env = dict(stage.env)
    for ins in stage.instructions:
        if ins.keyword == "WORKDIR":
            workdir = str(PurePosixPath(workdir, ins.args.strip()))
        elif ins.keyword == "COPY":
            words = ins.exec_form() or shlex.split(ins.args)
            *sources, dest = words
            absolute = str(PurePosixPath(workdir, expand(dest, env)))
            if dest.endswith("/"):
                absolute += "/"
            out.append(
                Copy(
                    sources,
                    absolute,
                    ins.flags.get("from"),
                    ins.flags.get("chmod"),
                    ins.flags.get("chown"),
                    ins.lineno,
                )
            )
        elif ins.keyword == "ADD":
            raise ValueError(f"line {ins.lineno}: ADD is not supported; use COPY")
    return out


# --------------------------------------------------------------------------
# .dockerignore
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class IgnorePattern:
    text: str
    negated: bool
    regex: re.Pattern[str]
    literal_prefix: str


def _glob_to_regex(pattern: str) -> str:
    """Docker's pattern syntax (Go filepath.Match plus ``**``) as a regex."""
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                i += 2
                if pattern.startswith("/", i):
                    out.append("(?:.*/)?")
                    i += 1
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.index("]", i + 1)
            cls = pattern[i + 1 : end]
            if cls.startswith("^") or cls.startswith("!"):
                cls = "^" + cls[1:]
            out.append(f"[{cls}]")
            i = end
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def read_dockerignore(path: Path | str) -> list[IgnorePattern]:
    """Patterns of a .dockerignore file."""
    return read_dockerignore_lines(Path(path).read_text(encoding="utf-8").splitlines())


def read_dockerignore_lines(lines: Iterable[str]) -> list[IgnorePattern]:
    """Patterns cleaned like Docker does (no leading '/', no trailing '/'); comments skipped."""
    patterns = []
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        if negated:
            line = line[1:].strip()
        cleaned = os.path.normpath(line).replace(os.sep, "/").lstrip("/")
        if cleaned == ".":
            continue
        prefix = re.split(r"[*?\[\\]", cleaned, maxsplit=1)[0]
        patterns.append(IgnorePattern(cleaned, negated, re.compile(_glob_to_regex(cleaned)), prefix))
    return patterns


def is_ignored(rel: str, patterns: Iterable[IgnorePattern]) -> bool:
    """Docker's rule: a pattern matches a path or any of its parent directories; the last match wins."""
    parts = rel.split("/")
    candidates = ["/".join(parts[: k + 1]) for k in range(len(parts))]
    ignored = False
    for p in patterns:
        if any(p.regex.fullmatch(c) for c in candidates):
            ignored = not p.negated
    return ignored


def _may_reinclude(rel_dir: str, patterns: Iterable[IgnorePattern]) -> bool:
    """Could an exception pattern re-include something below an ignored directory?"""
    for p in patterns:
        if not p.negated:
            continue
        if (
            not p.literal_prefix
            or p.literal_prefix.startswith(rel_dir + "/")
            or rel_dir.startswith(p.literal_prefix)
        ):
            return True
    return False


def context_files(root: Path | str, patterns: list[IgnorePattern]) -> list[str]:
    """Every file (as a POSIX path relative to ``root``) that `docker build` would send."""
    root = Path(root)
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir
        keep = []
        for d in sorted(dirnames):
            rel = f"{rel_dir}/{d}" if rel_dir else d
            if is_ignored(rel, patterns) and not _may_reinclude(rel, patterns):
                continue
            keep.append(d)
        dirnames[:] = keep
        for f in sorted(filenames):
            rel = f"{rel_dir}/{f}" if rel_dir else f
            if not is_ignored(rel, patterns):
                out.append(rel)
    return out
