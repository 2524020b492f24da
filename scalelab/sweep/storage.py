"""Where a sweep's Optuna studies live, and how the trials of a dead worker are noticed.

Storage URLs:

- ``journal:PATH`` (default ``journal:<workspace>/optuna-journal.log``): Optuna's journal file,
  safe for several worker processes on one machine (appends under a file lock).
- ``sqlite:///PATH``: Optuna's RDB storage on SQLite, for one worker process.
- ``postgresql://USER@HOST:PORT/DB`` (or any SQLAlchemy URL): Optuna's RDB storage on a
  server, for workers on several machines.

Every storage records a heartbeat per running trial. A trial whose heartbeat is older than the
grace period is failed by whichever worker looks next (``optuna.storages.fail_stale_trials``),
and ``RetryHeartbeatStaleTrialCallback`` puts a copy of it, with the same parameters and slot,
back in the queue. ``RDBStorage`` has heartbeats built in; the journal storage of Optuna 5.0 has
none, so ``JournalHeartbeatStorage`` adds them as a trial system attribute.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

if TYPE_CHECKING:
    from scalelab.sweep.spec import HeartbeatSpec
    from scalelab.workspace import Workspace

JOURNAL_PREFIX = "journal:"
# The storage URL for commands given no --storage; how a coordinator hands a URL holding a
# password to its workers without putting it on their command lines.
STORAGE_ENV = "SCALELAB_STORAGE"
HEARTBEAT_ATTR = "scalelab:heartbeat"  # unix time of the trial's last heartbeat


@contextlib.contextmanager
def heartbeat_features() -> Iterator[None]:
    """Call Optuna's heartbeat features without their ``ExperimentalWarning``.

    Heartbeats, ``fail_stale_trials`` and the retry callback are marked experimental in
    Optuna 5.0; they are exactly what a sweep needs, so the warning is noise to a user. Only
    that category is ignored, and only inside the block.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        yield


class StorageUnavailable(ValueError):
    """The storage URL names a database that cannot be reached or opened."""


class JournalTorn(StorageUnavailable):
    """The journal file ends in (or contains) a record cut short by a crash or a full disk."""


def _first_bad_record(path: Path) -> tuple[int, int] | None:
    """``(line number, byte offset)`` of the first incomplete or unreadable record, or None."""
    import json

    offset = 0
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            if not line.endswith(b"\n"):
                return number, offset
            try:
                json.loads(line)
            except ValueError:
                return number, offset
            offset += len(line)
    return None


def check_journal(path: Path) -> None:
    """Refuse a journal Optuna would misread: a directory, or a torn or corrupt record.

    Optuna skips a torn last line silently (stale state) and its next append glues onto it,
    after which every read fails with a bare JSON error; so it is caught here, under the
    journal's lock (a writer mid-append is not mistaken for a tear).
    """
    from optuna.storages.journal import JournalFileSymlinkLock
    from optuna.storages.journal._file import get_lock_file

    if path.is_dir():
        raise StorageUnavailable(f"journal:{path} is a directory; give a file path")
    if not path.is_file() or path.stat().st_size == 0:
        return
    with get_lock_file(JournalFileSymlinkLock(str(path))):
        bad = _first_bad_record(path)
    if bad is not None:
        line, offset = bad
        size = path.stat().st_size
        raise JournalTorn(
            f"the Optuna journal {path} is torn at line {line} (byte {offset} of {size}: a crash "
            "or a full disk cut a record short); `scalelab sweep repair "
            f"{path}` keeps the {line - 1} complete records before it and a backup of the file"
        )


def repair_journal(path: Path) -> tuple[int, Path] | None:
    """Cut the journal at its first bad record, after copying it whole to ``PATH.torn-<time>``.

    Returns ``(records kept, backup path)``, or None when the journal is sound. Trials whose
    records were cut are re-queued by the next ``sweep run`` (their slots are missing).
    """
    import shutil

    from optuna.storages.journal import JournalFileSymlinkLock
    from optuna.storages.journal._file import get_lock_file

    if not path.is_file():
        raise ValueError(f"no journal file at {path}")
    with get_lock_file(JournalFileSymlinkLock(str(path))):
        bad = _first_bad_record(path)
        if bad is None:
            return None
        backup = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.copy2(path, backup)
        with open(path, "r+b") as f:
            f.truncate(bad[1])
            f.flush()
            os.fsync(f.fileno())
    return bad[0] - 1, backup


class SafeJournalFileBackend(JournalFileBackend):
    """Optuna's journal file that never appends onto a torn tail, and undoes its own partial
    write when the disk fills (so a full disk leaves the journal as it was)."""

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        import json

        from optuna.storages.journal._file import get_lock_file

        data = ("\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n").encode()
        with get_lock_file(self._lock):
            # Raw descriptor writes: a buffered file would retry its buffer on close.
            fd = os.open(self._file_path, os.O_RDWR)
            try:
                end = os.lseek(fd, 0, os.SEEK_END)
                if end and os.pread(fd, 1, end - 1) != b"\n":
                    raise JournalTorn(
                        f"the Optuna journal {self._file_path} ends in a torn record; nothing "
                        f"was appended. `scalelab sweep repair {self._file_path}` cuts it off"
                    )
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    os.fsync(fd)
                except OSError:
                    os.ftruncate(fd, end)
                    raise
            finally:
                os.close(fd)


