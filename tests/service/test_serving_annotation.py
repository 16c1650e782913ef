from tests.service.support import TASK, assert_error, make_client
from tests.service.test_serving_fit import _wait


def test_annotation_plan(tmp_path):
    with make_client(tmp_path) as c:
        c.post("/v1/tasks", json=TASK)
        assert_error(c.post("/v1/tasks/sent/annotation-plan", json={"budget": 2}), 400, "no_unlabeled_examples")
        examples = [{"id": f"u{i}", "input": f"film review number {i} {'great' if i % 2 else 'boring'}"}
                    for i in range(12)] + [{"id": "l1", "input": "great", "label": "positive"}]
        c.post("/v1/tasks/sent/examples", json={"examples": examples})
        for method in ("votek", "ideal", "random"):
            plan = c.post("/v1/tasks/sent/annotation-plan", json={"budget": 4, "method": method, "seed": 1}).json()
            assert plan["method"] == method and plan["elapsed_s"] >= 0
            assert len(plan["ids"]) == 4 and len(set(plan["ids"])) == 4
            assert all(i.startswith("u") for i in plan["ids"])  # only unlabeled examples
        everything = c.post("/v1/tasks/sent/annotation-plan", json={"budget": 100}).json()["ids"]
        assert sorted(everything) == sorted(f"u{i}" for i in range(12))
        assert_error(c.post("/v1/tasks/sent/annotation-plan", json={"budget": 0}), 400, param="budget")
        assert_error(c.post("/v1/tasks/sent/annotation-plan", json={"budget": 2, "method": "best"}), 400,
                     param="method")
        assert_error(c.post("/v1/tasks/none/annotation-plan", json={"budget": 2}), 404)


UNLABELED = [{"id": f"u{i}", "input": f"film review number {i} {'great fun' if i % 2 else 'boring awful'}"}
             for i in range(30)]


def test_two_stage_votek_runs_the_model_as_a_job(tmp_path):
    with make_client(tmp_path) as c:
        c.post("/v1/tasks", json=TASK)
        c.post("/v1/tasks/sent/examples", json={"examples": UNLABELED})
        # No labeled examples yet to prompt the model with: say what to do first, store nothing.
        assert_error(c.post("/v1/tasks/sent/annotation-plan", json={"budget": 4, "method": "votek_two_stage"}),
                     400, "not_enough_labeled_examples", "method")
        first = c.post("/v1/tasks/sent/annotation-plan", json={"budget": 3, "method": "votek"}).json()["ids"]
        for example_id in first:
            label = "positive" if int(example_id[1:]) % 2 else "negative"
            assert c.patch(f"/v1/tasks/sent/examples/{example_id}", json={"label": label}).status_code == 200
        r = c.post("/v1/tasks/sent/annotation-plan", json={"budget": 5, "method": "votek_two_stage", "seed": 2})
        assert r.status_code == 202
        job = _wait(c, r.json()["job_id"])
        assert job["status"] == "succeeded", job
        plan = job["result"]
        assert plan["method"] == "votek_two_stage" and len(plan["ids"]) == 5 and len(set(plan["ids"])) == 5
        assert not set(plan["ids"]) & set(first)  # only examples still unlabeled
        assert job["progress"] == 1.0


def test_large_pools_are_planned_in_a_job_with_the_same_answer(tmp_path):
    with make_client(tmp_path, annotation_sync_max=10) as c:
        c.post("/v1/tasks", json=TASK)
        c.post("/v1/tasks/sent/examples", json={"examples": UNLABELED})
        r = c.post("/v1/tasks/sent/annotation-plan", json={"budget": 6, "method": "votek"})
        assert r.status_code == 202
        job = _wait(c, r.json()["job_id"])
        assert job["status"] == "succeeded"
    with make_client(tmp_path) as c:  # same data, default limit: answered at once
        direct = c.post("/v1/tasks/sent/annotation-plan", json={"budget": 6, "method": "votek"})
        assert direct.status_code == 200
        assert direct.json()["ids"] == job["result"]["ids"]
