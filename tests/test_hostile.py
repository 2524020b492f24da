"""Hostile and careless input: each case once failed (ran code, wrote outside, leaked, crashed).

Every case runs against real files. Commands run in this process (``scalelab_cli``) where what
they say and exit with is the point, and as real processes where the process is: a server, a
race, a full disk, a kill, or a launch that would start others.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from scalelab.dashboard import load_definition
from scalelab.results.row_filter import apply_filter, parse_filter
from scalelab.results.runs import read_csv_table

SHELL_QUERY = "loss > 0 and @path.__class__.exists.__globals__['os'].system('id > {marker}') == 0"


def _scalelab(*args: str, cwd: Path, home: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scalelab", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "SCALELAB_HOME": str(home), **env},
        check=False,
        timeout=300,
    )


def _runs_csv(path: Path) -> Path:
    rows = [
        {"n_params": n, "tokens": 20 * n, "loss": 2 + 1e3 / n**0.3, "outlier": n == 4e6}
        for n in (1e6, 2e6, 4e6, 8e6)
    ]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


# ---- 1. a definition's filter is data, never Python ------------------------------------------
def test_dashboard_definition_query_cannot_run_shell_commands(tmp_path: Path, scalelab_cli) -> None:
    marker = tmp_path / "pwned.txt"
    _runs_csv(tmp_path / "runs.csv")
    (tmp_path / "dashboards").mkdir()
    definition = {
        "title": "t",
        "sources": [{"csv": "../runs.csv", "query": SHELL_QUERY.format(marker=marker)}],
        "panels": ["loss_vs_params"],
    }
    (tmp_path / "dashboards" / "evil.yaml").write_text(yaml.safe_dump(definition))
    result = scalelab_cli(["dashboard", "--definition", "evil"], tmp_path / "ws", cwd=tmp_path)
    assert not marker.exists(), "the definition's query ran a shell command"
    assert result.returncode == 2, result.stderr
    assert "query" in result.stderr and "Traceback" not in result.stderr


def test_csv_query_cannot_run_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned.txt"
    csv = _runs_csv(tmp_path / "runs.csv")
    with pytest.raises(ValueError, match="bad query"):
        read_csv_table(csv, query=SHELL_QUERY.format(marker=marker))
    assert not marker.exists()


@pytest.mark.parametrize(
    "query",
    [
        "__import__('os').system('id')",
        "loss.__class__",
        "@x > 1",
        "loss > abs(-1)",
        "loss + 1 > 2",
        "loss > 1; x",
        "loss > n_params",  # a column against a column is outside the grammar
        "(loss > 1",
        "loss >",
        "",
        "loss > 1 and",
        "`a` = 1",
    ],
)
def test_filters_outside_the_grammar_are_refused(query: str) -> None:
    with pytest.raises(ValueError, match="filter"):
        parse_filter(query)


@pytest.mark.parametrize(
    ("query", "kept"),
    [
        ("n_params >= 2e6", [2e6, 4e6, 8e6]),
        ("not outlier", [1e6, 2e6, 8e6]),
        ("n_params == 1e6 or (n_params > 3e6 and not outlier)", [1e6, 8e6]),
        ("4e6 > n_params", [1e6, 2e6]),
        ("outlier == true", [4e6]),
        ("`n_params` != 1e6 and loss < 100", [2e6, 4e6, 8e6]),
    ],
)
def test_the_filter_language_selects_rows(tmp_path: Path, query: str, kept: list[float]) -> None:
    df = pd.read_csv(_runs_csv(tmp_path / "runs.csv"))
    assert apply_filter(df, query)["n_params"].tolist() == kept


def test_a_filter_naming_a_missing_column_says_which(tmp_path: Path) -> None:
    df = pd.read_csv(_runs_csv(tmp_path / "runs.csv"))
    with pytest.raises(ValueError, match="no column 'lost'"):
        apply_filter(df, "lost < 3")


def test_the_shipped_definitions_filters_parse() -> None:
    for path in (Path(__file__).resolve().parents[1] / "dashboards").glob("*.yaml"):
        for source in load_definition(path).sources:
            if source.query:
                parse_filter(source.query)


# ---- 1. a definition's output stays in the workspace ------------------------------------------
@pytest.mark.parametrize(
    "output", ["../../../../x.html", "/tmp/x.html", "sub/x.html", "..", "a\\..\\b.html"]
)
def test_definition_output_is_a_plain_file_name(tmp_path: Path, output: str) -> None:
    path = tmp_path / "d.yaml"
    path.write_text(yaml.safe_dump({"title": "t", "sources": [{"csv": "r.csv"}], "output": output}))
    with pytest.raises(ValueError, match="plain file name"):
        load_definition(path)


def test_dashboard_cli_never_writes_outside_the_workspace(tmp_path: Path, scalelab_cli) -> None:
    _runs_csv(tmp_path / "runs.csv")
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    definition = {
        "title": "t",
        "sources": [{"csv": str(tmp_path / "runs.csv")}],
        "panels": ["loss_vs_params"],
        "output": "../../../escaped.html",
    }
    (deep / "d.yaml").write_text(yaml.safe_dump(definition))
    result = scalelab_cli(["dashboard", "--definition", "d.yaml"], deep / "ws", cwd=deep)
    assert result.returncode == 2, result.stderr
    assert "output" in result.stderr
    assert not list(tmp_path.rglob("escaped.html"))


# ---- 2. database passwords stay out of ps and of everything stored ----------------------------
SECRET = "hunter2-s3cret"


def test_worker_command_lines_hold_no_password(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from scalelab.sweep.coordinator import spawn_workers
    from scalelab.workspace import Workspace

    url = f"postgresql://scalelab:{SECRET}@127.0.0.1:9/optuna"
    sweep = SimpleNamespace(name="s", url=url, workspace=Workspace.resolve(tmp_path / "ws"))
    (proc,) = spawn_workers(sweep, 1, 1)  # type: ignore[arg-type]
    try:
        argv = Path(f"/proc/{proc.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes()
        listing = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    finally:
        proc.kill()
        proc.wait()
    assert "sweep worker s" in argv
    assert SECRET not in argv and SECRET not in listing
    assert SECRET.encode() in environ  # the worker still gets it, readable by this user only


def test_stored_specs_hold_no_password(workspace) -> None:
    import json

    import mlflow
    from test_sweep import TINY

    from scalelab.data import prepare
    from scalelab.sweep.spec import parse_spec
    from scalelab.sweep.study import Sweep

    spec = parse_spec(
        {"name": "pw", **TINY, "storage": f"postgresql://u:{SECRET}@db/optuna?password={SECRET}"}
    )
    data = prepare(spec.corpus, spec.tokenizer, cache_dir=workspace.cache_dir)
    sweep = Sweep(spec, f"journal:{workspace.root / 'optuna-journal.log'}", workspace)
    sweep.ensure(data.corpus_hash)
    assert SECRET not in json.dumps(sweep.attrs)
    assert sweep.attrs["spec"]["storage"].startswith("postgresql://u:***@db/")
    client = mlflow.MlflowClient(workspace.tracking_uri)
    stored = Path(client.download_artifacts(sweep.attrs["mlflow_parent_run_id"], "sweep.json"))
    assert SECRET not in stored.read_text()
    assert SECRET not in (workspace.root / "optuna-journal.log").read_text()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:pw@h:5432/db", "postgresql://u:***@h:5432/db"),
        (
            "postgresql://u@h/db?password=pw&sslmode=require",
            "postgresql://u@h/db?password=***&sslmode=require",
        ),
        ("postgresql://u:p@ss@h/db", "postgresql://u:***@h/db"),
        ("journal:/tmp/x.log", "journal:/tmp/x.log"),
    ],
)
def test_redact_hides_every_form_of_password(url: str, shown: str) -> None:
    from scalelab.sweep.storage import redact

    assert redact(url) == shown


# ---- 3. ui beyond loopback: warned, and answers this machine's names ----------------------------
def _get(url: str, host_header: str) -> int:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers={"Host": host_header})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def test_ui_beyond_loopback_warns_and_answers_this_machines_name(tmp_path: Path) -> None:
    import signal
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "scalelab", "ui", "--host", "0.0.0.0", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "SCALELAB_HOME": str(tmp_path / "ws")},
        start_new_session=True,
    )
    try:
        warning = proc.stderr.readline()
        assert warning.startswith("warning: --host 0.0.0.0 serves every run"), warning
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if _get(base + "/health", "localhost") == 200:
                    break
            except OSError:
                time.sleep(0.5)
        api = base + "/ajax-api/2.0/mlflow/experiments/search?max_results=1"
        assert _get(api, f"{socket.gethostname()}:{port}") == 200
        assert _get(api, f"attacker.example:{port}") == 403  # DNS rebinding still refused
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# ---- 4. a torn Optuna journal: detected, never appended to, repaired by a command ----------------
FULL_DISK_WRITER = """
import os, resource, signal, sys
import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from scalelab.sweep.storage import SafeJournalFileBackend

