"""Offline scoring: ``dlqr-predict MODEL --input FILE --output FILE`` (also ``python -m serving predict ...``).

Scores a file through exactly what the server runs: the model is verified,
loaded into ONNX Runtime, self-tested and warmed up by
:class:`serving.registry.Registry` under the same version policy
(``DLQR_VERSION_POLICY``, or ``--version``) and resolved by the data plane
(:mod:`serving.dataplane`); every input is validated by the card's pydantic
schema (the same bounds and finiteness checks as ``/predict``); rows go through
the same data plane as a request, in batches. Each refusal is the same
:class:`~serving.errors.ServingError` decision a server door makes, reported as
one line.

Inputs (chosen by the path):

- ``*.csv``: a header naming exactly the card's features (API names, any order),
  one instance per line;
- ``*.jsonl`` / ``*.ndjson``: one JSON instance per line, as ``/predict`` takes it;
- a directory: every file whose type the card accepts as a raw body (PNG/JPEG for
  digit), in file-name order, decoded like ``/predict`` decodes it; other files
  (a README, notes) are skipped and counted in the summary.

Output (``*.csv`` or ``*.jsonl``, or ``--format``): one row per input in input
order with ``input`` (line number, or file name), ``version`` and the prediction
fields (list fields expanded to ``name_0..`` in CSV). A bad input is reported
with its line and field; by default the run then fails and writes nothing (the
output is a temporary file renamed into place only at the end); with
``--skip-invalid`` the other rows are scored and the bad ones carry an
``error``. A progress bar goes to stderr.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import mimetypes
import os
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from pydantic import TypeAdapter, ValidationError
from pydantic_core import from_json

from dlqr.card import ModelCard
from serving.dataplane import DataPlane, RequestInfo, invalid_instance, validate_row
from serving.errors import ServingError, cli_line

#: Errors listed before the run stops listing them (the count is still exact).
MAX_REPORTED = 20
_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
_PLAIN_NUMBERS = re.compile(r"[0-9eE.+\-,\[\]]*")


class InputError(Exception):
    """The input cannot be read at all (missing file, wrong header, unknown format)."""


@dataclass
class Batch:
    """Up to ``batch_size`` inputs: labels in order, and per input a row (n, d) or the refusal."""

    labels: list[str]
    rows: list[np.ndarray | None]
    errors: list[ServingError | None]
    #: files of a directory that are not inputs (not a media type the card takes)
    skipped: int = 0


def _invalid(detail: str) -> ServingError:
    return ServingError(422, "validation-error", detail)


# ----------------------------------------------------------------------- readers


class Scorer:
    """Turns inputs into validated rows in the card's API feature order (the card's own checks)."""

    def __init__(self, card: ModelCard, features: Sequence[str], context: dict[str, Any]):
        from serving.schemas import model_schemas

        self.card = card
        self.features = tuple(features)  # the bundle's order, what the model takes
        self.context = context
        self.adapter: TypeAdapter = model_schemas(card, 1).instance_adapter
        self.many: TypeAdapter = TypeAdapter(list[card.instance])  # type: ignore[name-defined]
        self.integer = card.input_datatype.startswith(("UINT", "INT"))

    def from_instance(self, instance: Any) -> np.ndarray:
        """A validated instance as one row in the bundle's feature order."""
        return self.card.rows([instance], self.features)[0]

    def from_values(self, values: np.ndarray) -> np.ndarray:
        """Numbers in the card's feature order -> the card's JSON instance -> validated -> one row."""
        return self.from_instance(
            validate_row(self.card, self.adapter.validate_python, values, self.context, "field")
        )


def _count_lines(path: Path) -> int:
    n = 0
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            n += block.count(b"\n")
    return n


def read_csv(path: Path, scorer: Scorer, batch_size: int) -> Iterator[Batch]:
    card = scorer.card
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise InputError(f"{path}: empty file (a header naming the features is expected)")
        header = [h.strip() for h in header]
        missing = [f for f in card.features if f not in header]
        extra = [h for h in header if h not in card.features]
        if missing or extra or len(set(header)) != len(header):
            problems = []
            if missing:
                problems.append(f"missing {', '.join(missing[:10])}" + (" ..." if len(missing) > 10 else ""))
            if extra:
                problems.append(f"unknown {', '.join(extra[:10])}" + (" ..." if len(extra) > 10 else ""))
            if len(set(header)) != len(header):
                problems.append("duplicate columns")
            raise InputError(f"{path}: line 1 (header): {'; '.join(problems)}; the {card.name} card's "
                             f"features are {', '.join(card.features[:12])}" + (" ..." if card.input_dim > 12 else ""))  # fmt: skip
        order = [header.index(f) for f in card.features]  # card order from the file's order
        width = len(header)
        parse = int if scorer.integer else float
        kind = "an integer" if scorer.integer else "a number"
        labels: list[str] = []
        texts: list[list[str]] = []
        for line, fields in enumerate(reader, start=2):
            if not fields:
                continue  # a blank line is no input
            labels.append(str(line))
            texts.append(fields)
            if len(texts) == batch_size:
                yield _csv_batch(labels, texts, width, order, parse, kind, scorer)
                labels, texts = [], []
        if texts:
            yield _csv_batch(labels, texts, width, order, parse, kind, scorer)


