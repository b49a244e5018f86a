"""The studio's /openapi.json tells the truth: Schemathesis drives a live server (127.0.0.1) from it.

The server has a token, a one-generation limit and small caps, over a root with a dataset, a trained
tiny model, a run still training (no model.json), previews, a generated WAV and an uploaded prime.
Generated path and query values are swapped for those real ids about half the time, so the fuzzer
reaches past the 404s into each route's own checks. Every response must have a status its operation
declares, a body and headers that fit what it declares there, and no 5xx. The statuses random
requests cannot reach (401 without the token, 413, 415, 429) are sent once each and checked the same way.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig

from helpers.serve import add_previews_and_evaluation, make_dataset, running, train_model
from waveforms.config import ServeConfig

pytestmark = pytest.mark.slow

TOKEN = "schema-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLES = 25  # per operation, besides Schemathesis's coverage cases
UPLOAD_MB = 0.05
ENDLESS = {"/api/models/{model}/metrics/stream"}  # an SSE stream never ends: it gets generated ids only
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]  # Schemathesis's default for valid requests
REFUSALS = {  # statuses a schema-valid request may still get for what no schema can say
    "/api/models/{model}/generate.wav": ["400"],  # a genre this model was not trained on
    "/api/primes": ["415", "422"],  # bytes that are not audio, or an empty file
}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    from waveforms.cli import main

    root = tmp_path_factory.mktemp("schema-studio")
    train_model(make_dataset(root / "dataset"), root / "runs" / "tiny", steps=10)
    add_previews_and_evaluation(root / "runs" / "tiny")
    (root / "runs" / "training").mkdir()
    (root / "runs" / "training" / "metrics.jsonl").write_text('{"step": 5, "loss": 4.0, "wall_time": 1.0}\n')
    assert main(["generate", "--model", str(root / "runs" / "tiny"), "--seconds", "0.25", "--seed", "1",
                 "--output", str(root / "generated" / "seed1.wav")]) == 0
    return root


@pytest.fixture(scope="module")
def prime_mp3(sine_mp3, tmp_path_factory) -> bytes:
    return sine_mp3(tmp_path_factory.mktemp("prime") / "prime.mp3", 330.0, 0.25).read_bytes()


def config(root: Path, upload_dir: Path, **kw) -> ServeConfig:
    return ServeConfig(roots=[str(root)], token=TOKEN, upload_dir=str(upload_dir), max_upload_mb=UPLOAD_MB,
                       max_audio_seconds=2.0, max_generations=1, **kw)


@pytest.fixture(scope="module")
def base(root, tmp_path_factory):
    with running(config(root, tmp_path_factory.mktemp("uploads"), max_generate_seconds=1.0)) as url:
        yield url


def get(base: str, path: str) -> requests.Response:
    r = requests.get(base + path, headers=AUTH, timeout=60)
    assert r.status_code == 200, r.text
    return r


@pytest.fixture(scope="module")
def models(base) -> dict[str, str]:
    """The served models' ids by name: a trained one and one still training."""
    models = {m["name"]: m["id"] for m in get(base, "/api/models").json()}
    assert sorted(models) == ["runs/tiny", "runs/training"]
    return models


@pytest.fixture(scope="module")
def known(base, models, prime_mp3) -> dict[str, list[str]]:
    """Real values for each parameter name, read from the server's own listings."""
    (ds,) = get(base, "/api/datasets").json()
    (item,) = get(base, "/api/generated").json()
    tiny = models["runs/tiny"]
    r = requests.post(f"{base}/api/primes?model={tiny}", headers=AUTH, files={"file": ("prime.mp3", prime_mp3)},
                      timeout=60)
    assert r.status_code == 201, r.text
    return {"dataset": [ds["id"]], "track": [t["id"] for t in get(base, f"/api/datasets/{ds['id']}").json()["tracks"]],
            "model": sorted(models.values()), "item": [item["id"]], "prime": [r.json()["id"]],
            "name": [p["name"] for p in get(base, f"/api/models/{tiny}/previews").json()]}


def _real(known: dict[str, list[str]], values: dict | None):
    """A strategy: the generated values as they are, or with each known name replaced by a real value."""
    if not values:
        return st.just(values)
    swapped = {k: st.sampled_from(known[k]) if k in known else st.just(v) for k, v in values.items()}
    return st.one_of(st.just(values), st.fixed_dictionaries(swapped))