path, safe = sys.argv[1], sys.argv[2] == "safe"
backend = (SafeJournalFileBackend if safe else JournalFileBackend)(path)
study = optuna.create_study(study_name="s", storage=JournalStorage(backend))
study.set_user_attr("kept", 1)
size = os.path.getsize(path)
# The disk fills 40 bytes into the next record: the kernel writes those, then refuses.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 40, resource.RLIM_INFINITY))
try:
    study.set_user_attr("lost", "x" * 4000)
except OSError as err:
    print("disk full:", err.strerror)
print(size)
"""


def _fill_disk(path: Path, safe: bool) -> int:
    result = subprocess.run(
        [sys.executable, "-c", FULL_DISK_WRITER, str(path), "safe" if safe else "plain"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "disk full" in result.stdout, result.stdout + result.stderr
    return int(result.stdout.split()[-1])


def test_a_torn_journal_is_refused_by_name_and_repaired_by_a_command(
    tmp_path: Path, scalelab_cli
) -> None:
    from scalelab.sweep.storage import open_storage

    journal = tmp_path / "optuna-journal.log"
    sound_size = _fill_disk(journal, safe=False)  # Optuna's own backend: leaves a torn tail
    assert journal.stat().st_size == sound_size + 40
    url = f"journal:{journal}"
    status = scalelab_cli(["sweep", "status", "s", "--storage", url], tmp_path, cwd=tmp_path)
    assert status.returncode == 2
    assert status.stderr.count("\n") == 1 and "Traceback" not in status.stderr
    assert f"journal {journal} is torn at line" in status.stderr
    assert f"scalelab sweep repair {journal}" in status.stderr
    assert journal.stat().st_size == sound_size + 40  # nothing appended onto the tear

    repair = scalelab_cli(["sweep", "repair", str(journal)], tmp_path, cwd=tmp_path)
    assert repair.returncode == 0, repair.stderr
    assert "kept" in repair.stdout
    assert journal.stat().st_size == sound_size
    (backup,) = tmp_path.glob("optuna-journal.log.torn-*")
    assert backup.stat().st_size == sound_size + 40
    storage = open_storage(url)
    assert storage.get_study_user_attrs(storage.get_study_id_from_name("s")) == {"kept": 1}
    again = scalelab_cli(["sweep", "repair", str(journal)], tmp_path, cwd=tmp_path)
    assert again.returncode == 0 and "nothing to repair" in again.stdout


def test_a_full_disk_leaves_the_journal_as_it_was(tmp_path: Path) -> None:
    from scalelab.sweep.storage import open_storage

    journal = tmp_path / "j.log"
    sound_size = _fill_disk(journal, safe=True)
    assert journal.stat().st_size == sound_size  # the partial record was taken back
    storage = open_storage(f"journal:{journal}")
    storage.set_study_user_attr(storage.get_study_id_from_name("s"), "after", 2)


def test_nothing_is_appended_onto_a_torn_tail(tmp_path: Path) -> None:
    from scalelab.sweep.storage import JournalTorn, open_storage

    journal = tmp_path / "j.log"
    storage = open_storage(f"journal:{journal}")
    study_id = storage.create_new_study([], "s")
    with open(journal, "ab") as f:
        f.write(b'{"op_code":0,"worker_id":"x","study_na')  # a writer killed mid-record
    size = journal.stat().st_size
    with pytest.raises(JournalTorn, match="torn record"):
        storage.set_study_user_attr(study_id, "a", 1)
    assert journal.stat().st_size == size


def test_journal_storage_that_is_a_directory_is_one_line(tmp_path: Path, scalelab_cli) -> None:
    url = f"journal:{tmp_path}"
    status = scalelab_cli(["sweep", "status", "s", "--storage", url], tmp_path, cwd=tmp_path)
    assert status.returncode == 2
    assert status.stderr.strip() == f"error: journal:{tmp_path} is a directory; give a file path"


# ---- 5. an MLflow store half-created by a full disk ------------------------------------------
STORE_UNDER_LIMIT = """
import resource, signal, sys
from scalelab.workspace import Workspace

