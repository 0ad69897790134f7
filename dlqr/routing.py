"""Routing state of one model: which version is ``stable``, and the optional canary and shadow.

Each model directory of the repository holds::

    artifacts/<model>/routing.json     the routing (this module's schema), replaced atomically
    artifacts/<model>/history.jsonl    one JSON line per change, append-only
    artifacts/<model>/.routing.lock    the writers' lock (flock); never read by the server

``routing.json`` is small and validated by :class:`Routing`: ``stable`` is required; ``canary``
(a version answering ``percent`` % of the requests) and ``shadow`` (a version scoring a sampled
``percent`` % of the requests after the answer is sent) are optional. A writer replaces the
file with a temporary sibling + fsync + rename, so a reader (every server worker, on every
replica sharing the volume) sees either the old or the new file, never half of one.

Writers serialise on an ``fcntl.flock`` of the lock file, taken without waiting: a second
writer gets :class:`RoutingLocked` at once instead of queueing behind a person at a prompt.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dlqr.repository import VERSION_PATTERN

ROUTING_FILE = "routing.json"
HISTORY_FILE = "history.jsonl"
LOCK_FILE = ".routing.lock"
#: Version of the routing file's layout.
ROUTING_FORMAT = 1


class RoutingError(ValueError):
    """A routing file is unreadable, malformed, or names a version that is not there."""


class RoutingLocked(RoutingError):
    """Another writer holds the model's routing lock."""


def _check_version(value: str) -> str:
    if not VERSION_PATTERN.match(value):
        raise ValueError(f"{value!r} is not a version name")
    return value


class Split(BaseModel):
    """A version and the percent of requests it takes (canary) or samples (shadow)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str
    percent: float = Field(gt=0, le=100)

    @field_validator("version")
    @classmethod
    def _version_name(cls, value: str) -> str:
        return _check_version(value)


class Routing(BaseModel):
    """The routing of one model (``routing.json``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: int = ROUTING_FORMAT
    stable: str
    canary: Split | None = None
    shadow: Split | None = None
    #: The stable before the last promote (what ``rollback`` returns to).
    previous_stable: str | None = None

    @field_validator("stable", "previous_stable")
    @classmethod
    def _version_name(cls, value: str | None) -> str | None:
        return value if value is None else _check_version(value)

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: int) -> int:
        if value != ROUTING_FORMAT:
            raise ValueError(f"unknown routing format {value} (this code reads {ROUTING_FORMAT})")
        return value

    @model_validator(mode="after")
    def _distinct(self) -> Routing:
        if self.canary is not None and self.canary.version == self.stable:
            raise ValueError(f"canary version {self.stable} is the stable version")
        if self.shadow is not None and self.shadow.version == self.stable:
            raise ValueError(f"shadow version {self.stable} is the stable version")
        return self

    def versions(self) -> tuple[str, ...]:
        """Every version this routing serves or scores: stable, then canary, then shadow."""
        out = [self.stable]
        for split in (self.canary, self.shadow):
            if split is not None and split.version not in out:
                out.append(split.version)
        return tuple(out)

    def missing(self, available: Iterable[str]) -> list[str]:
        """The versions named here that are not in ``available``."""
        have = set(available)
        return [v for v in self.versions() if v not in have]

    def describe(self) -> dict[str, Any]:
        """JSON view without defaults that carry nothing (for /models, logs and the CLI)."""
        return self.model_dump(exclude_none=True, exclude={"format"})


def first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in err["loc"]) or "routing"
    return f"{where}: {str(err['msg']).removeprefix('Value error, ')}"


def parse(text: str | bytes) -> Routing:
    """Parse and validate a routing document; raise :class:`RoutingError` with the first problem."""
    try:
        data = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RoutingError(f"not JSON: {exc}") from None
    try:
        return Routing.model_validate(data)
    except ValidationError as exc:
        raise RoutingError(first_error(exc)) from None


def routing_path(model_dir: Path | str) -> Path:
    return Path(model_dir) / ROUTING_FILE


def read(model_dir: Path | str) -> Routing | None:
    """The model's routing, or None when it has no routing file; RoutingError when malformed."""
    path = routing_path(model_dir)
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RoutingError(f"{path.name}: cannot read: {exc}") from None
    try:
        return parse(text)
    except RoutingError as exc:
        raise RoutingError(f"{path.name}: {exc}") from None


def file_key(model_dir: Path | str) -> tuple:
    """Cheap identity of the routing file (inode, mtime, size); () when absent."""
    try:
        st = routing_path(model_dir).stat()
    except OSError:
        return ()
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write(model_dir: Path | str, routing: Routing) -> Path:
    """Replace the routing file atomically: temporary sibling, fsync, rename, fsync the directory."""
    model_dir = Path(model_dir)
    text = json.dumps(routing.model_dump(exclude_none=True), indent=2, sort_keys=True) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{ROUTING_FILE}.tmp-", dir=model_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; servers may run as another user
        os.replace(tmp, routing_path(model_dir))
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(model_dir)
    return routing_path(model_dir)


def current_user() -> str:
    """Who is making a change (the login name, or the uid where there is none)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def history_entry(
    action: str,
    before: Routing | None,
    after: Routing | None,
    reason: str | None = None,
    evidence: Any = None,
    *,
    forced: bool = False,
    user: str | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """One history line: time, user, action, from and to, reason, the gate's evidence."""
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if now is None else now)),
        "user": user or current_user(),
        "action": action,
        "from": before.describe() if before is not None else None,
        "to": after.describe() if after is not None else None,
        "reason": reason,
        "forced": forced,
        "evidence": evidence,
    }


def append_history(model_dir: Path | str, entry: dict[str, Any]) -> None:
    """Append one line to ``history.jsonl`` (O_APPEND: one write per line, then fsync)."""
    line = (json.dumps(entry, sort_keys=True, default=str) + "\n").encode("utf-8")
    fd = os.open(Path(model_dir) / HISTORY_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_history(model_dir: Path | str) -> list[dict[str, Any]]:
    """Every history line, oldest first (a line that does not parse is skipped)."""
    try:
        lines = (Path(model_dir) / HISTORY_FILE).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        with contextlib.suppress(json.JSONDecodeError):
            out.append(json.loads(line))
    return out


@contextlib.contextmanager
def writer_lock(model_dir: Path | str) -> Iterator[None]:
    """Hold the model's routing lock for a change; raise :class:`RoutingLocked` when another has it."""
    path = Path(model_dir) / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RoutingLocked(
                f"another command is changing the routing of {Path(model_dir).name} "
                f"(it holds {path}); nothing was changed: try again when it has finished"
            ) from None
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
