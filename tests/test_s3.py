"""Results and the model store on S3: a real S3-protocol server (moto) on 127.0.0.1.

The sweep runs as its own process with its own Ray, as on a cluster node: it, its trials and
Tune find the endpoint in AWS_ENDPOINT_URL like any AWS SDK, and the URIs are plain s3://.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import polars as pl
import pyarrow.fs as pafs
import pytest

from conftest import ROOT
from study import planning
from study.spec import load_spec

SPEC = ROOT / "search_spaces" / "goodfellow-logreg.yaml"
BUCKET = "advsweep-test"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    # moto accepts any key; these are placeholders, not credentials.
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "moto", "AWS_SECRET_ACCESS_KEY": "moto", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import boto3

    boto3.client("s3").create_bucket(Bucket=BUCKET)
    yield env
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()


def sweep(results: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jobs.sweep", str(SPEC), "--results", results, *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )


def listing(uri: str) -> list[str]:
    fs, path = pafs.FileSystem.from_uri(uri)
    return sorted(f.path[len(path) + 1 :] for f in fs.get_file_info(pafs.FileSelector(path, recursive=True)) if f.type == pafs.FileType.File)


@pytest.fixture(scope="module")
def s3_sweep(s3):
    results = f"s3://{BUCKET}/studies/goodfellow"
    done = sweep(results)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return results, done.stdout


def test_sweep_writes_results_store_and_tune_state_to_s3(s3_sweep):
    results, out = s3_sweep
    spec = load_spec(SPEC)
    files = listing(results)
    assert {"results.parquet", "manifest.json", "spec.json"} <= set(files)
    assert sum(f.startswith("trials/") and f.endswith(".parquet") for f in files) == planning.n_trials(spec)
    assert any(f.startswith("tune/goodfellow-logreg/experiment_state") for f in files)
    assert not [f for f in files if ".tmp-" in f]
    models = listing(f"s3://{BUCKET}/studies/store")  # the store defaults to a sibling of the results
    assert len([m for m in models if m.startswith("models/") and m.endswith(".pt")]) == planning.n_trials(spec)
    assert len([m for m in models if m.startswith("evals/units/") and m.endswith(".zip")]) == planning.n_trials(spec) * len(spec.evaluate)
    assert len([m for m in models if m.startswith("refs/")]) == 1
    assert f"results: {BUCKET}/studies/goodfellow/results.parquet" in out


def test_analysis_load_reads_s3_results_back(s3_sweep):
    from analysis.load import load, read_manifest

    results, _ = s3_sweep
    spec = load_spec(SPEC)
    df = load(results).collect()
    assert df.height == planning.expected_rows(spec)
    assert df["row_key"].n_unique() == df.height
    fgsm = df.filter(pl.col("attack") == "fgsm", pl.col("eps") == 0.25)
    assert (1 - fgsm["robust_acc"] >= 0.9).all()  # the same numbers as a local run (test_sweep)
    manifest = read_manifest(results)
    assert manifest["rows"] == df.height and {t["status"] for t in manifest["trials"]} == {"TERMINATED"}


@pytest.mark.slow  # a second whole sweep process
def test_second_sweep_loads_models_from_the_s3_store(s3_sweep):
    results, _ = s3_sweep
    again = sweep(results)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "models: 0 trained, 2 from the store" in again.stdout
    assert again.stdout.count(f"{len(load_spec(SPEC).evaluate)} entries from the store, 0 computed") == 2


def test_notebook_reads_s3_results(s3_sweep, monkeypatch):
    from test_analysis_notebook import run_notebook
    from analysis.load import load

    results, _ = s3_sweep
    cells = run_notebook(results, monkeypatch)  # the kernel inherits AWS_ENDPOINT_URL too
    first = "".join(o.get("data", {}).get("text/plain", "") for o in cells[0].outputs)
    labels = load(results).collect()["label"].unique().to_list()
    assert labels and all(label in first for label in labels)  # the notebook read these rows
