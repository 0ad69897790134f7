"""The requests shown in the docs, parsed from their `curl` lines, and the answers shown beside them.

A sample is a `curl` command in a ``sh``/``bash`` code block of README.md or docs/*.md that
talks to the server (``localhost:8000``), optionally followed by comment lines that hold the
answer as JSON (``# {"model": ...}``; text after the JSON on the same line is prose). Every such
`curl` must parse here, or :func:`collect` raises: a sample the harness cannot read fails the
test suite instead of escaping it.

Answers are compared as a *subset*: every key shown must be in the answer with an equal value
(numbers within :data:`REL_TOL` / :data:`ABS_TOL`, lists element by element and of the same
length); keys the docs leave out are not checked, and :data:`IGNORED_FIELDS` (per-request values)
are never compared.
"""

from __future__ import annotations

import base64
import json
import math
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from tests.conftest import REPO_ROOT

#: Shown numbers are rounded for reading; they must match the server within these tolerances.
REL_TOL = 1e-4
ABS_TOL = 1e-6
#: Fields whose value differs on every request: their presence is checked, never their value.
IGNORED_FIELDS = frozenset({"request_id"})
#: The host the samples talk to (`make serve`'s bind); other hosts (Prometheus, ...) are not samples.
SERVER = "localhost:8000"

_FENCE = re.compile(r"^```(\w*)\s*$")
_SUBST = re.compile(r"\$\(base64 -w0 ([\w./-]+)\)")


class SampleError(ValueError):
    """A `curl` line in the docs that the harness cannot turn into a request."""


@dataclass
class Sample:
    """One request shown in the docs, with the answer shown beside it (None: no answer shown)."""

    where: str  # "docs/api.md:42"
    method: str
    path: str  # with the query string
    headers: dict[str, str]
    body: bytes | None
    expected: object | None = None
    expected_text: str = field(default="", repr=False)

    @property
    def id(self) -> str:
        return f"{self.where} {self.method} {self.path}"


