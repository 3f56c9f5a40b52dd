"""Optuna storage for sweeps: a journal file (default), SQLite or PostgreSQL, all with heartbeats.

A worker killed mid-trial leaves a RUNNING trial. Its launcher sees the death and calls
`fail_and_requeue` at once. What no launcher sees (a whole node lost) heartbeats catch: every
worker records a heartbeat per trial, and before each new trial Optuna fails trials whose
heartbeat went stale and hands them to `RetryHeartbeatStaleTrialCallback`, which re-queues them
(same parameters). RDBStorage has this built in; the journal storage gets it from
`HeartbeatJournalStorage`.
"""

from __future__ import annotations

import importlib.util
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat  # the heartbeat protocol (stable since 2.x)
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import FrozenTrial, TrialState

from cxrlab.config import first_line
from cxrlab.config.secrets import redact

JOURNAL_DIR = Path("mlruns/optuna")
RDB_SCHEMES = ("sqlite:", "postgresql", "mysql")
HEARTBEAT_ATTR = "cxrlab:heartbeat"
StaleCallback = Callable[[optuna.Study, FrozenTrial], None]


def default_storage(study_name: str) -> str:
    """The default journal file of a study: mlruns/optuna/<study>.journal."""
    return str(JOURNAL_DIR / f"{study_name}.journal")


def is_rdb(url: str) -> bool:
    """Whether `url` names a database (SQLAlchemy URL) rather than a journal file."""
    return url.startswith(RDB_SCHEMES)


def sqlalchemy_url(url: str) -> str:
    """`url` with an installed driver: SQLAlchemy 2.1 reads postgresql:// as psycopg (3), so a
    machine with only psycopg2 gets postgresql+psycopg2:// instead."""
    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None:
        if importlib.util.find_spec("psycopg2") is not None:
            return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """JournalStorage whose running trials record heartbeats, so stale ones can be re-queued."""

    def __init__(
        self, backend: JournalFileBackend, interval: int | None, grace: int | None, on_stale: StaleCallback | None
    ) -> None:
        super().__init__(backend)
        self._interval = interval
        self._grace = grace
        self._on_stale = on_stale

    def record_heartbeat(self, trial_id: int) -> None:
        """Record that the trial's worker is alive."""
        self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            # A re-queued trial inherits the old heartbeat attr: its start time counts as a beat.
            start = t.datetime_start.timestamp() if t.datetime_start else 0.0
            if now - max(float(t.system_attrs.get(HEARTBEAT_ATTR, 0.0)), start) > (self._grace or 0):
                stale.append(t._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        """Seconds between heartbeats."""
        return self._interval

    def get_heartbeat_stale_trial_callback(self) -> StaleCallback | None:
        """Called with each trial found stale (after it is marked FAIL)."""
        return self._on_stale


def _rdb_storage(url: str, attempts: int = 5, **kwargs: object) -> RDBStorage:
    """RDBStorage, retried while another process creates the same fresh database's tables
    (two nodes starting at once both try CREATE TABLE; the loser's retry finds them)."""
    import sqlalchemy.exc

    for attempt in range(attempts):
        try:
            return RDBStorage(sqlalchemy_url(url), **kwargs)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
        except sqlalchemy.exc.OperationalError as err:  # no server, refused, unknown host, bad login
            if attempt == attempts - 1:
                raise ValueError(
                    f"{redact(url)}: cannot open the study storage ({first_line(err.orig or err)}); check that the "
                    "database server runs and the host, port and database name, with the password in "
                    "~/.pgpass or PGPASSWORD"
                ) from None
            time.sleep(0.5 * 2**attempt)  # a database that is still starting: 0.5 + 1 + 2 + 4 s
    raise AssertionError("unreachable")


def open_storage(
    url: str,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    max_retry: int | None = 3,
    on_stale: StaleCallback | None = None,
) -> optuna.storages.BaseStorage:
    """An Optuna storage for a journal file path or a database URL, with stale-trial retry.

    Without `heartbeat_interval` (reading a study) no heartbeats are kept; a sweep passes its
    search.heartbeat settings. `on_stale(study, trial)` runs for every stale trial before it is
    re-queued.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats are stable
        retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)

    def stale(study: optuna.Study, trial: FrozenTrial) -> None:
        if on_stale is not None:
            on_stale(study, trial)
        retry(study, trial)

    if is_rdb(url):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return _rdb_storage(
                url, heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                heartbeat_stale_trial_callback=stale,
            )
    if "://" in url:
        raise ValueError(
            f"--storage {url!r}: use a journal file path, sqlite:///FILE or postgresql://USER@HOST/DB"
        )
    path = Path(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    return HeartbeatJournalStorage(JournalFileBackend(str(path)), heartbeat_interval, grace_period, stale)


def fail_and_requeue(study: optuna.Study, trial_id: int) -> FrozenTrial | None:
    """Mark a RUNNING trial FAIL now and hand it to the storage's stale-trial callback (the
    re-queue), as heartbeats would after the grace period; None if it had already finished."""
    storage = study._storage  # the storage's own trial-state API, as optuna's fail_stale_trials uses
    try:
        if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
            return None
    except optuna.exceptions.UpdateFinishedTrialError:
        return None  # another process finished or failed it first
    failed = storage.get_trial(trial_id)
    callback = storage.get_heartbeat_stale_trial_callback() if isinstance(storage, BaseHeartbeat) else None
    if callback is not None:
        callback(study, failed)
    return failed
