"""The cluster path end to end: a real two-node Ray cluster on this host, a study of the
quickstart's shape (tests/specs/cluster.yaml: 4 trials on 100 points) submitted with the real
CLI exactly as a user would (`ray job submit --runtime-env jobs/runtime_env.yaml --working-dir .
-- python -m jobs.sweep ...`), trials on both nodes.

Part of `make test-slow`, and alone: `make test-cluster`.

How the cluster is started, and why:

* `ray.cluster_utils.Cluster`, head + one worker node, each with `num_cpus=1` and its own temp
  dir, every address 127.0.0.1; the head runs the dashboard (the job server) on 127.0.0.1 and a
  free port. Every process gets RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: otherwise Ray turns
  127.0.0.1 into the host's routable address wherever an address is given to `ray.init` (the
  dashboard agent that starts the job, the job's driver) or `ray start`, and those connections
  hang, as nothing of this cluster listens there. (`ray start --address` cannot be used with that
  variable: it then refuses to add a second node, multi-node being "unsupported" where it is
  off; Cluster does not ask.)
* The cluster lives in a child process (this file run as a script), never in the pytest
  process: Ray's configuration (auth mode, token) is process-global, and other tests in the same
  session may hold an embedded Ray. This process only runs the `ray` CLI as subprocesses.
* Token auth (on by default for local clusters since Ray 2.59): the test writes its own random
  token to a file in its temp dir and gives every process it starts RAY_AUTH_MODE=token and
  RAY_AUTH_TOKEN_PATH=<that file>, so nothing reads or writes the user's ~/.ray/auth_token.
  The nodes pass both on to the job's driver, which joins the cluster with them.
* RAY_TMPDIR points at the same temp dir, so the "current cluster" address file Ray writes also
  stays out of the shared /tmp/ray.
* PATH starts with this interpreter's bin directory, so the job's `python` (the entry point runs
  in a shell on the head node) is the virtualenv's.

Teardown (a finalizer, so it runs on failure too): closing the child's stdin makes it call
`Cluster.shutdown()`; the test then checks that none of the cluster's processes is left (its
process tree as seen just before, anything naming its temp dir, anything carrying its marker
env var), kills any by pid if there are (and fails), and removes the temp dir.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the virtualenv's bin: python and the `ray` CLI
STUDY = "tests/specs/cluster.yaml"
STUDY_ROWS, STUDY_TRIALS = 120, 4  # 4 trials x 30 rows (`python -m jobs.sweep ... --dry-run` says so)
SHARDED = "tests/specs/cluster-shards.yaml"  # one model, its evaluation in 4 shards
START_TIMEOUT_S = 180
JOB_TIMEOUT_S = 1500

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform != "linux", reason="Linux only (/proc)")]


# --- the cluster process -------------------------------------------------------------------


def serve_cluster(base: Path, dashboard_port: int) -> None:
    """Run in the child process: start the cluster, write `cluster.json`, wait for stdin to close."""
    from ray.cluster_utils import Cluster

    # SIGTERM (the test's fallback) unwinds through `finally` like stdin closing does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    common = {"node_ip_address": "127.0.0.1", "num_cpus": 1, "num_gpus": 0}
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            **common,
            # The default temp dir under RAY_TMPDIR, where Cluster writes the current cluster's
            # address: the job server resolves its drivers' RAY_ADDRESS from the head's temp dir,
            # and without the file there it scans for any GCS on the host (which finds other
            # Rays, such as the test session's embedded one).
            "temp_dir": str(base / "ray"),
            "include_dashboard": True,
            "dashboard_host": "127.0.0.1",
            "dashboard_port": dashboard_port,
            "dashboard_agent_listen_port": None,  # a free one (the default 52365 may be taken)
        },
    )
    try:
        cluster.add_node(**common, temp_dir=str(base / "worker"))
        cluster.wait_for_nodes()
        head = cluster.head_node
        info = {
            "pid": os.getpid(),
            "dashboard": f"http://{head.webui_url}",
            "gcs_address": cluster.gcs_address,
            "node_ids": [n.node_id for n in cluster.list_all_nodes()],
            "node_ips": [n.node_ip_address for n in cluster.list_all_nodes()],
            "live_node_ids": sorted(cluster.global_state._live_node_ids()),
        }
        tmp = base / "cluster.json.tmp"
        tmp.write_text(json.dumps(info))
        tmp.rename(base / "cluster.json")
        sys.stdin.read()  # until the test closes it (or dies)
    finally:
        cluster.shutdown()


# --- helpers in the test process ---------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_table() -> dict[int, tuple[int, str, str]]:
    """pid -> (parent pid, start time, command line) of every live process (Linux /proc)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, ..., starttime
        table[int(entry.name)] = (int(fields[1]), fields[19], cmd)
    return table


