from tests.service.test_api import TASK, assert_error, make_client


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