def _csv_batch(labels, texts, width, order, parse, kind, scorer: Scorer) -> Batch:
    card = scorer.card
    rows: list[np.ndarray | None] = []
    errors: list[ServingError | None] = []
    numbers = None
    if all(len(t) == width for t in texts):
        # Fast path: the whole batch as one JSON array, parsed in Rust by pydantic-core, when every
        # field is a plain number (only digits, sign, point, exponent). Anything else, or a value
        # JSON does not take ("1.", ".5", "+1"), falls back to per-field parsing with exact messages.
        text = "[[" + "],[".join(map(",".join, texts)) + "]]"
        if _PLAIN_NUMBERS.fullmatch(text):
            try:
                parsed = np.asarray(from_json(text))
            except ValueError:
                parsed = None
            if (
                parsed is not None
                and parsed.shape == (len(texts), width)
                and (parsed.dtype.kind == "i" or (parse is float and parsed.dtype.kind == "f"))
            ):  # an integer input with a fraction ("1.5", "2.0") takes the slow path and is refused there
                numbers = parsed[:, order]
    for i, fields in enumerate(texts):
        if numbers is not None:
            values = numbers[i]
        else:
            if len(fields) != width:
                rows.append(None)
                errors.append(_invalid(f"{len(fields)} fields, the header has {width}"))
                continue
            values, bad = [], None
            for j in order:
                try:
                    values.append(parse(fields[j].strip()))
                except ValueError:
                    bad = f"field {card.features[order.index(j)]}: {fields[j]!r} is not {kind}"
                    break
            if bad:
                rows.append(None)
                errors.append(_invalid(bad))
                continue
            values = np.asarray(values, dtype=np.float64)
        try:
            rows.append(scorer.from_values(values))
            errors.append(None)
        except ServingError as exc:
            rows.append(None)
            errors.append(exc)
    return Batch(labels, rows, errors)


def read_jsonl(path: Path, scorer: Scorer, batch_size: int) -> Iterator[Batch]:
    labels: list[str] = []
    lines: list[bytes] = []
    with open(path, "rb") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            labels.append(str(line_no))
            lines.append(line)
            if len(lines) == batch_size:
                yield _jsonl_batch(labels, lines, scorer)
                labels, lines = [], []
    if lines:
        yield _jsonl_batch(labels, lines, scorer)


def _jsonl_batch(labels: list[str], lines: list[bytes], scorer: Scorer) -> Batch:
    try:  # the whole batch in one pydantic-core pass, like a {"instances": [...]} body
        good = scorer.many.validate_json(b"[" + b",".join(line.strip() for line in lines) + b"]",
                                         context=scorer.context)  # fmt: skip
        if len(good) == len(lines):  # a line holding '{...},{...}' would add an element: checked below
            return Batch(labels, list(scorer.card.rows(good, scorer.features)), [None] * len(lines))
    except ValidationError:
        pass  # find and word the bad lines one by one
    errors: list[ServingError | None] = []
    instances: list[Any] = []
    for line in lines:  # the same one-pass parse-and-validate as a /predict body
        try:
            instances.append(scorer.adapter.validate_json(line, context=scorer.context))
            errors.append(None)
        except ValidationError as exc:
            instances.append(None)
            err = exc.errors(include_url=False)[0]
            errors.append(ServingError(400, "malformed-json", f"not valid JSON: {err['msg']}")
                          if err["type"] == "json_invalid" else invalid_instance(scorer.card, exc, "field"))  # fmt: skip
    good = [inst for inst in instances if inst is not None]
    block = iter(scorer.card.rows(good, scorer.features)) if good else iter(())
    rows = [next(block) if inst is not None else None for inst in instances]
    return Batch(labels, rows, errors)


