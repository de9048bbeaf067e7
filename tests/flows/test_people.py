"""People judge in the Prefect UI (`judge.kind: human | review`): a real Prefect server, a real run, each form
answered through `resume_flow_run` exactly as the UI answers it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import duckdb
import psutil
import pytest
import yaml
from prefect import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter, ArtifactFilterKey, FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType,
)
from prefect.flow_runs import resume_flow_run
from prefect.input.actions import read_flow_run_input
from prefect.input.run_input import keyset_from_paused_state
from prefect.settings import PREFECT_API_URL, temporary_settings

pytestmark = pytest.mark.e2e

ONLINE_CUT = str(Path(sys.executable).parent / "online-cut")
PER_ROUND, SAMPLES = 3, 2  # 6 responses


def write_config(folder: Path, tiny_model: Path, judge: dict, sampler: dict) -> Path:
    config = {
        "rounds": 1,
        "model": {"path": str(tiny_model), "max_model_len": 512},
        "prompts": {"suite": "addition", "per_round": PER_ROUND},
        "sampler": {"n": SAMPLES, "max_tokens": 8, "kv_cache_gib": 0.25, **sampler},
        "judge": {"people": {"page_size": 4, "poll_s": 0.5, "timeout_s": 300}, **judge},
        "cut": {"positive_ratio": None, "micro_batch_size": 4, "max_length": 128, "learning_rate": 1e-2},
        "storage": {"db": str(folder / "store.duckdb"), "adapters_dir": str(folder / "adapters"),
                    "exports_dir": str(folder / "exports")},
        "evaluation": {"n": 4},
    }
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextmanager
def prefect_client(env: dict[str, str]):
    with temporary_settings(updates={PREFECT_API_URL: env["PREFECT_API_URL"]}), get_client(sync_client=True) as client:
        yield client


def next_form(env: dict[str, str], run_name: str, run_process: subprocess.Popen, seen: set, log: Path) -> tuple:
    """The round's next form: (flow run id, its keyset, description, schema), once the round has paused for it."""
    deadline = time.monotonic() + 240
    with prefect_client(env) as client:
        while time.monotonic() < deadline:
            assert run_process.poll() is None, f"the run ended waiting for a form:\n{log.read_text()[-3000:]}"
            paused = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["online-cut-round"])),
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=["PAUSED"]))))
            for flow_run in paused:
                keyset = keyset_from_paused_state(flow_run.state)
                if (flow_run.id, keyset["response"]) in seen:  # pause keys repeat from one flow run to the next
                    continue
                with temporary_settings(updates={PREFECT_API_URL: env["PREFECT_API_URL"]}):
                    schema = read_flow_run_input(keyset["schema"], flow_run.id)
                    description = read_flow_run_input(keyset["description"], flow_run.id)
                if schema is not None and f"Run {run_name}, round" in description.replace("\\", ""):
                    seen.add((flow_run.id, keyset["response"]))
                    return flow_run.id, keyset, description, schema
            time.sleep(0.3)
    pytest.fail(f"no form came:\n{log.read_text()[-3000:]}")


def answer(env: dict[str, str], flow_run_id, run_input: dict) -> None:
    with temporary_settings(updates={PREFECT_API_URL: env["PREFECT_API_URL"]}):
        resume_flow_run(flow_run_id, run_input=run_input)


def page_answer(schema: dict, annotator: str, **overrides) -> dict:
    """Every response of the form judged negative with a word of text, as a person would fill it in."""
    numbers = sorted({int(name.rsplit("_", 1)[1]) for name in schema["properties"] if name.startswith("verdict_")})
    filled = {"annotator": annotator}
    for number in numbers:
        filled |= {f"verdict_{number}": "negative", f"judgment_{number}": f"Wrong, says {annotator}.",
                   f"score_{number}": "2", f"quotes_{number}": ""}
    return filled | overrides


