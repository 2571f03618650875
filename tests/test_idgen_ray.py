"""Ray sharding: same table as one process for 1 and 2 workers, idempotent registry, registry or worker killed mid-run."""
from __future__ import annotations

import json
import threading
import time

import pytest

ray = pytest.importorskip("ray")

from idgen import IdGenConfig  # noqa: E402
from idgen.algorithm import generate_ids  # noqa: E402
from idgen.distributed import KEYS_FILE, LOG_FILE, Registry, RayIdGenerator, _init_ray, generate_ids_ray  # noqa: E402

from test_idgen_algorithm import tiny_generator  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    assert _init_ray(2, None)  # the local Ray that generate_ids_ray starts
    yield
    ray.shutdown()


def test_local_ray_workers_run_at_normal_priority():
    """Ray's default worker niceness (15) starved the ID generation whenever anything else ran on the machine."""
    import os

    @ray.remote
    def niceness() -> int:
        return os.nice(0)

    assert ray.get(niceness.remote()) == os.nice(0)


@pytest.fixture(scope="module")
def items(synth_dataset) -> dict[str, str]:
    texts = [it.text for it in synth_dataset.items.values()]
    return {f"item{i:02d}": texts[i % 8] for i in range(40)}  # 8 texts x 5 copies: retries needed


@pytest.fixture(scope="module")
def single(tokenizer, items):
    return generate_ids(tiny_generator(tokenizer), tokenizer, items, IdGenConfig(batch_size=6, max_text_tokens=48),
                        progress=False)


@pytest.mark.parametrize("workers", [1, 2])
def test_ray_workers_match_one_process(tokenizer, items, single, workers):
    table = generate_ids_ray(tiny_generator(tokenizer), tokenizer, items, IdGenConfig(batch_size=6, max_text_tokens=48),
                             workers=workers, progress=False)
    assert table.ids == single.ids
    assert table.report == single.report


def test_registry_claims_are_idempotent_and_survive_restart(tmp_path):
    cfg = IdGenConfig().to_dict()
    log = tmp_path / LOG_FILE
    (tmp_path / KEYS_FILE).write_text(json.dumps({"a": "", "b": "", "c": ""}))
    reg = Registry.options(max_restarts=-1, max_task_retries=-1).remote(str(tmp_path / KEYS_FILE), cfg, str(log))
    assert ray.get(reg.claim.remote("a", ["Red"])) == "red"
    assert ray.get(reg.claim.remote("a", ["blue"])) == "red"
    assert ray.get(reg.propose.remote(0, {"b": ["red", "blue"], "c": ["blue"]})) == 2
    assert ray.get(reg.propose.remote(0, {"b": ["green"]})) == 0
    ray.kill(reg, no_restart=False)
    assert ray.get(reg.resolve.remote(0)) == {"c": 1}  # retried on the restarted actor, state replayed from the log
    ray.kill(reg, no_restart=False)
    assert ray.get(reg.state.remote()) == (1, {"c": 1})
    assert ray.get(reg.resolve.remote(0)) == {"c": 1}
    assert len(log.read_text().splitlines()) == 3
    ray.kill(reg, no_restart=True)


def test_registry_killed_mid_run_loses_and_duplicates_nothing(tokenizer, items, single, tmp_path):
    result = {}

    def run():
        result["table"] = generate_ids_ray(tiny_generator(tokenizer), tokenizer, items,
                                           IdGenConfig(batch_size=6, max_text_tokens=48), workers=2,
                                           state_dir=str(tmp_path), progress=False)

    driver = threading.Thread(target=run)
    driver.start()
    log = tmp_path / LOG_FILE
    wait_for_records(log, driver, 2)
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith("idgen-registry")]
    assert len(names) == 1
    ray.kill(ray.get_actor(names[0]), no_restart=False)
    driver.join(timeout=300)
    assert not driver.is_alive()
    assert result["table"].ids == single.ids
    ops = [json.loads(line)["op"] for line in log.read_text().splitlines()]
    assert ops.count("resolve") == result["table"].report["rounds"]


def wait_for_records(log, driver, n: int) -> None:
    deadline = time.time() + 300  # actors start first (torch import in 2 processes): slow on a loaded machine
    while time.time() < deadline and not (log.exists() and log.read_text().count("\n") >= n):
        assert driver.is_alive(), f"the run ended before the registry logged {n} records"
        time.sleep(0.05)
    assert log.exists() and log.read_text().count("\n") >= n, "the registry logged nothing in 300 s"


def test_a_killed_worker_is_replaced_and_the_table_is_unchanged(tokenizer, items, single, tmp_path):
    result = {}
    with RayIdGenerator(tiny_generator(tokenizer), tokenizer, workers=2) as pool:
        victim = pool.actors[1]

        def run():
            result["table"] = pool.generate(items, IdGenConfig(batch_size=6, max_text_tokens=48),
                                            state_dir=str(tmp_path), progress=False)

        driver = threading.Thread(target=run)
        driver.start()
        wait_for_records(tmp_path / LOG_FILE, driver, 1)
        ray.kill(victim)
        driver.join(timeout=300)
        assert not driver.is_alive()
        assert pool.actors[1] is not victim  # the pool started a replacement
    assert result["table"].ids == single.ids
    assert result["table"].report == single.report
@pytest.mark.parametrize("workers", [1, 2])
def test_last_resort_is_the_same_on_ray_workers(tokenizer, items, workers):
    cfg = IdGenConfig(groups=2, lambda_max=1, max_windows=1, batch_size=6, max_text_tokens=48)
    one = generate_ids(tiny_generator(tokenizer), tokenizer, items, cfg, progress=False)
    levels = one.report["items_by_level"]
    assert levels["last_resort_text"] + levels["last_resort_counter"] > 0
    table = generate_ids_ray(tiny_generator(tokenizer), tokenizer, items, cfg, workers=workers, progress=False)
    assert table.ids == one.ids and table.report == one.report