def media_files(path: Path, card: ModelCard) -> tuple[list[Path], int]:
    """The files of a directory the card takes as a raw body, in name order, and how many others."""
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    taken = [f for f in files if (mimetypes.guess_type(f.name)[0] or "") in card.media]
    return taken, len(files) - len(taken)


def read_media_dir(path: Path, scorer: Scorer, batch_size: int) -> Iterator[Batch]:
    card = scorer.card
    if not card.media:
        raise InputError(f"{path}: a directory of files is only for models that take raw media; "
                         f"{card.name} takes CSV or JSON Lines")  # fmt: skip
    files, skipped = media_files(path, card)
    batch = Batch([], [], [], skipped)
    for f in files:
        batch.labels.append(f.name)
        decoder = card.media[mimetypes.guess_type(f.name)[0] or ""]
        try:
            batch.rows.append(decoder(f.read_bytes(), scorer.context)[0])
            batch.errors.append(None)
        except ValueError as exc:  # the decoders' errors (ImageError) carry a client message
            batch.rows.append(None)
            batch.errors.append(_invalid(f"body: {exc}"))
        if len(batch.labels) == batch_size:
            yield batch
            batch = Batch([], [], [])
    if batch.labels or batch.skipped:
        yield batch


def reader_for(path: Path) -> tuple[str, Any]:
    if path.is_dir():
        return "dir", read_media_dir
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv", read_csv
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl", read_jsonl
    raise InputError(
        f"{path}: unknown input type {suffix or '(none)'}; use .csv, .jsonl or a directory of images"
    )


# ----------------------------------------------------------------------- writers


class Writer:
    """CSV or JSON Lines rows: input, version, the prediction fields [, error]."""

    def __init__(self, fh: TextIO, fmt: str, card: ModelCard, version: str, with_error: bool):
        self.fh, self.fmt, self.version, self.with_error = fh, fmt, version, with_error
        dims = {t.key: t.dims for t in card.task.tensor_outputs()}
        self.keys = card.task.output_keys()
        self.columns = ["input", "version"]
        for key in self.keys:
            n = dims.get(key, ())
            self.columns += [f"{key}_{i}" for i in range(math.prod(n))] if n else [key]
        if with_error:
            self.columns.append("error")
        if fmt == "csv":
            self.csv = csv.writer(fh, lineterminator="\n")
            self.csv.writerow(self.columns)

    @staticmethod
    def _cell(value: Any) -> Any:
        if isinstance(value, bool):
            return "true" if value else "false"
        return value

    def write(self, label: str, pred: dict[str, Any] | None, err: ServingError | None) -> None:
        error = cli_line(err) if err is not None else None
        if self.fmt == "jsonl":
            rec: dict[str, Any] = {"input": label, "version": self.version, **(pred or {})}
            if self.with_error:
                rec["error"] = error
            self.fh.write(_encode(rec) + "\n")
            return
        cells: list[Any] = [label, self.version]
        for key in self.keys:
            value = pred.get(key) if pred else None
            if isinstance(value, list):
                cells += [self._cell(v) for v in value]
            elif pred is None and self.columns[len(cells)].startswith(f"{key}_"):
                cells += [""] * sum(1 for c in self.columns if c.startswith(f"{key}_"))
            else:
                cells.append("" if value is None else self._cell(value))
        if self.with_error:
            cells.append(error or "")
        self.csv.writerow(cells)


# ----------------------------------------------------------------------- progress


