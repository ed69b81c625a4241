"""The endpoint generator against a local scripted HTTP server: retries, failures counted, nothing dropped."""

from __future__ import annotations

import time

import pytest

from engine.generate.base import GenerationRequest as R
from engine.generate.endpoint import EndpointGenerator
from engine.recipe.errors import EngineError
from generate_support import ScriptedServer, chat_reply, prompt_key


def chat(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def behave(server, path, body, attempt):
    key = prompt_key(body)
    n = int(body.get("n", 1)) if isinstance(body, dict) else 1
    if key == "flaky429" and attempt <= 2:
        return 429, {"error": "slow down"}, {"Retry-After": "0"}
    if key == "flaky500" and attempt == 1:
        return 500, "internal error", {}
    if key == "slow" and attempt == 1:
        time.sleep(1.0)
    if key == "drop" and attempt == 1:
        return "drop"
    if key == "garbage":
        return 200, b"<html>not json", {"Content-Type": "text/html"}
    if key == "nochoices":
        return 200, {"choices": []}, {}
    if key == "bad400":
        return 400, {"error": {"message": "context too long"}}, {}
    if key == "one-at-a-time":
        return 200, chat_reply([f"sample {attempt}"]), {}
    if key.startswith("conc"):
        time.sleep(0.1)
    return 200, chat_reply([f"{key}#{i}" for i in range(n)]), {}


@pytest.fixture()
def server():
    s = ScriptedServer(behave)
    yield s
    s.close()


def endpoint(server, **extra):
    return EndpointGenerator({"source": "endpoint", "url": server.url + "/v1", "model": "m", "timeout": 0.5,
                              "retries": 3, "concurrency": 4, **extra}, backoff=0.01, max_backoff=0.05, progress=False)


def test_retries_then_success_and_failures_recorded_in_order(server):
    gen = endpoint(server)
    keys = ["ok", "flaky429", "flaky500", "slow", "drop", "garbage", "bad400", "nochoices", "ok2"]
    results = gen.generate([R(id=k, prompt=chat(k), n=2, temperature=1.0) for k in keys])
    assert [r.id for r in results] == keys  # nothing dropped, input order kept
    by = {r.id: r for r in results}
    for k in ("ok", "flaky429", "flaky500", "slow", "drop", "ok2"):
        assert by[k].ok, by[k].error
        assert by[k].texts == [f"{k}#0", f"{k}#1"]
    assert server.attempts["flaky429"] == 3 and server.attempts["flaky500"] == 2
    assert server.attempts["slow"] >= 2 and server.attempts["drop"] >= 2
    assert not by["garbage"].ok and "bad response" in by["garbage"].error and "4 attempts" in by["garbage"].error
    assert not by["nochoices"].ok
    assert not by["bad400"].ok and by["bad400"].error.startswith("HTTP 400") and server.attempts["bad400"] == 1
    for k in ("garbage", "bad400", "nochoices"):
        assert by[k].texts == [None, None] and by[k].finish_reasons == ["error", "error"]
    assert gen.counts.requests == len(keys) and gen.counts.failed == 3
    assert gen.counts.retries >= 2 + 1 + 1 + 1 + 3 + 3


def test_server_down_fails_every_request_with_a_reason():
    gen = EndpointGenerator({"url": "http://127.0.0.1:9/v1", "retries": 1}, backoff=0.01, progress=False)
    results = gen.generate([R(id=str(i), prompt=chat("x")) for i in range(3)])
    assert len(results) == 3 and all("connection error" in r.error for r in results)
    assert gen.counts.failed == 3


def test_greedy_n_is_one_call_repeated(server):
    result = endpoint(server).generate([R(id="a", prompt=chat("one-at-a-time"), n=3)])[0]
    assert result.texts == ["sample 1"] * 3 and server.attempts["one-at-a-time"] == 1


def test_fewer_choices_than_n_are_asked_again(server):
    result = endpoint(server).generate([R(id="a", prompt=chat("one-at-a-time"), n=3, temperature=1.0, seed=1)])[0]
    assert result.texts == ["sample 1", "sample 2", "sample 3"]


def test_request_body_and_stop_trimming(server):
    seen = []

    def record(s, path, body, attempt):
        seen.append((path, body))
        return 200, chat_reply(["answer STOP tail"]), {}

    server.behave = record
    result = endpoint(server).generate([R(id="a", prompt=chat("q"), temperature=0.5, top_p=0.9, max_new_tokens=7,
                                          stop=("STOP",), seed=5, logprobs=2, chat_template_kwargs={"enable_thinking": False})])[0]
    assert result.texts == ["answer "] and result.finish_reasons == ["stop"]
    path, body = seen[0]
    assert path == "/v1/chat/completions"
    assert body["messages"] == chat("q") and body["max_tokens"] == 7 and body["stop"] == ["STOP"] and body["top_p"] == 0.9
    assert body["logprobs"] is True and body["top_logprobs"] == 2 and isinstance(body["seed"], int)
    assert body["chat_template_kwargs"] == {"enable_thinking": False}


def test_concurrency_limit(server):
    gen = endpoint(server, concurrency=3)
    results = gen.generate([R(id=str(i), prompt=chat(f"conc{i}")) for i in range(10)])
    assert all(r.ok for r in results)
    assert server.in_flight_max <= 3


def test_api_key_only_from_the_environment(server, monkeypatch):
    monkeypatch.setenv("TEST_ENDPOINT_KEY", "sk-secret-value")
    gen = endpoint(server, api_key="${env:TEST_ENDPOINT_KEY}")
    assert gen.generate([R(id="a", prompt=chat("ok"))])[0].ok
    assert server.headers_seen[-1].get("Authorization") == "Bearer sk-secret-value"
    assert "sk-secret" not in repr(gen)
    server.behave = lambda *a: (400, "bad", {})
    assert "sk-secret" not in gen.generate([R(id="b", prompt=chat("x"))])[0].error
    monkeypatch.delenv("TEST_ENDPOINT_KEY")
    with pytest.raises(EngineError, match="TEST_ENDPOINT_KEY"):
        endpoint(server, api_key="${env:TEST_ENDPOINT_KEY}")


def test_custom_api_mapping_seed_002(server):
    seen = []

    def chat_api(s, path, body, attempt):
        seen.append((path, body))
        if body.get("message") == "fail":
            return 503, "down", {}
        return 200, {"data": {"response": f"reply to {body['message']}"}}, {}

    server.behave = chat_api
    gen = EndpointGenerator({"url": server.url, "api": "custom", "model": "qwen3:8b", "retries": 1,
                             "request": {"path": "/chat", "body": {"message": "{{ prompt }}", "model": "{{ model }}",
                                                                   "history": "{{ messages }}", "mode": "tutor"},
                                         "response_field": "data.response"}},
                            backoff=0.01, progress=False)
    messages = [{"role": "system", "content": "be kind"}, {"role": "user", "content": "What is 2+3?"}]
    results = gen.generate([R(id="a", prompt=messages, n=2, temperature=0.7), R(id="b", prompt=chat("fail"))])
    assert results[0].texts == ["reply to What is 2+3?"] * 2 and len(seen) == 2 + 2  # one call per sample
    assert results[1].error.startswith("HTTP 503")
    path, body = next((p, b) for p, b in seen if b["message"] != "fail")  # requests run concurrently: any order
    assert path == "/chat" and body["model"] == "qwen3:8b" and body["history"] == messages and body["mode"] == "tutor"


def test_custom_api_get_and_missing_field(server):
    server.behave = lambda s, path, body, attempt: (200, {"other": 1}, {})
    gen = EndpointGenerator({"url": server.url, "api": "custom", "retries": 0,
                             "request": {"method": "GET", "path": "/ask", "body": {"q": "{{ prompt }}"}}}, progress=False)
    result = gen.generate([R(id="a", prompt=chat("hi"))])[0]
    assert not result.ok and "bad response" in result.error


def test_logprobs_for_reads_top_logprobs(server):
    def with_logprobs(s, path, body, attempt):
        reply = chat_reply(["Yes"])
        reply["choices"][0]["logprobs"] = {"content": [{"token": "Yes", "logprob": -0.2, "top_logprobs": [
            {"token": "Yes", "logprob": -0.2}, {"token": "No", "logprob": -1.8}]}]}
        assert body["max_tokens"] == 1 and body["logprobs"] is True and body["top_logprobs"] == 20
        return 200, reply, {}

    server.behave = with_logprobs
    got = endpoint(server).logprobs_for([chat("can you?")], ["Yes", "No", "maybe"])
    assert got == [{"Yes": -0.2, "No": -1.8, "maybe": None}]


def test_generate_inside_a_running_event_loop(server):
    import asyncio

    async def main():
        return endpoint(server).generate([R(id="a", prompt=chat("ok"))])

    assert asyncio.run(main())[0].texts == ["ok#0"]