def process_tree(root: int) -> set[tuple[int, str]]:
    """(pid, start time) of `root` and all its live descendants."""
    table = process_table()
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            tree.add((pid, table[pid][1]))
            todo += [p for p, (ppid, _, _) in table.items() if ppid == pid]
    return tree


def has_env(pid: int, entry: str) -> bool:
    try:
        return entry.encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def leftovers(base: Path, tree: set[tuple[int, str]], marker: str) -> dict[int, str]:
    """Live processes of this cluster: in its process tree as last seen (same pid and start
    time), or naming its temp dir on the command line (raylet, gcs_server, ...), or carrying its
    marker in the environment (workers, agents, the job's processes; Ray renames some of those,
    so their command lines say nothing)."""
    return {
        pid: cmd
        for pid, (_, start, cmd) in process_table().items()
        if pid != os.getpid() and ((pid, start) in tree or str(base) in cmd or has_env(pid, marker))
    }


class LocalCluster:
    def __init__(self, base: Path, env: dict, info: dict):
        self.base, self.env, self.info = base, env, info
        self.address = info["dashboard"]
        self.node_ids = set(info["node_ids"])

    def ray(self, *args, timeout=120, check=True) -> subprocess.CompletedProcess:
        """Run the `ray` CLI against this cluster, from the repository root."""
        proc = subprocess.run(
            [str(BIN / "ray"), *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            pytest.fail(f"`ray {' '.join(args[:2])} ...` exited {proc.returncode}:\n{proc.stdout[-8000:]}\n{proc.stderr[-4000:]}")
        return proc

    def submit(self, submission_id: str, *entrypoint: str, timeout=300) -> subprocess.CompletedProcess:
        """`ray job submit` waits for the job and streams its logs; exits non-zero if it failed."""
        return self.ray(
            "job", "submit", "--address", self.address, "--submission-id", submission_id,
            "--runtime-env", "jobs/runtime_env.yaml", "--working-dir", ".",
            "--", *entrypoint,
            timeout=timeout,
        )

    def succeeded(self, submission_id: str) -> bool:
        """`ray job status` prints "Job '<id>' succeeded" for SUCCEEDED only (colours stripped)."""
        out = self.ray("job", "status", "--address", self.address, submission_id)
        return f"Job '{submission_id}' succeeded" in re.sub(r"\x1b\[[0-9;]*m", "", out.stdout + out.stderr)

    def logs(self, submission_id: str) -> str:
        return self.ray("job", "logs", "--address", self.address, submission_id).stdout


@pytest.fixture(scope="module")
def local_cluster():
    # Short, private base dir: Ray's unix socket paths under it must stay under ~107 bytes.
    base = Path(tempfile.mkdtemp(prefix="advsweep-rc-"))
    (base / "ray").mkdir()  # RAY_TMPDIR/ray: where Ray writes the current cluster's address
    token = base / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        # Without this, every `ray.init(address="127.0.0.1:...")` (the dashboard agent's, the
        # job driver's) rewrites 127.0.0.1 to the host's routable address and hangs there.
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token),
        RAY_TMPDIR=str(base),
        RAY_USAGE_STATS_ENABLED="0",
        PYTHONUNBUFFERED="1",
        ADVSWEEP_TEST_CLUSTER=str(base),  # marks every process of this cluster (see leftovers)
    )
    marker = f"ADVSWEEP_TEST_CLUSTER={base}"
    log = open(base / "cluster.log", "w")
    child = subprocess.Popen(
        [sys.executable, __file__, str(base), str(free_port())],
        cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (base / "cluster.json").exists():
            if child.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the cluster did not start (exit {child.poll()}):\n{(base / 'cluster.log').read_text()[-5000:]}")
            time.sleep(0.5)
        yield LocalCluster(base, env, json.loads((base / "cluster.json").read_text()))
    finally:
        tree = process_tree(child.pid)  # everything the cluster runs now, renamed or not
        child.stdin.close()  # -> Cluster.shutdown() in the child
        try:
            child.wait(timeout=90)
        except subprocess.TimeoutExpired:
            child.terminate()
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        log.close()
        # Give stragglers a moment; then kill what is left, by pid, and fail.
        deadline = time.monotonic() + 30
        while (left := leftovers(base, tree, marker)) and time.monotonic() < deadline:
            time.sleep(1)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(base, ignore_errors=True)
        assert not left, f"processes left over after Cluster.shutdown(): {left}"


# --- the test ----------------------------------------------------------------------------


def test_a_study_as_a_ray_job_on_two_nodes(local_cluster, tmp_path):
    c = local_cluster
    assert len(c.node_ids) == 2, c.info
    assert set(c.info["live_node_ids"]) == c.node_ids, c.info
    assert set(c.info["node_ips"]) == {"127.0.0.1"}, c.info
    assert c.address.startswith("http://127.0.0.1:"), c.address
    print(f"cluster: {c.address}, nodes {sorted(c.node_ids)}")

    # 1. The upload: a tiny job reports on its own working dir, the unpacked package.
    probe = (
        "import json, os, sys; print('PROBE ' + json.dumps({'exe': sys.executable, 'cwd': os.getcwd(), "
        "'bytes': sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk('.') for f in fs), "
        "'paths': {p: os.path.exists(p) for p in ['.venv', 'results', 'report', '.git', "
        "'study/results.py', 'jobs/sweep.py', 'tests/specs/cluster.yaml']}}))"
    )
    out = c.submit("advsweep-probe", "python", "-c", probe)
    found = re.search(r"^PROBE (\{.*\})$", out.stdout, re.M)  # (the CLI also echoes the entry point)
    assert found, out.stdout + out.stderr
    seen = json.loads(found.group(1))
    assert seen["cwd"].startswith(str(c.base)), seen["cwd"]  # unpacked on the cluster, not the checkout
    assert seen["paths"] == {
        ".venv": False, "results": False, "report": False, ".git": False,
        "study/results.py": True, "jobs/sweep.py": True, "tests/specs/cluster.yaml": True,
    }, seen
    assert seen["bytes"] < 5 * 2**20, f"the job's working dir holds {seen['bytes']} bytes"
    assert Path(seen["exe"]).parent == BIN, f"the job's python is {seen['exe']}, not the virtualenv's"
    assert c.succeeded("advsweep-probe")

    # 2. The study itself.
    results = tmp_path / "results"
    t0 = time.monotonic()
    out = c.submit("advsweep-study", "python", "-m", "jobs.sweep", STUDY, "--results", str(results), timeout=JOB_TIMEOUT_S)
    print(f"study job: {time.monotonic() - t0:.0f}s")
    assert c.succeeded("advsweep-study")
    logs = c.logs("advsweep-study")
    assert f"rows: {STUDY_ROWS} ({STUDY_TRIALS} trials)" in logs, logs[-3000:]
    assert f"models: {STUDY_TRIALS} trained, 0 from the store" in logs, logs[-3000:]  # a fresh store

    import polars as pl

    df = pl.read_parquet(results / "results.parquet")
    assert df.height == STUDY_ROWS
    assert df["row_key"].n_unique() == STUDY_ROWS
    assert df["trial_id"].n_unique() == STUDY_TRIALS
    # Trials ran on both nodes of this cluster, and only there.
    assert set(df["node_id"].unique().to_list()) == c.node_ids, (df["node_id"].unique().to_list(), c.node_ids)


def shard_workers() -> dict[int, float]:
    """CPU seconds spent so far by each Ray worker running a shard task now (Ray titles them
    after the task while it runs)."""
    tick, out = os.sysconf("SC_CLK_TCK"), {}
    for pid, (_, _, cmd) in process_table().items():
        if cmd.startswith("ray::_shard_worker"):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            out[pid] = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return out


def test_one_model_evaluated_in_shards_on_both_nodes(local_cluster, tmp_path):
    """One model's evaluation in 4 shards gives the unsharded rows; the shards ran on both
    nodes; a shard whose worker is killed is run again, alone, and the rows stay the same."""
    import polars as pl

    c = local_cluster
    spec = yaml.safe_load((ROOT / SHARDED).read_text())
    whole = {**spec, "evaluate": [{k: v for k, v in e.items() if k != "shards"} for e in spec["evaluate"]]}
    (tmp_path / "whole.yaml").write_text(yaml.safe_dump(whole))
    c.submit("advsweep-whole", "python", "-m", "jobs.sweep", str(tmp_path / "whole.yaml"), "--results", str(tmp_path / "whole"), timeout=JOB_TIMEOUT_S)
    assert c.succeeded("advsweep-whole")

    # Sharded, on the same store (the model comes from it; --fresh: its evaluation does not).
    c.ray("job", "submit", "--no-wait", "--address", c.address, "--submission-id", "advsweep-shards",
          "--runtime-env", "jobs/runtime_env.yaml", "--working-dir", ".", "--",
          "python", "-m", "jobs.sweep", SHARDED, "--results", str(tmp_path / "shards"), "--fresh")
    deadline = time.monotonic() + START_TIMEOUT_S
    # Kill a shard worker 3 CPU seconds into its task: past taking a shard (its first act), and
    # into attacking it (its CPU time before the task is the worker's own start-up).
    first, victim = {}, None
    while victim is None:
        assert time.monotonic() < deadline, c.logs("advsweep-shards")[-3000:]
        for pid, cpu in shard_workers().items():
            first.setdefault(pid, cpu)
            victim = pid if cpu - first[pid] >= 3 else victim
        time.sleep(0.1)
    os.kill(victim, signal.SIGKILL)
    c.ray("job", "logs", "--follow", "--address", c.address, "advsweep-shards", timeout=JOB_TIMEOUT_S)
    assert c.succeeded("advsweep-shards")
    logs = c.logs("advsweep-shards")
    # (The trial's own lines, "shard 2/4 lost ...", reach the job's log only when Ray's log
    # monitor forwards them before the job ends: the shard records below are what to check.)
    assert "rows: 30 (1 trials)" in logs, logs[-3000:]

    want = pl.read_parquet(tmp_path / "whole" / "results.parquet").sort("row_key")
    got = pl.read_parquet(tmp_path / "shards" / "results.parquet").sort("row_key")
    assert got["row_key"].to_list() == want["row_key"].to_list() and got.height == 30
    for column in ("robust_acc", "broken", "success_rate", "clean_acc", "vanishing_grad", "queries_mean"):
        assert got[column].to_list() == want[column].to_list(), column
    for column in ("l2_mean", "linf_median", "adv_confidence_mean"):  # float rounding: other batches
        for a, b in zip(got[column].to_list(), want[column].to_list()):
            assert (a is None and b is None) or a == pytest.approx(b, rel=1e-5, abs=1e-7), column

    log = pl.read_parquet(next((tmp_path / "shards" / "artifacts" / "robustness_shards").glob("*.parquet")))
    done = log.filter(pl.col("outcome") == "done")
    assert set(done["node_id"]) == c.node_ids, (done["node_id"].to_list(), c.node_ids)
    lost = log.filter(pl.col("outcome") == "lost")
    assert lost.height == 1, log
    (r, s) = lost.row(0, named=True)["round"], lost.row(0, named=True)["shard"]
    again = done.filter((pl.col("round") == r) & (pl.col("shard") == s))
    assert again["attempt"].to_list() == [2] and again["runner"].to_list() == ["trial"]
    others = done.filter((pl.col("round") != r) | (pl.col("shard") != s))
    assert (others["attempt"] == 1).all() and others.group_by("round", "shard").len()["len"].max() == 1
    for _, part in done.group_by("round"):  # every round covered every shard once
        assert sorted(part["shard"].to_list()) == [0, 1, 2, 3]


if __name__ == "__main__":  # the cluster process started by the fixture
    serve_cluster(Path(sys.argv[1]), int(sys.argv[2]))