def query(db: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as connection:
        return connection.execute(sql).fetchall()


def engine_children(process: subprocess.Popen) -> list[str]:
    """The command lines of the run's children other than its watchdog."""
    children = []
    for child in psutil.Process(process.pid).children(recursive=True):
        try:
            command = " ".join(child.cmdline()) or child.name()
        except psutil.Error:
            continue
        if "online_cut.watchdog" not in command:
            children.append(command)
    return children


def start_run(config: Path, run_name: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([ONLINE_CUT, "run", "--config", str(config), "--run", run_name], env=env,
                            cwd=config.parent, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def first_word_quote(db: Path, run_name: str, schema: dict) -> dict:
    """A wrong-part field quoting a word of one of the form's responses (the form lists them by response id)."""
    texts = [text for (text,) in query(db, f"SELECT r.text FROM responses r WHERE r.run = '{run_name}' AND NOT EXISTS "
                                           "(SELECT 1 FROM judgments j WHERE j.response_id = r.response_id) "
                                           "ORDER BY r.response_id")]
    number, word = next((n, text.split()[0]) for n, text in enumerate(texts, 1) if text.split())
    return {f"quotes_{number}": word}


def test_people_judge_each_page_in_the_ui_and_the_round_trains_on_exactly_their_judgments(
        prefect_env, tiny_model: Path, tmp_path: Path) -> None:
    """On the vLLM engine: while the round waits for people, the engine's processes are gone; bad answers are
    refused with their reason (by the server's schema check, or by the round, which asks again) and store
    nothing; the round trains on the people's judgments, stored under their names."""
    config = write_config(tmp_path, tiny_model, {"kind": "human"}, {})
    db, log, seen = tmp_path / "store.duckdb", tmp_path / "run.log", set()
    run = start_run(config, "people-ui", prefect_env, log)
    try:
        flow_run_id, _, description, schema = next_form(prefect_env, "people-ui", run, seen, log)
        assert "page 1 of 2" in description
        assert "Reply with just the number." in schema["properties"]["verdict_1"]["description"].replace("\\", "")
        assert [c for c in engine_children(run) if "resource_tracker" not in c] == []  # no engine while people work
        good = page_answer(schema, "ana")
        for bad, reason in (({**good, "comment": "x"}, "'comment' was unexpected"),
                            ({k: v for k, v in good.items() if k != "verdict_1"}, "'verdict_1' is a required property"),
                            ({**good, "judgment_2": "x" * 100_000}, "Validation failed for field 'judgment_2'")):
            with pytest.raises(RuntimeError, match=reason):  # the server checks the form's schema
                answer(prefect_env, flow_run_id, bad)
        for bad, reason in (({**good, "judgment_1": ""}, "response 1: a negative verdict needs the judgment"),
                            ({**good, "quotes_3": "no such words"}, "response 3: the wrong part 'no such words' is not")):
            answer(prefect_env, flow_run_id, bad)  # the round checks the rest, and asks again
            flow_run_id, _, description, schema = next_form(prefect_env, "people-ui", run, seen, log)
            assert "Your last answer was not stored" in description and reason in description.replace("\\", "")
            assert query(db, "SELECT count(*) FROM judgments") == [(0,)]
        answer(prefect_env, flow_run_id, page_answer(schema, "ana", **first_word_quote(db, "people-ui", schema)))

        flow_run_id, _, description, schema = next_form(prefect_env, "people-ui", run, seen, log)
        assert "page 2 of 2" in description and "Your last answer" not in description
        assert query(db, "SELECT judge, count(*) FROM judgments GROUP BY ALL") == [("human:ana", 4)]  # stored at once
        answer(prefect_env, flow_run_id, page_answer(schema, "bo", verdict_1="positive", judgment_1=""))
        assert run.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    assert "sampler backend vllm-merged" in log.read_text()
    assert query(db, "SELECT judge, verdict, count(*) FROM triples WHERE run = 'people-ui' GROUP BY ALL ORDER BY ALL") == [
        ("human:ana", "negative", 4), ("human:bo", "negative", 1), ("human:bo", "positive", 1)]
    assert query(db, "SELECT count(*) FROM judgment_spans WHERE judge = 'human:ana' AND start IS NOT NULL") == [(1,)]
    [(adapter_out, judged)] = query(db, "SELECT adapter_out, judge_s IS NOT NULL FROM rounds WHERE run = 'people-ui'")
    assert judged and adapter_out is not None
    assert query(db, "SELECT count(*) > 0 FROM training_steps WHERE run = 'people-ui'") == [(True,)]


def test_a_run_killed_while_people_judge_asks_only_for_the_pages_left(prefect_env, tiny_model: Path,
                                                                       tmp_path: Path) -> None:
    config = write_config(tmp_path, tiny_model, {"kind": "human"}, {"backend": "transformers"})
    db, seen = tmp_path / "store.duckdb", set()
    first = start_run(config, "people-killed", prefect_env, tmp_path / "first.log")
    try:
        flow_run_id, _, _, schema = next_form(prefect_env, "people-killed", first, seen, tmp_path / "first.log")
        answer(prefect_env, flow_run_id, page_answer(schema, "ana"))
        killed_form, _, description, _ = next_form(prefect_env, "people-killed", first, seen, tmp_path / "first.log")
        assert "page 2 of 2" in description
        children = [p.pid for p in psutil.Process(first.pid).children(recursive=True)]
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert query(db, "SELECT judge, count(*) FROM judgments GROUP BY ALL") == [("human:ana", 4)]

    second = start_run(config, "people-killed", prefect_env, tmp_path / "second.log")
    try:
        flow_run_id, _, description, schema = next_form(prefect_env, "people-killed", second, seen,
                                                        tmp_path / "second.log")
        assert "page 1 of 1" in description and len([k for k in schema["properties"] if k.startswith("verdict_")]) == 2
        answer(prefect_env, flow_run_id, page_answer(schema, "bo"))
        assert second.wait(timeout=300) == 0, (tmp_path / "second.log").read_text()[-3000:]
    finally:
        if second.poll() is None:
            os.killpg(second.pid, signal.SIGKILL)
            second.wait()
    assert query(db, "SELECT judge, count(*) FROM judgments GROUP BY ALL ORDER BY ALL") == [("human:ana", 4), ("human:bo", 2)]
    assert query(db, "SELECT count(*) FROM triples WHERE run = 'people-killed'") == [(PER_ROUND * SAMPLES,)]
    with prefect_client(prefect_env) as client:
        assert client.read_flow_run(killed_form).state.type.value == "CRASHED"  # no form left for a dead run
    assert not [pid for pid in children if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]


def test_review_stores_the_draft_the_final_and_what_changed(prefect_env, tiny_model: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path, tiny_model, {"kind": "review", "drafter": "rule", "rule": "addition",
                                                 "people": {"page_size": 6, "poll_s": 0.5, "timeout_s": 300}},
                          {"backend": "transformers"})
    db, seen, log = tmp_path / "store.duckdb", set(), tmp_path / "run.log"
    run = start_run(config, "people-review", prefect_env, log)
    try:
        flow_run_id, _, description, schema = next_form(prefect_env, "people-review", run, seen, log)
        drafts = {name: field.get("default") for name, field in schema["properties"].items()}
        assert drafts["verdict_1"] in ("positive", "negative")
        assert "drafted by rule:addition" in schema["properties"]["judgment_1"]["description"].replace("\\", "")
        accepted = {name: value for name, value in drafts.items()} | {"annotator": "ana"}
        accepted |= {"verdict_1": "negative", "judgment_1": "Not a number at all.", "quotes_1": ""}
        answer(prefect_env, flow_run_id, accepted)
        assert run.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    rows = query(db, "SELECT judge, draft_judge, changed FROM judgments ORDER BY response_id, judge")
    people = [row for row in rows if row[0] == "human:ana"]
    assert len(people) == 6 and {row[1] for row in people} == {"rule:addition"}
    assert len([row for row in rows if row[0] == "rule:addition"]) == 6  # the drafts stay
    first_draft = query(db, "SELECT judgment FROM judgments WHERE judge = 'rule:addition' ORDER BY response_id LIMIT 1")
    assert [row[2] for row in people] == [first_draft != [("Not a number at all.",)]] + [False] * 5
    assert query(db, "SELECT DISTINCT judge FROM triples WHERE run = 'people-review' AND round = 1 AND judge LIKE 'human:%'") \
        == [("human:ana",)]
    with prefect_client(prefect_env) as client:
        review, table = (json.loads(client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[key])))[0].data) for key in ("people-review-review-1", "people-review-round-1"))
    assert (review[0]["reviewed"], review[0]["drafts_changed"]) == (6, int(people[0][2]))
    assert (table[0]["judged_by"], table[0]["drafts_changed"]) == ("human:ana (6), rule:addition (6)", int(people[0][2]))


def test_online_cut_run_without_a_prefect_server_refuses_people_who_could_not_see_the_form(tiny_model: Path,
                                                                                          tmp_path: Path) -> None:
    config = write_config(tmp_path, tiny_model, {"kind": "human"}, {"backend": "transformers"})
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_API")}
    result = subprocess.run([ONLINE_CUT, "run", "--config", str(config)], env={**env, "PREFECT_HOME": str(tmp_path)},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "the temporary server `online-cut run` starts without PREFECT_API_URL has none" \
        in " ".join(result.stderr.split())
    assert not (tmp_path / "store.duckdb").exists()
