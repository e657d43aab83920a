"""kvslim serve against the OpenAI client and raw HTTP, on loopback.

Greedy (temperature 0) outputs are compared with `kvslim run` and between
runs: the same request must give the same text alone, cached, streamed or
among concurrent ones. Loops are bounded in count and time.
"""
import concurrent.futures
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import uuid

import openai
import pytest

from conftest import BIN, HOST, MODEL


def raw(server, method, path, body=None, headers=None, timeout=60):
    c = http.client.HTTPConnection(HOST, server.port, timeout=timeout)
    try:
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        c.close()


def metrics(server):
    st, _, body = raw(server, "GET", "/metrics")
    assert st == 200
    out = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


def wait_for(pred, seconds=60, what="condition"):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


def chat(client, user, system=None, **kw):
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    kw.setdefault("max_tokens", 24)
    kw.setdefault("temperature", 0)
    return client.chat.completions.create(model="any", messages=msgs, **kw)


def kvslim_run(*args):
    p = subprocess.run([BIN, "run", "-m", MODEL, "-t", "2", "--temp", "0", *args], capture_output=True, timeout=300)
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout.endswith(b"\n")
    return p.stdout[:-1].decode()


# ---- the API --------------------------------------------------------------------------

def test_models_and_health(server, client):
    ids = [m.id for m in client.models.list().data]
    assert ids == ["smollm2-135m-instruct-q4_1"]
    st, _, body = raw(server, "GET", "/health")
    assert st == 200 and json.loads(body)["status"] == "ok"


def test_completion_matches_kvslim_run(client):
    prompt = "Once upon a time"
    r = client.completions.create(model="any", prompt=prompt, max_tokens=16, temperature=0)
    assert r.object == "text_completion"
    want = kvslim_run("-p", prompt, "-n", "16")
    c = r.choices[0]
    assert c.text == want
    if c.finish_reason == "length":
        assert r.usage.completion_tokens == 16
    else:
        assert c.finish_reason == "stop" and r.usage.completion_tokens < 16
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_matches_kvslim_run(client):
    q = "What is the capital of France?"
    r = chat(client, q, max_tokens=20)
    assert r.object == "chat.completion"
    m = r.choices[0].message
    assert m.role == "assistant"
    assert m.content == kvslim_run("--chat", "-p", q, "-n", "20")
    assert r.choices[0].finish_reason in ("stop", "length")
    assert 0 < r.usage.completion_tokens <= 20
    assert r.usage.prompt_tokens > 10


def test_usage_counts_token_prompt(client):
    toks = [504, 3458, 282, 253, 1134, 28, 9137, 260, 4253]  # any valid ids
    r = client.completions.create(model="any", prompt=toks, max_tokens=5, temperature=0)
    assert r.usage.prompt_tokens == len(toks)
    assert r.usage.prompt_tokens_details.cached_tokens == 0
    assert r.usage.completion_tokens <= 5
    if r.choices[0].finish_reason == "length":
        assert r.usage.completion_tokens == 5