class Progress:
    """A one-line progress bar on stderr (redrawn at most 10 times a second on a terminal)."""

    def __init__(self, label: str, total: int | None, enabled: bool):
        self.label, self.total, self.enabled = label, total, enabled
        self.tty = sys.stderr.isatty()
        self.start = time.perf_counter()
        self.last = 0.0
        self.done = 0

    def update(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if self.enabled and self.tty and now - self.last >= 0.1:
            self.last = now
            sys.stderr.write("\r" + self.line(now))
            sys.stderr.flush()

    def line(self, now: float) -> str:
        rate = self.done / max(now - self.start, 1e-9)
        if self.total:
            frac = min(self.done / self.total, 1.0)
            bar = "#" * int(frac * 30)
            return f"{self.label} [{bar:<30}] {self.done:,}/{self.total:,} ({frac:.0%}) {rate:,.0f} rows/s"
        return f"{self.label} {self.done:,} rows {rate:,.0f} rows/s"

    def close(self) -> float:
        seconds = time.perf_counter() - self.start
        if self.enabled:
            sys.stderr.write(("\r" if self.tty else "") + self.line(time.perf_counter()) + "\n")
            sys.stderr.flush()
        return seconds


# --------------------------------------------------------------------------- run


@dataclass
class Result:
    rows: int
    scored: int
    invalid: int
    seconds: float
    version: str
    errors: list[str]
    #: files of an input directory that are not of a media type the model takes (not inputs)
    skipped: int = 0
    #: (status, type slug) -> inputs refused with that decision (the same decisions as the server's)
    refusals: dict[tuple[int, str], int] = field(default_factory=dict)
    #: CPU time of this process while scoring (what "one core" costs, whatever else the machine runs).
    cpu_seconds: float = float("nan")

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else float("nan")

    @property
    def rows_per_cpu_second(self) -> float:
        return self.rows / self.cpu_seconds if self.cpu_seconds else float("nan")


def load(model: str, artifacts: Path | None = None, version: str | None = None):
    """The model as the server would serve it (verified, self-tested, warmed up) and the decoding
    context; ServingError when the data plane refuses it (unknown version: 404, not served: 503)."""
    from dlqr import card as cards
    from dlqr import repository
    from serving.registry import Registry
    from serving.schemas import model_schemas
    from serving.settings import Settings

    settings = Settings.from_env(**({"artifacts_dir": artifacts} if artifacts else {}))
    card = cards.get(model)
    policy = settings.policy
    if version:
        policy = repository.Policy(policy.default, ((model, version),))
    reg = Registry(settings.artifacts_dir, {model: model_schemas(card, 1).instance_adapter.validate_python},
                   names=(model,), intra_op_threads=settings.ort_threads, policy=policy)  # fmt: skip
    reg.load_all()
    loaded = DataPlane(reg).resolve(model, RequestInfo("offline", version or None))
    return loaded, {"max_image_pixels": settings.max_image_pixels}


def score(
    model: Any,
    context: dict[str, Any],
    input_path: Path,
    output_path: Path,
    *,
    fmt: str | None = None,
    batch_size: int = 1024,
    skip_invalid: bool = False,
    progress: bool = True,
    plane: DataPlane | None = None,
) -> Result:
    """Score ``input_path`` into ``output_path`` (atomically); see the module docstring."""
    card = model.card
    plane = plane or DataPlane()
    kind, reader = reader_for(input_path)
    fmt = fmt or ("csv" if output_path.suffix.lower() == ".csv" else "jsonl" if output_path.suffix.lower()
                  in (".jsonl", ".ndjson", ".json") else None)  # fmt: skip
    if fmt not in ("csv", "jsonl"):
        raise InputError(f"{output_path}: output must end in .csv or .jsonl (or pass --format)")
    if kind == "dir":
        total = len(media_files(input_path, card)[0]) if card.media else 0
    else:
        total = max(_count_lines(input_path) - (1 if kind == "csv" else 0), 0)
    scorer = Scorer(card, model.features, context)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{output_path.name}.tmp-", dir=output_path.parent)
    bar = Progress(f"{card.name} {model.version}", total, progress)
    cpu0 = time.process_time()
    n = scored = skipped = 0
    errors: list[str] = []
    n_errors = 0
    refusals: Counter[tuple[int, str]] = Counter()

    def refuse(batch: Batch, i: int, err: ServingError) -> None:
        nonlocal n_errors
        batch.errors[i] = err
        n_errors += 1
        refusals[err.status, err.slug] += 1
        if len(errors) < MAX_REPORTED:
            errors.append(cli_line(err, f"{input_path.name}:{batch.labels[i]}"))

    try:
        with open(fd, "w", encoding="utf-8", newline="") as fh:
            writer = Writer(fh, fmt, card, model.version, skip_invalid)
            for batch in reader(input_path, scorer, batch_size):
                n += len(batch.labels)
                skipped += batch.skipped
                good = [i for i, r in enumerate(batch.rows) if r is not None]
                for i, err in enumerate(batch.errors):
                    if err is not None:
                        refuse(batch, i, err)
                preds: dict[int, dict[str, Any]] = {}
                if good and (skip_invalid or n_errors == 0):
                    raw = np.stack([batch.rows[i] for i in good])
                    pred = plane.predict(model, raw, RequestInfo("offline"), per_row=True)
                    for j, i in enumerate(good):
                        if j in pred.row_errors:
                            refuse(batch, i, pred.row_errors[j])
                        else:
                            preds[i] = pred.predictions[j]
                if skip_invalid or n_errors == 0:
                    for i, label in enumerate(batch.labels):
                        writer.write(label, preds.get(i), batch.errors[i])
                    scored += len(preds)
                bar.update(len(batch.labels))
            if n_errors and not skip_invalid:
                raise InvalidRows(errors, n_errors, n, dict(refusals))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, output_path)
    except BaseException:
        bar.close()
        Path(tmp).unlink(missing_ok=True)
        raise
    seconds = bar.close()
    return Result(n, scored, n_errors, seconds, model.version, errors, skipped, dict(refusals),
                  time.process_time() - cpu0)  # fmt: skip


