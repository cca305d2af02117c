"""Job records: one per job, from GNU parallel's joblog and the transport's captures."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["CSV_FIELDS", "JobRecord", "JoblogReader", "csv_row", "record_from_json",
           "record_json", "records_frame"]


@dataclass(frozen=True)
class JobRecord:
    """What happened to one job."""

    seq: int
    inputs: tuple[str, ...] | None
    worker: str
    start: datetime
    runtime: float
    exit_code: int
    signal: int
    stdout: str
    stderr: str
    command: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.signal == 0


# records.csv of `womm finish` (an --async task's download): Run.df's columns, without the
# outputs (they are files of their own).
CSV_FIELDS = tuple(f.name for f in fields(JobRecord) if f.name not in ("stdout", "stderr"))


def record_json(record: JobRecord) -> dict[str, Any]:
    """A record as JSON values (the --async leader's output lines, ``records.json``)."""
    row = asdict(record)
    row["start"] = record.start.isoformat()
    row["inputs"] = list(record.inputs) if record.inputs is not None else None
    return row


def record_from_json(row: Any) -> JobRecord:
    """The record :func:`record_json` made, checked (it came back from the cluster).

    Raises
    ------
    ValueError
        naming the field that is missing or of the wrong type; ``seq`` must be a job number
        (it names the record's files).
    """
    if not isinstance(row, Mapping):
        raise ValueError(f"a record is not a JSON object: {str(row)[:80]}")
    seq = row.get("seq")
    if type(seq) is not int or seq < 0:
        raise ValueError(f"seq {seq!r} is not a job number")
    texts = ("worker", "stdout", "stderr", "command")
    numbers = {"runtime": (int, float), "exit_code": (int,), "signal": (int,)}
    for name in texts:
        if not isinstance(row.get(name), str):
            raise ValueError(f"job {seq}: {name} is not text")
    for name, kinds in numbers.items():
        if type(row.get(name)) not in kinds:
            raise ValueError(f"job {seq}: {name} is not a number")
    inputs = row.get("inputs")
    if inputs is not None and not (isinstance(inputs, list)
                                   and all(isinstance(value, str) for value in inputs)):
        raise ValueError(f"job {seq}: inputs is not a list of text")
    try:
        start = datetime.fromisoformat(row["start"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"job {seq}: start is not an ISO time") from exc
    return JobRecord(seq=seq, inputs=tuple(inputs) if inputs is not None else None,
                     worker=row["worker"], start=start, runtime=float(row["runtime"]),
                     exit_code=row["exit_code"], signal=row["signal"], stdout=row["stdout"],
                     stderr=row["stderr"], command=row["command"])


def csv_row(record: JobRecord) -> list[Any]:
    """A record's row of ``records.csv`` (:data:`CSV_FIELDS`; inputs as a JSON list)."""
    row = record_json(record)
    return [json.dumps(row[name]) if name == "inputs" else row[name] for name in CSV_FIELDS]


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", errors="backslashreplace")
    except FileNotFoundError:
        return ""


class JoblogReader:
    """Reads GNU parallel's joblog as it grows and turns each finished job into a record.

    ``inputs_of(seq)`` gives a job's input values when womm knows them (it fed them).
    """

    def __init__(self, joblog: Path, jobs_dir: Path,
                 inputs_of: Callable[[int], tuple[str, ...] | None], offset: int = 0) -> None:
        self._joblog = joblog
        self._jobs = jobs_dir
        self._inputs_of = inputs_of
        self._offset = offset  # rows before it belong to earlier runs (--joblog +FILE)
        self._partial = b""
        self._header_seen = False

    def read_new(self) -> Iterator[JobRecord]:
        """Records of jobs that finished since the last call."""
        try:
            with open(self._joblog, "rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for raw in lines:
            fields = raw.decode("utf-8", errors="backslashreplace").split("\t", 8)
            if not self._header_seen and fields[0] == "Seq":
                self._header_seen = True
                continue
            if len(fields) < 9 or not fields[0].isdigit():
                continue
            yield self._record(fields)

    def _record(self, fields: list[str]) -> JobRecord:
        seq = int(fields[0])
        meta = _read(self._jobs / f"{seq}.meta").split("\t")
        worker = meta[0] if len(meta) > 1 else ""
        return JobRecord(seq=seq, inputs=self._inputs_of(seq), worker=worker,
                         start=datetime.fromtimestamp(float(fields[2]), tz=UTC),
                         runtime=float(fields[3]), exit_code=int(fields[6]),
                         signal=int(fields[7]), stdout=_read(self._jobs / f"{seq}.out"),
                         stderr=_read(self._jobs / f"{seq}.err"), command=fields[8])


def records_frame(records: list[JobRecord]) -> Any:
    """A pandas DataFrame with one row per job, ordered by sequence number."""
    import pandas as pd

    rows = [asdict(record) for record in sorted(records, key=lambda r: r.seq)]
    frame = pd.DataFrame(rows, columns=list(JobRecord.__dataclass_fields__))
    return frame.set_index("seq", drop=False)