def test_stream_chat_equals_whole(client):
    q = "Name three colours."
    whole = chat(client, q, max_tokens=24)
    chunks = list(chat(client, q, max_tokens=24, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_raw_sse(server):
    st, hdr, body = raw(server, "POST", "/v1/completions",
                        {"prompt": "The sky is", "max_tokens": 6, "temperature": 0, "stream": True})
    assert st == 200 and hdr["Content-Type"].startswith("text/event-stream")
    events = [e for e in body.decode().split("\n\n") if e.strip()]
    assert events[-1] == "data: [DONE]"
    datas = [json.loads(e[len("data: "):]) for e in events[:-1] if e.startswith("data: ")]
    assert datas and all(d["object"] == "text_completion" for d in datas)
    assert datas[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert not any("usage" in d for d in datas)  # no include_usage: no usage chunk


def test_stream_completion_equals_whole(client):
    kw = dict(model="any", prompt="The three laws of robotics are", max_tokens=20, temperature=0)
    whole = client.completions.create(**kw).choices[0].text
    streamed = "".join(c.choices[0].text for c in client.completions.create(stream=True, **kw) if c.choices)
    assert streamed == whole


def test_stop_sequences(client):
    kw = dict(model="any", prompt="Once upon a time", max_tokens=24, temperature=0)
    full = client.completions.create(**kw).choices[0].text
    words = re.findall(r" [a-z]{3,}", full)
    assert len(words) >= 2, full
    stop = words[1]
    want = full[: full.index(stop)]
    r = client.completions.create(stop=[stop, "\u0001never"], **kw)
    assert r.choices[0].text == want
    assert r.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].text for c in client.completions.create(stop=stop, stream=True, **kw) if c.choices)
    assert streamed == want
    # a stop sequence that never occurs changes nothing
    r = client.completions.create(stop="zzzqqq", **kw)
    assert r.choices[0].text == full


def test_cached_tokens_same_system_prompt(client, server):
    system = f"You are a terse assistant (session {uuid.uuid4().hex}). Answer in one short sentence, no lists."
    before = metrics(server)
    a = chat(client, "What is two plus two?", system=system, max_tokens=12)
    b = chat(client, "What is two plus two?", system=system, max_tokens=12)
    c = chat(client, "Name a planet.", system=system, max_tokens=12)
    assert a.usage.prompt_tokens_details.cached_tokens == 0
    cached = b.usage.prompt_tokens_details.cached_tokens
    assert cached >= 20 and cached < b.usage.prompt_tokens
    assert c.usage.prompt_tokens_details.cached_tokens == cached
    # a prefix hit gives what the cold prefill gave
    assert b.choices[0].message.content == a.choices[0].message.content
    after = metrics(server)
    assert after["kvslim_cached_prompt_tokens_total"] - before["kvslim_cached_prompt_tokens_total"] >= 2 * cached
    assert after["kvslim_prefix_cache_hits_total"] >= before["kvslim_prefix_cache_hits_total"] + 2


# Batched steps run many rows through the many-row matmul where a request alone
# runs one row; the engine's logits then differ in rounding (up to about 1.5
# in a logit on SmolLM2), so a greedy choice between two near-equal tokens may
# flip. Outputs must agree up to such a near tie, where the other choice is the
# sequential run's runner-up within this many nats.
NEAR_TIE = 1.5


def lp_tokens(r):
    return [x.token for x in r.choices[0].logprobs.content]


def test_logprobs(client):
    r = chat(client, "Name a colour.", max_tokens=8, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    assert "".join(x.token for x in content) == r.choices[0].message.content
    for x in content:
        assert x.logprob <= 0 and len(x.top_logprobs) == 3
        lps = [t.logprob for t in x.top_logprobs]
        assert lps == sorted(lps, reverse=True)
        assert x.token == x.top_logprobs[0].token and abs(x.logprob - lps[0]) < 1e-6  # greedy
        assert bytes(x.bytes).decode("utf-8", "replace") == x.token
    c = client.completions.create(model="m", prompt="The sky is", max_tokens=4, temperature=0, logprobs=2)
    lp = c.choices[0].logprobs
    assert "".join(lp.tokens) == c.choices[0].text and len(lp.token_logprobs) == len(lp.tokens)
    assert lp.text_offset[0] == 0 and all(len(t) == 2 for t in lp.top_logprobs)


def test_concurrent_equals_sequential(client):
    qs = ["Tell me about cats.", "What is rain?", "Describe the moon.", "Why is the sea salty?",
          "Give me a fruit name.", "What is a computer?"]

    def run(q):
        return chat(client, q, max_tokens=24, logprobs=True, top_logprobs=3)
    seq = [run(q) for q in qs]
    with concurrent.futures.ThreadPoolExecutor(len(qs)) as ex:
        par = list(ex.map(run, qs))
    for q, a, b in zip(qs, seq, par):
        ta, tb = lp_tokens(a), lp_tokens(b)
        assert "".join(ta) == a.choices[0].message.content and "".join(tb) == b.choices[0].message.content
        if ta == tb:
            continue
        i = next((k for k in range(min(len(ta), len(tb))) if ta[k] != tb[k]), min(len(ta), len(tb)))
        assert i < min(len(ta), len(tb)), f"{q!r}: one output is a prefix of the other: {ta} vs {tb}"
        tops = {t.token: t.logprob for t in a.choices[0].logprobs.content[i].top_logprobs}
        assert tb[i] in tops and tops[ta[i]] - tops[tb[i]] < NEAR_TIE, (
            f"{q!r}: token {i} is {tb[i]!r} in the batch, {ta[i]!r} alone, not a near tie: {tops}")


def test_concurrent_same_prompts_agree(client):
    # rows of one batch: the same prompt gives the same text, whatever runs beside it
    qs = ["What is rain?", "Describe the moon.", "What is rain?", "Describe the moon."]
    with concurrent.futures.ThreadPoolExecutor(len(qs)) as ex:
        out = list(ex.map(lambda q: chat(client, q, max_tokens=24).choices[0].message.content, qs))
    assert out[0] == out[2] and out[1] == out[3] and out[0] != out[1]


# ---- bad input ------------------------------------------------------------------------

BAD = [
    (b"{not json", 400, "malformed JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (b'{"messages": "hi"}', 400, "must be an array"),
    (b'{"messages": []}', 400, "at least one"),
    (b'{"messages": [{"role": "user", "content": 5}]}', 400, "content must be"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": "8"}', 400, "must be an integer"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}', 400, "from 1"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "temperature": "warm"}', 400, "must be a number"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "temperature": 9}', 400, "at most 2"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "stream": 1}', 400, "true or false"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "stop": 7}', 400, "stop"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "n": 3}', 400, "n = 1"),
    (b'{"messages": [{"role": "wizard", "content": "hi"}]}', 400, "role"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000}', 400, "exceed the context"),
    (b'\xff\xfe{"messages": 1}', 400, "malformed JSON"),
]


@pytest.mark.parametrize("body,status,msg", BAD)
def test_bad_requests_get_clear_errors(server, body, status, msg):
    st, hdr, out = raw(server, "POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    assert st == status
    err = json.loads(out)["error"]
    assert msg in err["message"] and err["type"] == "invalid_request_error"


def test_unknown_fields_ignored(client):
    r = client.chat.completions.create(model="whatever", messages=[{"role": "user", "content": "Hi"}], max_tokens=3,
                                       temperature=0, extra_body={"frobnicate": {"x": [1, 2]}, "logit_bias": {}})
    assert r.choices[0].finish_reason in ("stop", "length")


def test_content_parts_and_refusals(client):
    parts = [{"type": "text", "text": "What is the capital "}, {"type": "text", "text": "of France?"}]
    a = client.chat.completions.create(model="m", messages=[{"role": "user", "content": parts}], max_tokens=12,
                                       temperature=0)
    b = chat(client, "What is the capital of France?", max_tokens=12)
    assert a.choices[0].message.content == b.choices[0].message.content
    with pytest.raises(openai.BadRequestError, match="not supported"):
        client.chat.completions.create(model="m", max_tokens=4, messages=[
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}])


def test_limits(server, client):
    st, _, out = raw(server, "POST", "/v1/completions", b"x" * (300 * 1024))
    assert st == 413 and "body" in json.loads(out)["error"]["message"]
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="m", prompt=[42] * 1600, max_tokens=4)
    assert e.value.code == "context_length_exceeded"
    st, _, out = raw(server, "GET", "/v1/nowhere")
    assert st == 404
    st, _, out = raw(server, "GET", "/v1/chat/completions")
    assert st == 405


def test_hostile_clients_do_not_disturb_others(server, client):
    q = "Describe a forest in two sentences."
    want = chat(client, q, max_tokens=40).choices[0].message.content
    done = {}
    t = threading.Thread(target=lambda: done.setdefault("r", chat(client, q, max_tokens=40)))
    t.start()
    socks = []
    try:
        for _ in range(4):  # stalled clients: half a request line, then nothing
            s = socket.create_connection((HOST, server.port), timeout=10)
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"mess")
            socks.append(s)
        s = socket.create_connection((HOST, server.port), timeout=10)  # garbage
        s.sendall(b"\x00\x01\x02 NOT HTTP AT ALL\r\n\r\n")
        s.close()
        for body, status, _ in BAD[:6]:
            st, _, _ = raw(server, "POST", "/v1/chat/completions", body)
            assert st == status
        st, _, _ = raw(server, "POST", "/v1/completions", b"[" * 100000)
        assert st in (400, 413)
        t.join(timeout=120)
        assert not t.is_alive()
        assert done["r"].choices[0].message.content == want
    finally:
        for s in socks:
            s.close()
    assert raw(server, "GET", "/health")[0] == 200


def test_disconnect_frees_the_sequence(make_server):
    server = make_server("-c", "2048", "--parallel", "2", "--ignore-eos")
    before = metrics(server)
    s = socket.create_connection((HOST, server.port), timeout=30)
    body = json.dumps({"prompt": "Write a very long story about a dragon.", "max_tokens": 1500, "temperature": 0.8,
                       "stream": True}).encode()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n" % len(body) + body)
    got = b""
    while b"data: " not in got:
        chunk = s.recv(4096)
        assert chunk
        got += chunk
    s.close()
    cancelled = 'kvslim_requests_total{outcome="cancelled"}'
    wait_for(lambda: metrics(server)[cancelled] == before[cancelled] + 1, 60, "the request to be cancelled")
    wait_for(lambda: metrics(server)["kvslim_requests_running"] == 0, 60, "the request to be freed")
    after = metrics(server)
    assert after["kvslim_sequences"] == before["kvslim_sequences"]
    assert after["kvslim_generated_tokens_total"] - before["kvslim_generated_tokens_total"] < 1500


def test_metrics_text(server, client):
    chat(client, "Hello there.", max_tokens=2)  # a chat leaves its prompt's prefix cached: pages in the pool
    st, hdr, body = raw(server, "GET", "/metrics")
    assert st == 200 and hdr["Content-Type"].startswith("text/plain")
    m = metrics(server)
    for k in ("kvslim_kv_bytes", "kvslim_kv_budget_bytes", "kvslim_requests_running", "kvslim_sequences",
              'kvslim_requests_total{outcome="ok"}', "kvslim_generated_tokens_total"):
        assert k in m
    assert 0 < m["kvslim_kv_bytes"] <= m["kvslim_kv_budget_bytes"]  # cached prefixes hold pages
    st, _, body = raw(server, "GET", "/metrics.json")
    j = json.loads(body)
    assert j["kv_budget"] == m["kvslim_kv_budget_bytes"] and "layers 0-29" in j["kv_scheme"]


# ---- servers of their own ---------------------------------------------------------------

def test_api_key_and_kv_scheme(make_server):
    s = make_server("-c", "512", "--parallel", "1", "--api-key", "sekrit-key", "--kv", "q8_0",
                    "--kv-layer", "20-29:window=128+4")
    import openai as oa
    good = oa.OpenAI(base_url=s.url + "/v1", api_key="sekrit-key", max_retries=0, timeout=60)
    bad = oa.OpenAI(base_url=s.url + "/v1", api_key="sekrit-kez", max_retries=0, timeout=60)
    assert good.models.list().data[0].id
    with pytest.raises(oa.AuthenticationError):
        bad.models.list()
    with pytest.raises(oa.AuthenticationError):
        bad.completions.create(model="m", prompt="hi", max_tokens=2)
    assert raw(s, "POST", "/v1/completions", {"prompt": "hi"})[0] == 401
    assert raw(s, "GET", "/metrics")[0] == 401
    assert raw(s, "GET", "/metrics", headers={"Authorization": "Bearer sekrit-key"})[0] == 200
    assert raw(s, "GET", "/health")[0] == 200
    r = good.completions.create(model="m", prompt="hi", max_tokens=2, temperature=0)
    assert r.usage.completion_tokens <= 2
    m = json.loads(raw(s, "GET", "/metrics.json", headers={"Authorization": "Bearer sekrit-key"})[2])
    assert m["kv_scheme"].startswith("layers 0-19: full 3x64 q8_0") and "layers 20-29: window 128+4" in m["kv_scheme"]


def test_request_timeout(make_server):
    s = make_server("-c", "4096", "--parallel", "1", "--ignore-eos", "--timeout", "1")
    c = openai.OpenAI(base_url=s.url + "/v1", api_key="x", max_retries=0, timeout=120)
    with pytest.raises(openai.APIStatusError) as e:
        c.completions.create(model="m", prompt="Count:", max_tokens=4000)
    assert e.value.status_code == 503 and "timeout" in str(e.value)
    wait_for(lambda: metrics(s)["kvslim_requests_running"] == 0, 60, "the timed-out request to be freed")
    assert metrics(s)['kvslim_requests_total{outcome="error"}'] == 1


def test_queue_full_and_budget(make_server):
    # one running, one waiting: a third request is refused with 429 and Retry-After
    s = make_server("-c", "4096", "--parallel", "1", "--queue", "1", "--ignore-eos", "--kv-page", "64",
                    "--kv-budget", "48M")
    c = openai.OpenAI(base_url=s.url + "/v1", api_key="x", max_retries=0, timeout=120)
    with pytest.raises(openai.BadRequestError) as e:  # more than the pool holds
        c.completions.create(model="m", prompt="hi", max_tokens=3000)
    assert e.value.code == "kv_budget_exceeded"
    long_a = c.completions.create(model="m", prompt="A long tale:", max_tokens=1500, stream=True)
    next(iter(long_a))  # running
    res = {}

    def second():
        try:
            res["b"] = c.completions.create(model="m", prompt="Short:", max_tokens=4, temperature=0)
        except Exception as ex:  # noqa: BLE001 - reported below
            res["b"] = ex
    t = threading.Thread(target=second)
    t.start()
    wait_for(lambda: metrics(s)["kvslim_requests_queued"] == 1, 60, "the second request to queue")
    st, hdr, body = raw(s, "POST", "/v1/completions", {"prompt": "Third", "max_tokens": 2})
    assert st == 429 and int(hdr["Retry-After"]) >= 1
    assert json.loads(body)["error"]["code"] == "queue_full"
    long_a.close()  # a client that goes away frees its slot: the queued one runs
    t.join(timeout=120)
    assert not t.is_alive()
    assert not isinstance(res["b"], Exception), res["b"]
    assert res["b"].usage.completion_tokens == 4  # --ignore-eos
    assert metrics(s)["kvslim_kv_bytes"] <= 48 * 2**20


def test_sigterm_cuts_running_requests_cleanly(make_server):
    s = make_server("-c", "4096", "--parallel", "2", "--ignore-eos", "--grace", "0.5")
    c = openai.OpenAI(base_url=s.url + "/v1", api_key="x", max_retries=0, timeout=120)
    stream = c.completions.create(model="m", prompt="Count:", max_tokens=3000, stream=True)
    it = iter(stream)
    next(it)
    s.proc.send_signal(signal.SIGTERM)
    with pytest.raises(openai.APIError, match="shutting down"):
        for _ in it:
            pass
    assert s.proc.wait(timeout=60) == 0
    log = s.read_log()
    assert "SIGTERM: shutting down" in log and "stopped" in log


def test_kv_dir_survives_kill9(make_server, tmp_path):
    kvdir = str(tmp_path / "kv")
    system = f"You answer questions about ships (run {uuid.uuid4().hex}). " + "Keep answers short and plain. " * 12
    s = make_server("-c", "2048", "--parallel", "2", "--kv-dir", kvdir)
    c = openai.OpenAI(base_url=s.url + "/v1", api_key="x", max_retries=0, timeout=120)
    a = chat(c, "What is a hull?", system=system, max_tokens=8)
    assert a.usage.prompt_tokens_details.cached_tokens == 0
    files = wait_for(lambda: [f for f in os.listdir(kvdir) if not f.startswith(".")], 30, "a prefix file in --kv-dir")
    s.kill9()  # nothing is flushed at exit
    t = make_server("-c", "2048", "--parallel", "2", "--kv-dir", kvdir)
    c = openai.OpenAI(base_url=t.url + "/v1", api_key="x", max_retries=0, timeout=120)
    b = chat(c, "What is a mast?", system=system, max_tokens=8)
    cached = b.usage.prompt_tokens_details.cached_tokens
    assert cached >= 64 and cached < b.usage.prompt_tokens, (cached, files)
    # the prefix read back from disk gives what a cold prefill gives
    cold = make_server("-c", "2048", "--parallel", "2")
    c = openai.OpenAI(base_url=cold.url + "/v1", api_key="x", max_retries=0, timeout=120)
    want = chat(c, "What is a mast?", system=system, max_tokens=8)
    assert want.usage.prompt_tokens_details.cached_tokens == 0
    assert b.choices[0].message.content == want.choices[0].message.content
    # a file that is not a sequence file in the directory is ignored, not fatal
    with open(os.path.join(kvdir, "junk.kvs"), "wb") as f:
        f.write(b"not a sequence file")
    t.stop()
    u = make_server("-c", "2048", "--parallel", "2", "--kv-dir", kvdir)
    c = openai.OpenAI(base_url=u.url + "/v1", api_key="x", max_retries=0, timeout=120)
    assert chat(c, "What is a keel?", system=system, max_tokens=4).usage.prompt_tokens_details.cached_tokens >= 64


def test_dashboard_page(server):
    st, hdr, body = raw(server, "GET", "/")
    assert st == 200 and hdr["Content-Type"].startswith("text/html")
    page = body.decode()
    assert "<textarea" in page and "/metrics.json" in page and "/v1/chat/completions" in page
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", page), "the page fetches nothing from elsewhere"
    m = json.loads(raw(server, "GET", "/metrics.json")[2])
    for k in re.findall(r"\bm\.([a-z_]+)", page):  # every field the page reads is served
        assert k in m, k


GEMMA = os.path.join(os.path.dirname(MODEL), "gemma-3-270m-q4_k_m.gguf")


@pytest.mark.skipif(not os.path.exists(GEMMA) and os.environ.get("KVS_REQUIRE_MODELS") != "1",
                    reason="Gemma 3 270M absent (make models)")
@pytest.mark.skipif(os.environ.get("KVS_SKIP_SLOW") == "1", reason="KVS_SKIP_SLOW=1 (the sanitizer run)")
def test_gemma3_sliding_window_chat(tmpdir_session):
    # Gemma's template folds the system prompt into the first user turn, so what
    # is reused is a conversation's history; its layers are sliding-window ones
    from conftest import Server
    s = Server("-m", GEMMA, "-c", "1024", "--parallel", "2", tmpdir=tmpdir_session)
    try:
        c = openai.OpenAI(base_url=s.url + "/v1", api_key="x", max_retries=0, timeout=120)
        r = chat(c, "What is 2+2?", max_tokens=8)
        p = subprocess.run([BIN, "run", "-m", GEMMA, "-t", "2", "--temp", "0", "--chat", "-p", "What is 2+2?", "-n", "8"],
                           capture_output=True, timeout=300)
        assert p.returncode == 0 and r.choices[0].message.content == p.stdout.decode()[:-1]
        hist = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"}]
        a = c.chat.completions.create(model="m", messages=hist + [{"role": "user", "content": "Name a colour."}],
                                      max_tokens=6, temperature=0)
        b = c.chat.completions.create(model="m", messages=hist + [{"role": "user", "content": "Name a colour."}],
                                      max_tokens=6, temperature=0)
        assert a.usage.prompt_tokens_details.cached_tokens == 0
        assert 0 < b.usage.prompt_tokens_details.cached_tokens < b.usage.prompt_tokens
        assert a.choices[0].message.content == b.choices[0].message.content
    finally:
        assert s.stop() == 0