class InvalidRows(Exception):
    """Bad inputs without --skip-invalid: nothing was written."""

    def __init__(self, errors: list[str], count: int, total: int, refusals: dict[tuple[int, str], int]):
        super().__init__(f"{count} of {total} inputs are invalid")
        self.errors, self.count, self.total, self.refusals = errors, count, total, refusals


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="dlqr-predict",
        description="Score a file offline: dlqr-predict MODEL --input FILE --output FILE "
        "(also: dlqr-predict predict MODEL ..., python -m serving predict MODEL ...).",
    )
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "predict",
        help="score a CSV, JSON Lines file or directory of images offline",
        description=__doc__.split("\n\n")[0].split(": ", 1)[-1] if __doc__ else None,
    )
    from dlqr.card import names

    p.add_argument("model", choices=names())
    p.add_argument(
        "--input", "-i", type=Path, required=True, help="a .csv, .jsonl file or a directory of images"
    )
    p.add_argument(
        "--output", "-o", type=Path, required=True, help="a .csv or .jsonl file (written atomically)"
    )
    p.add_argument(
        "--format", choices=("csv", "jsonl"), help="output format (default: from --output's suffix)"
    )
    p.add_argument(
        "--artifacts", type=Path, help="model repository (default: DLQR_ARTIFACTS_DIR, else artifacts/)"
    )
    p.add_argument(
        "--version", help="score with this version (default: DLQR_VERSION_POLICY, i.e. the latest)"
    )
    p.add_argument(
        "--batch-size", type=int, default=1024, help="rows per ONNX Runtime call (default: %(default)s)"
    )
    p.add_argument(
        "--skip-invalid", action="store_true", help="score the valid rows; bad ones get an error column"
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    return ap


def command_line(argv: list[str]) -> list[str]:
    """``MODEL ...`` as ``predict MODEL ...``: ``dlqr-predict wine -i ...`` is the documented form,
    ``dlqr-predict predict wine -i ...`` (and ``python -m serving predict wine ...``) still work."""
    from dlqr.card import names

    return ["predict", *argv] if argv and argv[0] in names() else argv


def main(argv: list[str] | None = None) -> int:
    from serving.runtime import prepare_process_env
    from serving.settings import SettingsError

    prepare_process_env()
    args = build_parser().parse_args(command_line(sys.argv[1:] if argv is None else list(argv)))
    if args.batch_size < 1:
        print("error: --batch-size must be at least 1", file=sys.stderr)
        return 2
    try:
        model, context = load(args.model, args.artifacts, args.version)
        res = score(model, context, args.input, args.output, fmt=args.format, batch_size=args.batch_size,
                    skip_invalid=args.skip_invalid, progress=not args.quiet)  # fmt: skip
    except InvalidRows as exc:
        for line in exc.errors:
            print(f"invalid: {line}", file=sys.stderr)
        more = f" (first {len(exc.errors)} shown)" if exc.count > len(exc.errors) else ""
        print(f"error: {exc.count} of {exc.total} inputs are invalid{more}; nothing was written to {args.output} "
              "(--skip-invalid scores the others)", file=sys.stderr)  # fmt: skip
        return 1
    except ServingError as exc:  # the data plane refused the model or version
        print(f"error: {cli_line(exc)}", file=sys.stderr)
        return 2
    except (InputError, SettingsError, OSError, UnicodeDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in res.errors:
        print(f"invalid: {line}", file=sys.stderr)
    if res.skipped:
        print(f"skipped: {res.skipped:,} files in {args.input} are not {' or '.join(model.card.media)}",
              file=sys.stderr)  # fmt: skip
    print(
        f"{args.model} {res.version}: {res.scored:,} of {res.rows:,} inputs scored, {res.invalid:,} invalid, "
        + (f"{res.skipped:,} files skipped, " if res.skipped else "")
        + f"{res.seconds:.2f} s ({res.rows_per_second:,.0f} rows/s, {res.rows_per_cpu_second:,.0f} rows per CPU "
        f"second) -> {args.output}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
