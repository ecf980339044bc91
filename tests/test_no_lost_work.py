"""No lost work: a worker killed mid-training is retried; a driver killed mid-sweep resumes.

Each test runs `python -m jobs.sweep` as its own process group (driver + the embedded Ray it
starts), so it can be killed whole with SIGKILL like a crashed or preempted machine. In the slow
tier (`make test-slow`).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import psutil
import pytest

from conftest import ROOT, SPECS
from study import planning
from study.spec import load_spec

pytestmark = pytest.mark.slow  # two sweeps killed and run again: about 80 s
SPEC = SPECS / "resume.yaml"
LINE = re.compile(r"advsweep trial ([0-9a-f]{12}) \((.*?)\): (training|model from the store|wrote \d+ rows|rows kept from an earlier run)")


def start(results: Path, log: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "jobs.sweep", str(SPEC), "--results", str(results), *extra],
        cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, **(env or {})},
    )


def wait_for(condition, timeout: float, proc: subprocess.Popen, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        assert proc.poll() is None, f"the sweep ended before {what}"
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the driver and everything it started (its Ray included), then check none is left."""
    members = [p for p in psutil.process_iter(["pid"]) if _pgid(p.pid) == proc.pid]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    psutil.wait_procs(members, timeout=30)
    assert not [p for p in psutil.process_iter(["pid"]) if _pgid(p.pid) == proc.pid]


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def events(log: Path) -> list[tuple[str, str]]:
    """(trial_id, phase) for every trial log line, in order."""
    return [(m.group(1), m.group(3).split()[0]) for m in LINE.finditer(log.read_text())]


def assert_complete(results: Path) -> pl.DataFrame:
    spec = load_spec(SPEC)
    df = pl.read_parquet(results / "results.parquet")
    assert df.height == planning.expected_rows(spec) == 24
    assert df["row_key"].n_unique() == df.height
    assert df["trial_id"].n_unique() == planning.n_trials(spec)
    manifest = json.loads((results / "manifest.json").read_text())
    assert [t["status"] for t in manifest["trials"]] == ["TERMINATED"] * planning.n_trials(spec)
    return df


def test_worker_killed_mid_training_is_retried(tmp_path):
    results, log = tmp_path / "results", tmp_path / "sweep.log"
    proc = start(results, log)

    def training_trial():
        # The trial's "training" line carries the worker's pid in Ray's log prefix.
        text = log.read_text()
        for m in re.finditer(r"pid=(\d+)\S*\s+advsweep trial ([0-9a-f]{12}) \(.*?\): training", text):
            if f"advsweep trial {m.group(2)} " not in text[m.end():]:
                return int(m.group(1)), m.group(2)
        return None

    pid, victim = wait_for(training_trial, 120, proc, "a trial to start training")
    time.sleep(1.0)  # into its first epoch (two epochs take several seconds)
    assert not (results / "trials" / f"{victim}.parquet").exists()  # still training
    os.kill(pid, signal.SIGKILL)
    try:
        assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            kill_group(proc)

    df = assert_complete(results)
    seen = events(log)
    # The killed trial started training twice (the retry), and its rows are there once.
    assert seen.count((victim, "training")) == 2, seen
    assert df.filter(pl.col("trial_id") == victim).height == 4
    assert re.search(r"RayActorError|ActorDiedError|died", log.read_text())


def test_driver_killed_mid_sweep_resumes_without_rerunning_finished_trials(tmp_path, capsys):
    results, log = tmp_path / "results", tmp_path / "first.log"
    # Tune saves its experiment state at most every TUNE_GLOBAL_CHECKPOINT_S (10 s by default);
    # 1 s here so the kill lands after a save that already records finished trials.
    proc = start(results, log, env={"TUNE_GLOBAL_CHECKPOINT_S": "1"})
    experiment = results / "tune" / "resume"

    def two_finished_and_saved():
        files = sorted((results / "trials").glob("*.parquet"), key=lambda f: f.stat().st_mtime)
        states = list(experiment.glob("experiment_state-*.json"))
        if len(files) >= 2 and states and max(s.stat().st_mtime for s in states) > files[1].stat().st_mtime + 0.5:
            return files
        return None

    wait_for(two_finished_and_saved, 180, proc, "two finished trials recorded in Tune's state")
    kill_group(proc)
    # Every trial whose rows were written before the kill counts as finished, also one written
    # after Tune's last state save (its rows are kept, not computed again).
    finished = {f.stem for f in (results / "trials").glob("*.parquet")}
    stored_models = len(list((results.parent / "store" / "models").glob("*.pt")))
    assert 2 <= len(finished) < 6, "the kill must land mid-sweep"
    assert not (results / "results.parquet").exists()  # the killed driver never compacted

    resume_log = tmp_path / "resume.log"
    proc = start(results, resume_log, "--resume")
    assert proc.wait(timeout=300) == 0, resume_log.read_text()[-3000:]

    text = resume_log.read_text()
    assert "resuming" in text
    assert_complete(results)
    manifest = json.loads((results / "manifest.json").read_text())
    assert manifest["resumed"] is True
    ran = {t["trial_id"] for t in manifest["trials"] if t["this_run"]}
    all_ids = {t["trial_id"] for t in manifest["trials"]}
    assert ran == all_ids - finished  # every unfinished trial ran; no finished one did
    assert f"not rerun (rows written before the interruption): {len(finished)} trials" in text
    started = {tid for tid, phase in events(resume_log) if phase in ("training", "model")}
    assert not started & finished  # the workers' own log lines agree
    # Models saved before the kill are loaded, not trained again.
    trained_now = sum(1 for t in manifest["trials"] if t["this_run"] and t["from_store"] is False)
    assert trained_now == 6 - stored_models

    # Resuming with a different spec is refused before anything runs, naming the changed field.
    import yaml

    from jobs.sweep import main

    changed = yaml.safe_load(SPEC.read_text())
    changed["train"]["epochs"] = 3
    other = tmp_path / "changed.yaml"
    other.write_text(yaml.safe_dump(changed))
    before = sorted(p.stat().st_mtime_ns for p in results.rglob("*") if p.is_file())
    assert main([str(other), "--results", str(results), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "train.epochs differs from the interrupted sweep's spec" in err
    assert sorted(p.stat().st_mtime_ns for p in results.rglob("*") if p.is_file()) == before


def test_resume_without_an_interrupted_sweep_is_a_clear_error(tmp_path, capsys):
    from jobs.sweep import main

    code = main([str(SPEC), "--results", str(tmp_path / "results"), "--resume"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "--resume" in err and "no interrupted sweep" in err
    assert not (tmp_path / "results").exists()
