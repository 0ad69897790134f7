"""The small Dockerfile reader the deployment tests rely on (tests/deploy/dockerfile.py)."""

from __future__ import annotations

import pytest

from tests.conftest import REPO_ROOT
from tests.deploy import dockerfile as D
from tests.deploy import rehearsal as R

SAMPLE = """\
# syntax=docker/dockerfile:1
ARG BASE=python:3.11-slim
FROM ${BASE} AS build
ENV A=1 \\
    B="two words" \\
    # a comment inside a continuation is dropped
    PATH=/opt/x/bin:$PATH
WORKDIR /src
COPY a.txt b/ ./
RUN --mount=type=cache,target=/root/.cache \\
    echo hi
FROM ${BASE}
ARG BASE
ARG V=0.1
ENV C=${V:-none} D=${MISSING:-dflt} E=$V
WORKDIR /app
WORKDIR sub
COPY --from=build --chmod=0755 /src/a.txt /usr/local/bin/a
USER 10:20
CMD ["run", "--flag"]
"""


@pytest.fixture
def parsed(tmp_path):
    path = tmp_path / "Dockerfile"
    path.write_text(SAMPLE)
    return D.parse(path)


def test_stages_args_and_env(parsed):
    build, final = parsed.stages
    assert (build.name, build.base, final.name, final.base) == (
        "build",
        "python:3.11-slim",
        None,
        "python:3.11-slim",
    )
    assert build.env["A"] == "1" and build.env["B"] == "two words"
    assert build.env["PATH"] == "/opt/x/bin:" + D.DOCKER_DEFAULT_PATH
    assert (final.env["C"], final.env["D"], final.env["E"]) == ("0.1", "dflt", "0.1")
    assert final.args["BASE"] == "python:3.11-slim"
    assert (final.workdir, final.user) == ("/app/sub", "10:20")
    assert final.one("CMD").exec_form() == ["run", "--flag"]


def test_run_flags_and_copies(parsed):
    build, final = parsed.stages
    (run,) = build.all("RUN")
    assert run.flags == {"mount": "type=cache,target=/root/.cache"} and run.args == "echo hi"
    (c1,) = D.copies(build)
    assert (c1.sources, c1.dest) == (["a.txt", "b/"], "/src/")
    (c2,) = D.copies(final)
    assert (c2.from_stage, c2.chmod, c2.sources, c2.dest) == (
        "build",
        "0755",
        ["/src/a.txt"],
        "/usr/local/bin/a",
    )


def test_unsupported_syntax_is_an_error(tmp_path):
    path = tmp_path / "Dockerfile"
    path.write_text("RUN echo before from\n")
    with pytest.raises(ValueError):
        D.parse(path)
    path.write_text("FROM x\nADD https://example.invalid/f /f\n")
    with pytest.raises(ValueError):
        D.copies(D.parse(path).final)


def _serve_with(tmp_path, old: str, new: str) -> D.Dockerfile:
    text = (REPO_ROOT / "Dockerfile.serve").read_text()
    assert old in text
    path = tmp_path / "Dockerfile.serve"
    path.write_text(text.replace(old, new))
    return D.parse(path)


def test_the_real_serving_dockerfile_is_fully_replayable():
    assert R.check_replayable(D.parse(REPO_ROOT / "Dockerfile.serve")) == "/opt/venv"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("groupadd --system", "apt-get install -y curl && groupadd --system", "not replayed"),
        ("USER 10001:10001", "USER dlqr", "numeric"),
        (
            "COPY --from=builder /opt/venv /opt/venv",
            "COPY --from=builder /opt/venv /usr/venv",
            "only `COPY --from",
        ),
        ("EXPOSE 8000", "EXPOSE 8000\nVOLUME /data", "not replayed"),
        ('CMD ["gunicorn",', 'RUN true\nCMD ["gunicorn",', "not replayed"),
    ],
)
def test_steps_the_rehearsal_cannot_replay_fail_loudly(tmp_path, old, new, message):
    """A new Dockerfile step must be taught to the rehearsal, never silently skipped."""
    with pytest.raises(R.RehearsalError, match=message):
        R.check_replayable(_serve_with(tmp_path, old, new))