def default_storage_url(workspace: Workspace) -> str:
    """The workspace's journal file: one store for one or several local workers, so a sweep
    started with one worker resumes with several (and back) in the same studies."""
    return f"{JOURNAL_PREFIX}{workspace.root / 'optuna-journal.log'}"


def journal_path(url: str) -> Path:
    """The file of a ``journal:PATH`` URL."""
    return Path(url[len(JOURNAL_PREFIX) :].removeprefix("//")).expanduser()


def storage_kind(url: str) -> str:
    """``journal``, ``sqlite`` or ``server`` (an RDB server such as PostgreSQL)."""
    if url.startswith(JOURNAL_PREFIX):
        return "journal"
    if url.startswith("sqlite"):
        return "sqlite"
    if "://" not in url:
        raise ValueError(
            f"storage {url!r} is not a storage URL: use journal:PATH, sqlite:///PATH or "
            "postgresql://USER@HOST:PORT/DB"
        )
    return "server"


def sqlalchemy_url(url: str) -> str:
    """``postgresql://`` with the driver the project installs.

    SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3; the project depends on
    psycopg2, so the URL names it unless psycopg 3 is installed.
    """
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix) and importlib.util.find_spec("psycopg") is None:
            return "postgresql+psycopg2://" + url[len(prefix) :]
    return url


def redact_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """A dumped spec as it may be stored (study attributes, the parent run's ``sweep.json``):
    its storage URL without the password."""
    if spec.get("storage"):
        return {**spec, "storage": redact(str(spec["storage"]))}
    return spec


def redact(url: str) -> str:
    """The URL without its password (``user:PASSWORD@`` or ``?password=``), for messages,
    logs and anything stored."""
    # SQLAlchemy and libpq also take the password as a query parameter.
    url = re.sub(r"([?&]password=)[^&]*", r"\1***", url, flags=re.IGNORECASE)
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in credentials else url
    return url


class JournalHeartbeatStorage(JournalStorage, BaseHeartbeat):
    """Optuna's journal storage with heartbeats, so killed workers' trials are retried.

    A heartbeat is the trial system attribute ``scalelab:heartbeat`` (unix time), one journal
    line per interval. A running trial is stale when neither its start nor its last heartbeat
    is within ``grace_period`` seconds. The journal lives on one machine, so one clock
    serves every worker.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        heartbeat_interval: int,
        grace_period: int,
        heartbeat_stale_trial_callback: Callable[[optuna.Study, FrozenTrial], None] | None,
    ) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        super().__init__(SafeJournalFileBackend(str(path)))
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self._stale_callback = heartbeat_stale_trial_callback

    def record_heartbeat(self, trial_id: int) -> None:
        # The trial may have ended (or been failed as stale) since the last beat.
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        for trial in running:
            started = trial.datetime_start.timestamp() if trial.datetime_start else 0.0
            # A retried trial inherits its predecessor's attribute: count from its own start.
            beat = max(started, float(trial.system_attrs.get(HEARTBEAT_ATTR, 0.0)))
            if now - beat > self.grace_period:
                stale.append(trial._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(
        self,
    ) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self._stale_callback


class RetryStaleTrial:
    """Re-queue a stale trial (Optuna's ``RetryHeartbeatStaleTrialCallback``), then tell the
    sweep (``on_stale``) so it can close the trial's MLflow run."""

    def __init__(
        self,
        max_retry: int,
        on_stale: Callable[[optuna.Study, FrozenTrial], None] | None = None,
    ) -> None:
        from optuna.storages import RetryHeartbeatStaleTrialCallback

        self.max_retry = max_retry
        with heartbeat_features():
            self._retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        self.on_stale = on_stale

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._retry(study, trial)
        if self.on_stale is not None:
            self.on_stale(study, trial)


def open_storage(
    url: str,
    heartbeat: HeartbeatSpec | None = None,
    on_stale: Callable[[optuna.Study, FrozenTrial], None] | None = None,
) -> BaseStorage:
    """An Optuna storage for ``url``; with ``heartbeat``, stale trials are failed and retried."""
    kind = storage_kind(url)
    hb: dict[str, Any] = {}
    if heartbeat is not None:
        hb = dict(
            heartbeat_interval=heartbeat.interval,
            grace_period=heartbeat.grace,
            heartbeat_stale_trial_callback=RetryStaleTrial(heartbeat.max_retry, on_stale),
        )
    if kind == "journal":
        path = journal_path(url)
        check_journal(path)
        if heartbeat is None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(SafeJournalFileBackend(str(path)))
        return JournalHeartbeatStorage(path, **hb)
    if kind == "sqlite":
        # Wait for the file lock rather than fail at once when a reader holds it.
        engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}}
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:":
            folder = Path(path).expanduser().parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise StorageUnavailable(
                    f"cannot create the folder {folder} of {url}: {err.strerror}"
                ) from None
            if Path(path).expanduser().is_dir():
                raise StorageUnavailable(f"{url} names a directory; give a database file")
    else:
        # Reconnect transparently after a server restart or an idle connection drop.
        engine_kwargs = {"pool_pre_ping": True}
    try:
        with heartbeat_features():  # heartbeat_interval is an experimental argument
            return RDBStorage(sqlalchemy_url(url), engine_kwargs=engine_kwargs, **hb)
    except Exception as err:  # unreachable server, bad credentials, missing driver...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise StorageUnavailable(f"cannot open the Optuna storage {redact(url)}: {first}") from err