@pytest.fixture(scope="module")
def api(base, known):
    config = SchemathesisConfig.from_dict({"headers": AUTH, "operations": [
        {"include-path": path, "checks": {"positive_data_acceptance": {"expected-statuses": ACCEPTED + extra}}}
        for path, extra in REFUSALS.items()]})
    schema = schemathesis.openapi.from_url(base + "/openapi.json", config=config, headers=AUTH, timeout=60)

    @schema.hook
    def flatmap_path_parameters(context, path_parameters):
        return st.just(path_parameters) if context.operation.path in ENDLESS else _real(known, path_parameters)

    @schema.hook
    def flatmap_query(context, query):
        return _real(known, query)

    return schema


schema = schemathesis.pytest.from_fixture("api")


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request):
    """Schemathesis 4.32 reads ``node._nodeid``, which pytest 9.2 renamed; give it the public node id."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_every_response_is_declared_in_the_schema(case):
    case.call_and_validate(timeout=60)  # the token comes from the config, so negative cases know it is there


def test_statuses_random_requests_miss_are_declared(api, base, root, models, known, prime_mp3, tmp_path):
    tiny, training = models["runs/tiny"], models["runs/training"]
    seen = set()

    def check(path: str, method: str = "GET", headers=AUTH, url: str = base, **kw) -> requests.Response:
        r = api[path][method].Case(**kw).call_and_validate(base_url=url, headers=headers, timeout=60)
        seen.add(r.status_code)
        return r

    assert check("/api/status", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert check("/api/models/{model}/generate.json", headers={}, path_parameters={"model": tiny}).status_code == 401
    big = os.urandom(int(UPLOAD_MB * (1 << 20)) + 100 * 1024)
    assert check("/api/primes", "POST", query={"model": tiny}, body={"file": big}).status_code == 413
    assert check("/api/primes", "POST", query={"model": tiny}, body={"file": b"not audio\n" * 50}).status_code == 415
    assert check("/api/primes", "POST", query={"model": tiny}, body={"file": b""}).status_code == 422
    assert check("/api/primes", "POST", query={"model": training}, body={"file": prime_mp3}).status_code == 409
    r = check("/api/primes", "POST", query={"model": tiny}, body={"file": prime_mp3})
    assert r.status_code == 201 and abs(r.json()["samples"] - 2000) < 80  # 0.25 s at 8 kHz
    assert check("/api/models/{model}/generate.wav", path_parameters={"model": training},
                 query={"seconds": 0.5}).status_code == 409
    r = check("/api/models/{model}/generate.json", path_parameters={"model": tiny}, query={"seconds": 2})
    assert r.status_code == 400 and "at most 1 s" in r.json()["detail"]
    r = check("/api/datasets/{dataset}/tracks/{track}/audio.wav", query={"start": 1e308, "seconds": 0.5},
              path_parameters={"dataset": known["dataset"][0], "track": known["track"][0]})
    assert r.status_code == 200 and len(r.content) == 44  # a start past the end: a WAV with no samples
    r = check("/api/models/{model}/generate.wav", path_parameters={"model": tiny}, query={"seconds": -1})
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["query", "seconds"]
    # a server allowing long generations: one unread 600 s stream holds its only slot, the next is turned away
    with running(config(root, tmp_path, max_generate_seconds=600.0)) as other:
        with requests.get(f"{other}/api/models/{tiny}/generate.wav?seconds=600&seed=77", headers=AUTH, stream=True,
                          timeout=60) as held:
            assert held.status_code == 200
            r = check("/api/models/{model}/generate.wav", url=other, path_parameters={"model": tiny},
                      query={"seconds": 0.5, "seed": 78})
            assert r.status_code == 429 and r.headers["retry-after"] == ["5"]  # schemathesis keeps header lists
    assert seen == {200, 201, 400, 401, 409, 413, 415, 422, 429}


def test_the_token_and_its_401_are_declared_only_when_the_server_has_one(api, root, tmp_path):
    with_token = api.raw_schema
    assert with_token["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": "the server's --token"}
    operations = [op for item in with_token["paths"].values() for op in item.values()]
    assert len(operations) == 17 and all("401" in op["responses"] for op in operations)
    with running(ServeConfig(roots=[str(root)], upload_dir=str(tmp_path))) as url:
        open_schema = requests.get(url + "/openapi.json", timeout=60).json()
    assert "securitySchemes" not in open_schema["components"] and "security" not in open_schema
    assert not [op for item in open_schema["paths"].values() for op in item.values() if "401" in op["responses"]]
