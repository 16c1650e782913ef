"""The published OpenAPI document: every route, no 422 answers, the batch bodies, this server's limits."""

from __future__ import annotations

from tests.service.support import make_client


def test_openapi_describes_the_contract(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in ["/v1/tasks", "/v1/tasks/{name}", "/v1/tasks/{name}/examples",
                 "/v1/tasks/{name}/examples/{example_id}", "/v1/tasks/{name}/predict",
                 "/v1/tasks/{name}/controller", "/v1/tasks/{name}/annotation-plan", "/v1/jobs/{job_id}",
                 "/v1/models", "/health", "/metrics"]:
        assert path in paths


def test_the_document_states_this_server_s_limits(tmp_path):
    with make_client(tmp_path, max_inputs=5, max_input_chars=77, max_demos=9) as client:
        published = client.get("/openapi.json").json()
    schemas = published["components"]["schemas"]
    predict = schemas["PredictRequest"]["properties"]
    assert predict["inputs"]["maxItems"] == 5
    assert {"type": "integer", "minimum": 0, "maximum": 9}.items() <= next(
        option for option in predict["demos"]["anyOf"] if option.get("type") == "integer").items()
    assert schemas["BatchLine"]["properties"]["input"]["anyOf"][0]["maxLength"] == 77
    demos = next(p for p in published["paths"]["/v1/tasks/{name}/batches"]["post"]["parameters"]
                 if p["name"] == "demos")
    assert next(o for o in demos["schema"]["anyOf"] if o["type"] == "integer")["maximum"] == 9
    assert "HTTPValidationError" not in schemas
    assert all("422" not in operation["responses"] for operations in published["paths"].values()
               for operation in operations.values())