def doc_files(root: Path = REPO_ROOT) -> list[Path]:
    """README.md and every page under docs/."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def _shell_blocks(text: str):
    """(first line number, lines) of every sh/bash/console code block."""
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m:
            lang, start, i = m.group(1), i + 2, i + 1
            body = []
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            if lang in ("sh", "bash", "shell", "console"):
                yield start, body
        i += 1


def _commands(start: int, body: list[str]):
    """(line number, command, comment lines right after it) for every command in a block."""
    i = 0
    while i < len(body):
        line = body[i]
        if not line.strip() or line.lstrip().startswith("#"):
            i += 1
            continue
        lineno, cmd = start + i, line
        while cmd.rstrip().endswith("\\") and i + 1 < len(body):
            i += 1
            cmd = cmd.rstrip()[:-1] + " " + body[i].strip()
        # a quoted argument may span lines (a JSON body): join until the quotes balance
        while cmd.count("'") % 2 and i + 1 < len(body):
            i += 1
            cmd += "\n" + body[i]
        i += 1
        comments = []
        while i < len(body) and body[i].lstrip().startswith("#"):
            comments.append(body[i].lstrip()[1:].strip())
            i += 1
        yield lineno, cmd, comments


def _strip_comment(cmd: str) -> str:
    # a trailing "   # explanation" after the command (outside quotes)
    out, quote = [], None
    for j, ch in enumerate(cmd):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (j == 0 or cmd[j - 1].isspace()):
            break
        out.append(ch)
    return "".join(out)


def parse_curl(cmd: str, where: str, root: Path = REPO_ROOT) -> Sample:
    """The request of one `curl` command line (pipes after it are ignored)."""
    cmd = _strip_comment(cmd)
    cmd = _SUBST.sub(lambda m: base64.b64encode((root / m.group(1)).read_bytes()).decode(), cmd)
    try:
        tokens = shlex.split(cmd)
    except ValueError as exc:
        raise SampleError(f"{where}: cannot split {cmd!r}: {exc}") from None
    if "|" in tokens:
        tokens = tokens[: tokens.index("|")]
    if tokens[:1] != ["curl"]:
        raise SampleError(f"{where}: not a curl command: {cmd!r}")
    method, headers, body, url = None, {}, None, None
    it = iter(tokens[1:])
    for tok in it:
        if tok in ("-s", "-sS", "-S", "--silent", "-i", "--fail"):
            continue
        if tok in ("-X", "--request"):
            method = next(it)
        elif tok in ("-H", "--header"):
            key, _, value = next(it).partition(":")
            headers[key.strip()] = value.strip()
        elif tok in ("-d", "--data", "--data-binary"):
            data = next(it)
            body = (root / data[1:]).read_bytes() if data.startswith("@") else data.encode()
        elif tok.startswith("-"):
            raise SampleError(f"{where}: curl option {tok!r} is not understood by the docs harness")
        elif url is None:
            url = tok
        else:
            raise SampleError(f"{where}: a second URL {tok!r}")
    if url is None:
        raise SampleError(f"{where}: no URL in {cmd!r}")
    parts = urlsplit(url if "://" in url else "http://" + url)
    if parts.netloc != SERVER:
        raise SampleError(f"{where}: {url!r} is not on {SERVER}")
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    return Sample(where, method or ("POST" if body is not None else "GET"), path, headers, body)


def _answer(comments: list[str], where: str) -> tuple[object | None, str]:
    """The JSON answer at the start of the comment lines (joined), if they start with one."""
    text = " ".join(comments).strip()
    if not text.startswith(("{", "[")):
        return None, ""
    try:
        value, end = json.JSONDecoder().raw_decode(text)
    except json.JSONDecodeError as exc:
        raise SampleError(f"{where}: the answer shown is not JSON: {exc}") from None
    return value, text[:end]


def collect(root: Path = REPO_ROOT) -> list[Sample]:
    """Every request shown in the docs; raises SampleError for a `curl` it cannot read."""
    samples = []
    for path in doc_files(root):
        rel = path.relative_to(root).as_posix()
        for start, body in _shell_blocks(path.read_text(encoding="utf-8")):
            for lineno, cmd, comments in _commands(start, body):
                if not re.search(r"(^|[\s;(])curl\s", cmd) or SERVER not in cmd:
                    continue
                where = f"{rel}:{lineno}"
                sample = parse_curl(cmd, where, root)
                sample.expected, sample.expected_text = _answer(comments, where)
                samples.append(sample)
    return samples


def mismatches(shown: object, actual: object, at: str = "$") -> list[str]:
    """Where the answer differs from what the docs show (empty: it matches)."""
    if isinstance(shown, dict):
        if not isinstance(actual, dict):
            return [f"{at}: shown an object, got {actual!r}"]
        out = []
        for key, value in shown.items():
            if key not in actual:
                out.append(f"{at}.{key}: missing from the answer")
            elif key not in IGNORED_FIELDS:
                out += mismatches(value, actual[key], f"{at}.{key}")
        return out
    if isinstance(shown, list):
        if not isinstance(actual, list) or len(actual) != len(shown):
            return [f"{at}: shown {shown!r}, got {actual!r}"]
        return [
            m
            for i, (s, a) in enumerate(zip(shown, actual, strict=True))
            for m in mismatches(s, a, f"{at}[{i}]")
        ]
    if isinstance(shown, bool) or not isinstance(shown, int | float):
        same = type(shown) is type(actual) and shown == actual  # True is not 1
        return [] if same else [f"{at}: shown {shown!r}, got {actual!r}"]
    if isinstance(actual, bool) or not isinstance(actual, int | float):
        return [f"{at}: shown {shown!r}, got {actual!r}"]
    ok = math.isclose(shown, actual, rel_tol=REL_TOL, abs_tol=ABS_TOL)
    return [] if ok else [f"{at}: shown {shown!r}, got {actual!r}"]