root, limit, ours = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "ours"
if limit:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
ws = Workspace.resolve(root).ensure()
if ours:
    from scalelab.results import tracking
    print(tracking.ensure_experiment("e", ws))
else:  # what MLflow does by itself: the schema is created in place
    from mlflow import MlflowClient
    MlflowClient(tracking_uri=ws.tracking_uri).search_experiments()
"""


def _store(root: Path, limit: int, ours: bool) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", STORE_UNDER_LIMIT, str(root), str(limit), "ours" if ours else ""],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
        check=False,
        timeout=300,
    )


def test_a_store_half_created_by_a_full_disk_is_rebuilt(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    broken = _store(root, 500_000, ours=False)  # the disk fills during MLflow's migrations
    assert broken.returncode != 0 and (root / "mlflow.db").exists()
    again = _store(root, 0, ours=False)
    assert again.returncode != 0 and "already exists" in again.stderr  # MLflow never recovers
    fixed = _store(root, 0, ours=True)
    assert fixed.returncode == 0, fixed.stderr
    assert list(root.glob("mlflow.db.incomplete-*"))  # the broken file is kept aside
    assert _store(root, 0, ours=True).returncode == 0


def test_a_full_disk_while_creating_the_store_leaves_no_store(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    full = _store(root, 500_000, ours=True)
    assert full.returncode != 0
    assert "cannot create the MLflow store" in full.stderr
    assert not (root / "mlflow.db").exists()
    assert not list(root.glob(".mlflow.db.creating-*"))
    assert _store(root, 0, ours=True).returncode == 0


# ---- 6. two `sweep run` of one new spec at once ------------------------------------------------
@pytest.mark.slow
def test_two_sweep_runs_of_a_new_spec_make_one_parent_run(workspace, tmp_path: Path) -> None:
    import mlflow
    from test_sweep_run import assert_sweep_exact, write_spec

    spec = write_spec(tmp_path / "race.yaml", "race", ["n10k", "n30k"], steps=8)
    env = {**os.environ, "SCALELAB_HOME": str(workspace.root), "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "scalelab", "sweep", "run", str(spec)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for proc, out in zip(procs, outs, strict=True):
        assert proc.returncode == 0, out
        assert "Traceback" not in out, out
    url = f"journal:{workspace.root / 'optuna-journal.log'}"
    assert_sweep_exact(url, "race", 2, 2, workspace.tracking_uri)
    mlflow.set_tracking_uri(workspace.tracking_uri)
    parents = mlflow.search_runs(
        experiment_names=["race"], filter_string="tags.sweep_role = 'parent'"
    )
    assert len(parents) == 1, parents[["run_id", "status"]]
    assert set(parents.status) == {"FINISHED"}
    # 10: the threads each worker chose are said and recorded on every trial's run. A process
    # that finds the sweep already complete (the other one trained it all) trains nothing and
    # says nothing of threads.
    trained = [out for out in outs if "torch threads per worker" in out]
    assert trained, outs
    assert all("torch threads per worker: 1 (OMP_NUM_THREADS)" in out for out in trained)
    children = mlflow.search_runs(experiment_names=["race"], filter_string="tags.trial != ''")
    assert set(children["tags.torch_threads"]) == {"1"}


# ---- 7. a spec every trial would refuse is refused before the sweep exists ---------------------
@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"search": {"lr": 1e6, "batch_size": 8}}, "search.lr: training refuses 1000000.0"),
        (
            {"search": {"lr": {"low": 1e-3, "high": 1e4}, "batch_size": 8}},
            "search.lr: training refuses 10000.0",
        ),
        (
            {"budgets": {"tokens": [10**10]}},
            "budgets: cell n10k-D1e10: tokens: 10,000,000,000 training tokens",
        ),
        ({"train": {"val_tokens": 64 * 32, "weight_decay": -1}}, "train: weight_decay"),
    ],
)
def test_unrunnable_specs_are_refused_before_the_sweep_exists(
    workspace, tmp_path: Path, changes: dict, needle: str, scalelab_cli
) -> None:
    from test_sweep_run import write_spec

    spec = write_spec(tmp_path / "bad.yaml", "bad", ["n10k"], steps=4)
    data = {**yaml.safe_load(spec.read_text()), **changes}
    spec.write_text(yaml.safe_dump(data))
    result = scalelab_cli(["sweep", "run", str(spec)], workspace.root, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert needle in line, line
    journal = workspace.root / "optuna-journal.log"
    assert not journal.exists() or b"bad" not in journal.read_bytes()


# ---- 9. training that cannot fit is refused before anything starts ------------------------------
@pytest.mark.parametrize(
    ("flags", "needle", "real_process"),
    [
        (["--params", "1e12"], "params: a 9.98e+11-parameter model needs about", False),
        # Were it let through, Lightning would relaunch this process's command on 99 CPUs.
        (["--params", "3e4", "--devices", "99", "--accelerator", "cpu"], "devices: 99 CPU", True),
        (["--params", "3e4", "--devices", "0"], "devices: at least 1 device; got 0", False),
    ],
)
def test_training_that_cannot_fit_is_refused_naming_the_number(
    workspace, tmp_path: Path, flags: list[str], needle: str, real_process: bool, scalelab_cli
) -> None:
    import mlflow

    args = ["train", *flags, "--tokens", "1e5", "--corpus", "stdlib-notests"]
    if real_process:
        result = _scalelab(*args, cwd=tmp_path, home=workspace.root)
    else:
        result = scalelab_cli(args, workspace.root, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = result.stderr.strip().splitlines()
    assert needle in line, line
    client = mlflow.MlflowClient(workspace.tracking_uri)
    assert not client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_a_sweep_of_a_size_that_cannot_fit_is_refused_before_it_exists(
    workspace, tmp_path: Path, scalelab_cli
) -> None:
    from test_sweep_run import write_spec

    spec = write_spec(tmp_path / "huge.yaml", "huge", [1e12], steps=4)
    result = scalelab_cli(["sweep", "run", str(spec)], workspace.root, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "params: a 9.98e+11-parameter model needs about" in result.stderr
    assert not (workspace.root / "optuna-journal.log").exists()


# ---- 10. threads on a busy machine -----------------------------------------------------------
def test_threads_follow_the_free_cores_beside_a_cpu_hog(monkeypatch) -> None:
    from scalelab.resources import cores, pick_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cores())]
    try:
        import time

        time.sleep(1.0)  # the hogs are running (a sample, not the lagging load average)
        threads, why = pick_threads(1)
        assert threads == 1, why
        assert why.endswith("cores free, 1 worker(s)")
        assert pick_threads(1, override=3) == (3, "--threads")
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert pick_threads(4)[0] * 4 <= max(4, cores())  # never all cores to every worker
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


# ---- 8. fits of big tables: bounded memory, or a clear refusal ---------------------------------
def test_screening_memory_does_not_grow_with_starts_times_rows(tmp_path: Path) -> None:
    import tracemalloc

    import numpy as np

    from scalelab.forecast.fit import Problem
    from scalelab.forecast.laws import make_law
    from scalelab.forecast.objectives import Objective

    rng = np.random.default_rng(0)
    n = 200_000
    runs = pd.DataFrame(
        {"n_params": np.exp(rng.uniform(14, 21, n)), "tokens": np.exp(rng.uniform(18, 25, n))}
    )
    runs["loss"] = 1.7 + 400 / runs.n_params**0.34 + 410 / runs.tokens**0.28
    law = make_law("chinchilla")
    problem = Problem.from_runs(runs, law, Objective(kind="huber"))
    tracemalloc.start()
    problem.values(law.theta_grid()[:600])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # 512 starts at once would hold 512 × 200k doubles (0.8 GB) per temporary.
    assert peak < 400 * 2**20, f"screening peaked at {peak / 2**20:.0f} MB"


def test_a_bootstrap_the_machine_cannot_hold_is_refused_naming_the_numbers(monkeypatch) -> None:
    import numpy as np

    from scalelab import resources
    from scalelab.forecast import bootstrap, fit_law

    rng = np.random.default_rng(0)
    runs = pd.DataFrame(
        {"n_params": np.exp(rng.uniform(14, 21, 400)), "tokens": np.exp(rng.uniform(18, 25, 400))}
    )
    runs["loss"] = 1.7 + 400 / runs.n_params**0.34 + 410 / runs.tokens**0.28
    fit = fit_law(runs, "chinchilla", check_identifiability=False)
    monkeypatch.setattr(resources, "available_memory", lambda: 2**19)  # a 512 KB machine
    with pytest.raises(ValueError, match=r"bootstrap of 400 rows × 200 resamples needs about"):
        bootstrap(fit, runs, n_resamples=200)


# ---- smaller messages: one line, exit 2, naming the flag, field or file -----------------------
def _message_cases(tmp: Path) -> list[tuple[list[str], str]]:
    (tmp / "empty.csv").write_text("")
    (tmp / "binary.csv").write_bytes(bytes(range(256)) * 4)
    (tmp / "latin1.yaml").write_bytes(b"name: caf\xe9\ncorpus: stdlib\n")
    (tmp / "twice.yaml").write_text(
        "name: t\ncorpus: stdlib\nsizes: [n10k]\nbudgets: {tokens: [1e5]}\n"
        "search:\n  lr: 0.01\n  lr: 0.02\n"
    )
    (tmp / "truthy.yaml").write_text(
        "name: t\ncorpus: stdlib\nsizes: [n10k]\nbudgets: {tokens: [1e5]}\nsearch: {trials: true}\n"
    )
    rows = "n_params,tokens,loss\n1e6,1e8,3.0\n2e6,1e8,2.9\n1e6,1e8,3.0\n2e6,1e8,2.9\n"
    (tmp / "dups.csv").write_text(rows + "5e6,3e8,2.4\n6e6,3e8,2.3\n")
    train = ["train", "--params", "3e4"]
    return [
        ([*train, "--tokens", "1e400"], "error: --tokens must be a finite number; got inf"),
        ([*train, "--tokens", "nan"], "error: --tokens must be a finite number; got nan"),
        ([*train, "--tokens", "1e5", "--lr", "nan"], "error: --lr must be a finite number"),
        (["fit", "--csv", "empty.csv", "--no-log"], "error: empty.csv: No columns to parse"),
        (["fit", "--csv", "binary.csv", "--no-log"], "error: binary.csv: "),
        (["sweep", "run", "latin1.yaml"], "error: latin1.yaml: not UTF-8 text (byte 9"),
        (["sweep", "run", "twice.yaml"], "key 'lr' appears twice (lines 6 and 7)"),
        (["sweep", "run", "truthy.yaml"], "search.trials: a whole number is needed; got True"),
        (["fit", "--csv", "dups.csv", "--no-log"], "e.g. index 0 and 2;"),
        (
            ["sweep", "status", "s", "--storage", "sqlite:////proc/no/x.db"],
            "error: cannot create the folder /proc/no of sqlite:////proc/no/x.db",
        ),
    ]


@pytest.mark.parametrize("case", range(10))
def test_bad_input_is_one_line_naming_what_is_wrong(
    tmp_path: Path, case: int, scalelab_cli
) -> None:
    args, needle = _message_cases(tmp_path)[case]
    result = scalelab_cli(args, tmp_path / "ws", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("law ")]
    assert len(lines) == 1 and needle in lines[0], result.stderr[-3000:]


def test_predict_far_below_the_fitted_range_warns(tmp_path: Path, scalelab_cli) -> None:
    runs = tmp_path / "runs.csv"
    grid = [(n, d) for n in (1e6, 3e6, 1e7, 3e7) for d in (2e7, 1e8, 5e8)]
    losses = [1.7 + 400 / n**0.34 + 410 / d**0.28 for n, d in grid]
    pd.DataFrame(
        {"n_params": [n for n, _ in grid], "tokens": [d for _, d in grid], "loss": losses}
    ).to_csv(runs, index=False)
    args = ["predict", "--csv", str(runs), "--law", "chinchilla"]
    result = scalelab_cli(
        [*args, "--params", "1e-300", "--tokens", "1e9"], tmp_path / "ws", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "below the smallest fitted" in result.stderr
