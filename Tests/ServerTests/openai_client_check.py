"""Drives a running `vtensor serve` with the official `openai` Python client.

Usage: python3 openai_client_check.py BASE_URL MODEL [--near-ties]   (BASE_URL ends in /v1)

Every check runs; each failure prints what was expected and what came back, and the exit
status is 1 if any check failed (2 if the client is not installed). Expected values are
computed from other responses (a greedy run, a single-prompt run), never written in by hand.

Every request carries a fresh `cache_salt`, so each one computes its prompt from scratch: a
prefix-cache hit computes the last prompt tokens in a smaller step, which the GPU rounds
differently. Requests that must agree then take the same arithmetic, except where a check compares
a batch with a request alone. The CPU gives identical tokens there too; the GPU's kernels pick
their splits by batch size, so with --near-ties (the GPU check) such texts must agree up to a
first difference that is a near tie in the logprobs (how near is printed as a note).
"""

import json
import itertools
from types import SimpleNamespace as Namespace
import math
import sys
import time
import traceback
import urllib.request

try:
    import openai
except ImportError:
    print("the `openai` package is missing: pip install -r Tests/requirements.txt")
    sys.exit(2)

BASE, MODEL = sys.argv[1], sys.argv[2]
NEAR_TIES = "--near-ties" in sys.argv[3:]
# The largest logprob gap between the two tokens where a batch and a lone request part (nats).
# The GPU check's random model has logits spread over ~10 nats (its output head is scaled x8), and
# a different batch size's rounding through 32 bf16 layers moves them by tenths of a nat; a wrong
# prompt's or seed's token is rarely among the other's five most likely at all.
NEAR_TIE_GAP = 1.0
client = openai.OpenAI(base_url=BASE, api_key="unused", max_retries=0, timeout=120)

PROMPT = "The tallest mountain in the world is"
# Generation runs to max_tokens (no early end-of-sequence) wherever lengths are compared.
NO_EOS = {"ignore_eos": True}


def check(condition, message):
    if not condition:
        raise AssertionError(message)


SALTS = itertools.count()


def salted(kwargs):
    """Adds a cache_salt of its own to a request (see the module's note)."""
    kwargs.setdefault("model", MODEL)
    kwargs["extra_body"] = {"cache_salt": f"check-{time.time_ns()}-{next(SALTS)}", **(kwargs.get("extra_body") or {})}
    return kwargs


def complete(**kwargs):
    return client.completions.create(**salted(kwargs))


def chat(**kwargs):
    return client.chat.completions.create(**salted(kwargs))


def agree(batched, alone, where, sampled=False):
    """Two completions choices of the same prompt (logprobs asked for) hold the same tokens. With
    --near-ties they may part at one position: greedy, where the two tokens are within
    NEAR_TIE_GAP of each other in both responses' top_logprobs; sampled, anywhere after the first
    token (a draw near a boundary of the cumulative distribution goes either way when the logits
    move by a rounding, and this random model's distributions are flat), but the first token, drawn
    from the prompt's logits with the same seed, must agree."""
    if not NEAR_TIES or batched.text == alone.text:
        check(batched.text == alone.text, f"{where}: {batched.text!r} in the batch, {alone.text!r} alone")
        return
    a, b = alone.logprobs, batched.logprobs
    i = next((i for i, (x, y) in enumerate(zip(a.tokens, b.tokens)) if x != y), None)
    check(i is not None, f"{where}: the same tokens {a.tokens} spell {batched.text!r} and {alone.text!r}")
    x, y = a.tokens[i], b.tokens[i]
    if sampled:
        check(i > 0, f"{where}: the first token differs: {y!r} in the batch, {x!r} alone")
        NOTES.append(f"{where}: batch and lone request part at token {i} ({y!r} vs {x!r}), a draw near a boundary")
        return
    gaps = []
    for top in (a.top_logprobs[i], b.top_logprobs[i]):
        check(x in top and y in top, f"{where}: at token {i} ({x!r} alone, {y!r} batched) not both in {top}")
        gaps.append(abs(top[x] - top[y]))
    check(max(gaps) <= NEAR_TIE_GAP, f"{where}: at token {i} {x!r} and {y!r} are {max(gaps):.3f} apart, no near tie")
    NOTES.append(f"{where}: batch and lone request part at token {i} of {len(a.tokens)}, a near tie ({max(gaps):.3f} nats)")


def greedy(prompt=PROMPT, max_tokens=8):
    return complete(prompt=prompt, max_tokens=max_tokens, temperature=0, extra_body=NO_EOS)


def check_usage(usage, where):
    check(usage is not None, f"{where}: no usage")
    check(usage.total_tokens == usage.prompt_tokens + usage.completion_tokens,
          f"{where}: total_tokens {usage.total_tokens} != {usage.prompt_tokens} + {usage.completion_tokens}")


def check_legacy_logprobs(logprobs, count, k, where, greedy_pick):
    """The completions object: parallel lists of `count` entries, each scored entry's map
    holding the chosen token (with its own logprob) and up to k alternatives."""
    check(logprobs is not None, f"{where}: no logprobs")
    for field in ("tokens", "token_logprobs", "top_logprobs", "text_offset"):
        check(len(getattr(logprobs, field)) == count,
              f"{where}: {field} has {len(getattr(logprobs, field))} entries, expected {count}")
    check(all(b >= a for a, b in zip(logprobs.text_offset, logprobs.text_offset[1:])),
          f"{where}: text_offset not increasing: {logprobs.text_offset}")
    for i, (token, lp, top) in enumerate(zip(logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs)):
        if lp is None:
            check(top is None, f"{where}[{i}]: no logprob but top_logprobs {top}")
            continue
        check(lp <= 0 and math.isfinite(lp), f"{where}[{i}]: logprob {lp} of {token!r} is not a finite number <= 0")
        check(1 <= len(top) <= k + 1, f"{where}[{i}]: {len(top)} top_logprobs entries for logprobs={k}: {top}")
        check(all(v <= 0 for v in top.values()), f"{where}[{i}]: a top logprob > 0: {top}")
        check(token in top and abs(top[token] - lp) < 1e-6,
              f"{where}[{i}]: the chosen token {token!r} ({lp}) is not in top_logprobs with its logprob: {top}")
        if greedy_pick:
            check(lp >= max(top.values()) - 1e-6, f"{where}[{i}]: greedy picked {token!r} ({lp}) below an alternative: {top}")


def check_chat_logprobs(content, count, k, where):
    check(content is not None and len(content) == count, f"{where}: {len(content or [])} logprobs entries, expected {count}")
    for i, entry in enumerate(content):
        check(entry.logprob <= 0, f"{where}[{i}]: logprob {entry.logprob} > 0")
        check(entry.bytes == list(entry.token.encode("utf-8")), f"{where}[{i}]: bytes {entry.bytes} are not the UTF-8 of {entry.token!r}")
        tops = entry.top_logprobs
        check(len(tops) == k, f"{where}[{i}]: {len(tops)} top_logprobs, expected {k}")
        values = [t.logprob for t in tops]
        check(values == sorted(values, reverse=True), f"{where}[{i}]: top_logprobs not sorted, most likely first: {values}")
        check(all(v <= 0 for v in values), f"{where}[{i}]: a top logprob > 0: {values}")
        same = [t for t in tops if t.token == entry.token]
        if same:
            check(abs(same[0].logprob - entry.logprob) < 1e-6,
                  f"{where}[{i}]: {entry.token!r} has logprob {entry.logprob} but {same[0].logprob} in top_logprobs")


# MARK: checks


def models():
    listed = [m.id for m in client.models.list()]
    check(listed == [MODEL], f"models.list() gave {listed}, expected [{MODEL!r}]")


def completion_reaches_max_tokens():
    r = complete(prompt=PROMPT, max_tokens=6, temperature=0, extra_body=NO_EOS)
    choice = r.choices[0]
    check(r.object == "text_completion", f"object {r.object!r}")
    check(choice.finish_reason == "length", f"finish_reason {choice.finish_reason!r}, expected 'length'")
    check(r.usage.completion_tokens == 6, f"completion_tokens {r.usage.completion_tokens}, expected max_tokens 6")
    check(choice.text, "empty text")
    check_usage(r.usage, "completion")


def chat_completion():
    r = chat(messages=[{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello."}],
             max_tokens=5, temperature=0, extra_body=NO_EOS)
    choice = r.choices[0]
    check(r.object == "chat.completion", f"object {r.object!r}")
    check(choice.message.role == "assistant", f"role {choice.message.role!r}")
    check(choice.message.content, "empty content")
    check(choice.finish_reason == "length" and r.usage.completion_tokens == 5,
          f"finish_reason {choice.finish_reason!r} with {r.usage.completion_tokens} tokens, expected 'length' with 5")
    check_usage(r.usage, "chat")
    # max_completion_tokens is chat's newer name for the limit.
    r = chat(messages=[{"role": "user", "content": [{"type": "text", "text": "Count: "}, {"type": "text", "text": "one, two"}]}],
             max_completion_tokens=3, temperature=0, extra_body=NO_EOS)
    check(r.usage.completion_tokens == 3, f"max_completion_tokens=3 gave {r.usage.completion_tokens} tokens")


def streamed_completion_matches_whole():
    whole = greedy(max_tokens=6)
    chunks = list(complete(prompt=PROMPT, max_tokens=6, temperature=0, extra_body=NO_EOS, stream=True, logprobs=0,
                           stream_options={"include_usage": True}))
    check(chunks[-1].usage is not None and not chunks[-1].choices, f"the last chunk is not the usage chunk: {chunks[-1]}")
    body = chunks[:-1]
    check(all(c.usage is None for c in body), "usage before the last chunk")
    text = "".join(c.choices[0].text for c in body)
    check(text == whole.choices[0].text, f"streamed text {text!r} != whole text {whole.choices[0].text!r}")
    finishes = [c.choices[0].finish_reason for c in body if c.choices[0].finish_reason]
    check(finishes == ["length"], f"finish reasons {finishes}, expected one 'length'")
    streamed_tokens = sum(len(c.choices[0].logprobs.tokens) for c in body if c.choices[0].logprobs)
    usage = chunks[-1].usage
    check_usage(usage, "stream usage")
    check(streamed_tokens == usage.completion_tokens == whole.usage.completion_tokens,
          f"tokens streamed {streamed_tokens}, usage {usage.completion_tokens}, whole response {whole.usage.completion_tokens}")
    check(usage.prompt_tokens == whole.usage.prompt_tokens, f"prompt_tokens {usage.prompt_tokens} vs {whole.usage.prompt_tokens}")


def token_ids():
    """return_token_ids (vLLM's, through extra_body): the generated ids count as the usage says
    and a stream carries the same ids; the prompt's ids come with the first chunk (completions) or
    on the response (chat)."""
    ids_field = {**NO_EOS, "return_token_ids": True}
    whole = complete(prompt=PROMPT, max_tokens=5, temperature=0, extra_body=ids_field)
    choice = whole.choices[0]
    ids, prompt_ids = getattr(choice, "token_ids", None), getattr(choice, "prompt_token_ids", None)
    check(ids is not None and len(ids) == whole.usage.completion_tokens == 5, f"token_ids {ids}, usage {whole.usage}")
    check(prompt_ids is not None and len(prompt_ids) == whole.usage.prompt_tokens, f"prompt_token_ids {prompt_ids}, usage {whole.usage}")
    chunks = list(complete(prompt=PROMPT, max_tokens=5, temperature=0, extra_body=ids_field, stream=True))
    streamed = [i for c in chunks if c.choices for i in (getattr(c.choices[0], "token_ids", None) or [])]
    check(streamed == ids, f"streamed token_ids {streamed} != whole {ids}")
    check(getattr(chunks[0].choices[0], "prompt_token_ids", None) == prompt_ids, "the first chunk lacks the prompt's ids")
    r = chat(messages=[{"role": "user", "content": "Say hello."}], max_tokens=4, temperature=0, extra_body=ids_field)
    chat_ids, chat_prompt = getattr(r.choices[0], "token_ids", None), getattr(r, "prompt_token_ids", None)
    check(chat_ids is not None and len(chat_ids) == r.usage.completion_tokens == 4, f"chat token_ids {chat_ids}")
    check(chat_prompt is not None and len(chat_prompt) == r.usage.prompt_tokens, f"chat prompt_token_ids {chat_prompt}")
    plain = complete(prompt=PROMPT, max_tokens=2, temperature=0)
    check(getattr(plain.choices[0], "token_ids", None) is None, "token_ids without return_token_ids")


def streamed_chat_with_n():
    n = 3
    chunks = list(chat(messages=[{"role": "user", "content": "Name a color."}], max_tokens=6, n=n, temperature=1, seed=11,
                       stream=True, logprobs=True, top_logprobs=2, stream_options={"include_usage": True}))
    usage = chunks[-1].usage
    check(usage is not None and not chunks[-1].choices, "the last chunk is not the usage chunk")
    seen_role, finishes, tokens, texts = set(), {}, 0, {i: "" for i in range(n)}
    for c in chunks[:-1]:
        check(len(c.choices) == 1, f"a chunk with {len(c.choices)} choices")
        choice = c.choices[0]
        check(0 <= choice.index < n, f"choice index {choice.index} outside 0..<{n}")
        check(choice.index not in finishes, f"choice {choice.index} has a chunk after its finish chunk")
        if choice.delta.role:
            check(choice.index not in seen_role, f"choice {choice.index} got its role twice")
            seen_role.add(choice.index)
        else:
            check(choice.index in seen_role, f"choice {choice.index} got content before its role")
        texts[choice.index] += choice.delta.content or ""
        if choice.logprobs and choice.logprobs.content:
            check_chat_logprobs(choice.logprobs.content, len(choice.logprobs.content), 2, f"chunk of choice {choice.index}")
            tokens += len(choice.logprobs.content)
        if choice.finish_reason:
            finishes[choice.index] = choice.finish_reason
    check(seen_role == set(range(n)), f"role chunks for {sorted(seen_role)}")
    check(sorted(finishes) == list(range(n)), f"finish chunks for {sorted(finishes)}, expected one per choice 0..<{n}")
    check_usage(usage, "chat stream usage")
    check(tokens == usage.completion_tokens, f"{tokens} tokens streamed with logprobs, usage says {usage.completion_tokens}")


def n_and_seeds():
    """n samples at temperature 1 with a seed: they differ from each other (sample i draws with
    seed + i, vLLM's rule), and the same request gives the same response again."""
    args = dict(prompt=PROMPT, max_tokens=8, temperature=1, top_p=1, extra_body=NO_EOS)
    first = complete(n=4, seed=123, **args)
    check([c.index for c in first.choices] == [0, 1, 2, 3], f"choice indices {[c.index for c in first.choices]}")
    texts = [c.text for c in first.choices]
    check(len(set(texts)) > 1, f"4 samples (seeds 123..126) at temperature 1 are all the same: {texts!r}")
    again = complete(n=4, seed=123, **args)
    check([c.text for c in again.choices] == texts, f"the same seed gave {texts!r}, then {[c.text for c in again.choices]!r}")
    alone = complete(seed=125, logprobs=5, **args)
    if NEAR_TIES:
        agree(complete(n=4, seed=123, logprobs=5, **args).choices[2], alone.choices[0], "seed 125 alone, sample 2 of seed 123", sampled=True)
    else:
        check(alone.choices[0].text == texts[2], f"seed 125 alone gave {alone.choices[0].text!r}, sample 2 of seed 123 {texts[2]!r}")
    check(first.usage.completion_tokens == 4 * 8, f"completion_tokens {first.usage.completion_tokens} for 4 x 8")
    check(first.usage.prompt_tokens == alone.usage.prompt_tokens, "prompt_tokens counted more than once per prompt")


def stop_strings():
    text = greedy(max_tokens=12).choices[0].text
    # A stop string from the middle of what the model says: the text must end just before it.
    words = text.split()
    check(len(words) >= 3, f"greedy text too short to pick a stop string: {text!r}")
    stop = " " + words[2]
    expected = text[: text.index(stop)]
    r = complete(prompt=PROMPT, max_tokens=12, temperature=0, stop=[stop, "zzzz-never"], extra_body=NO_EOS)
    check(r.choices[0].finish_reason == "stop", f"finish_reason {r.choices[0].finish_reason!r} with stop {stop!r}")
    check(r.choices[0].text == expected, f"text {r.choices[0].text!r}, expected {expected!r} (stop {stop!r} in {text!r})")
    # min_tokens: stop strings count only after the first min_tokens tokens (vLLM), so this one passes by.
    held = complete(prompt=PROMPT, max_tokens=12, temperature=0, stop=[stop], extra_body={**NO_EOS, "min_tokens": 8})
    check(held.choices[0].text.startswith(expected + stop),
          f"with min_tokens 8 the text {held.choices[0].text!r} should run past the early {stop!r} (greedy text {text!r})")
    # include_stop_str_in_output (vLLM's): the text runs up to and through the stop string, whole and streamed.
    kept = complete(prompt=PROMPT, max_tokens=12, temperature=0, stop=[stop], extra_body={**NO_EOS, "include_stop_str_in_output": True})
    check(kept.choices[0].finish_reason == "stop" and kept.choices[0].text == expected + stop,
          f"with include_stop_str_in_output the text {kept.choices[0].text!r} should be {expected + stop!r}")
    streamed = "".join(c.choices[0].text for c in complete(prompt=PROMPT, max_tokens=12, temperature=0, stop=[stop], stream=True,
                                                            extra_body={**NO_EOS, "include_stop_str_in_output": True}) if c.choices)
    check(streamed == expected + stop, f"streamed with include_stop_str_in_output: {streamed!r}, expected {expected + stop!r}")


def completion_logprobs():
    r = complete(prompt=PROMPT, max_tokens=6, temperature=0, logprobs=3, extra_body=NO_EOS)
    lp = r.choices[0].logprobs
    check_legacy_logprobs(lp, r.usage.completion_tokens, 3, "completion logprobs", greedy_pick=True)
    check(lp.text_offset[0] == 0, f"text_offset starts at {lp.text_offset[0]}")
    if not any("\ufffd" in t for t in lp.tokens):
        check("".join(lp.tokens) == r.choices[0].text, f"tokens {lp.tokens} do not spell the text {r.choices[0].text!r}")
    sampled = complete(prompt=PROMPT, max_tokens=6, temperature=1, seed=3, logprobs=2, extra_body=NO_EOS)
    check_legacy_logprobs(sampled.choices[0].logprobs, 6, 2, "sampled completion logprobs", greedy_pick=False)


def chat_logprobs():
    r = chat(messages=[{"role": "user", "content": "Say hello."}], max_tokens=5, temperature=0, logprobs=True, top_logprobs=3,
             extra_body=NO_EOS)
    content = r.choices[0].logprobs.content
    check_chat_logprobs(content, r.usage.completion_tokens, 3, "chat logprobs")
    # Greedy: each token is its position's most likely one.
    for i, entry in enumerate(content):
        check(entry.top_logprobs[0].token == entry.token, f"greedy token {entry.token!r} is not top_logprobs[0] at {i}")
    r = chat(messages=[{"role": "user", "content": "Hi"}], max_tokens=2, temperature=0, logprobs=True)
    check(all(e.top_logprobs == [] for e in r.choices[0].logprobs.content), "logprobs without top_logprobs listed alternatives")


def echo():
    r = complete(prompt=PROMPT, max_tokens=3, temperature=0, echo=True, extra_body=NO_EOS)
    plain = greedy(max_tokens=3)
    check(r.choices[0].text == PROMPT + plain.choices[0].text,
          f"echo text {r.choices[0].text!r}, expected the prompt then {plain.choices[0].text!r}")
    r = complete(prompt=PROMPT, max_tokens=3, temperature=0, echo=True, logprobs=1, extra_body=NO_EOS)
    check_echo_logprobs(r, plain)
    streamed = list(complete(prompt=PROMPT, max_tokens=3, temperature=0, echo=True, stream=True, extra_body=NO_EOS))
    check(streamed[0].choices[0].text.startswith(PROMPT), f"the first streamed chunk does not carry the prompt: {streamed[0]}")
    check("".join(c.choices[0].text for c in streamed) == PROMPT + plain.choices[0].text, "streamed echo text differs")


def check_echo_logprobs(r, plain):
    lp = r.choices[0].logprobs
    count = r.usage.prompt_tokens + r.usage.completion_tokens
    check_legacy_logprobs(lp, count, 1, "echo logprobs", greedy_pick=False)
    check(lp.token_logprobs[0] is None and lp.top_logprobs[0] is None, "the first prompt token has a logprob")
    check(all(v is not None for v in lp.token_logprobs[1:]), f"a prompt token after the first has no logprob: {lp.token_logprobs}")
    prompt_count = r.usage.prompt_tokens
    # A tokenizer that adds a BOS token lists it first, with its text (as vLLM does); the text
    # offsets count it too.
    prompt_text = "".join(lp.tokens[:prompt_count])
    check(prompt_text == PROMPT or "".join(lp.tokens[1:prompt_count]) == PROMPT,
          f"prompt tokens {lp.tokens[:prompt_count]} do not spell the prompt")
    generated = Namespace(text="".join(lp.tokens[prompt_count:]),
                          logprobs=Namespace(tokens=lp.tokens[prompt_count:], top_logprobs=lp.top_logprobs[prompt_count:]))
    if NEAR_TIES and generated.text != plain.choices[0].text:
        # The GPU scores the prompt with every position's logits, a different product for the last row.
        lone = complete(prompt=PROMPT, max_tokens=3, temperature=0, logprobs=1, extra_body=NO_EOS).choices[0]
        agree(generated, lone, "generated tokens with echo and logprobs")
    else:
        check(generated.text == plain.choices[0].text, f"generated tokens {lp.tokens[prompt_count:]} with echo")
    check(lp.text_offset[prompt_count] == len(prompt_text),
          f"the first generated token's text_offset is {lp.text_offset[prompt_count]}, the prompt's tokens spell {len(prompt_text)} characters")


def list_prompts():
    """Choice i answers prompt i // n. Greedy text is compared with each prompt run alone; the
    server must be this script's own (a foreign request in the batch can change the CPU model's
    arithmetic: steps of more than 4 rows take its fp32 path), and the 4 choices keep the
    batch's decode steps on the same path as a single request's."""
    prompts = [PROMPT, "One, two, three,"]
    singles = [complete(prompt=p, max_tokens=3, temperature=0, logprobs=5, extra_body=NO_EOS) for p in prompts]
    r = complete(prompt=prompts, n=2, max_tokens=3, temperature=0, logprobs=5, extra_body=NO_EOS)
    check([c.index for c in r.choices] == [0, 1, 2, 3], f"choice indices {[c.index for c in r.choices]}")
    for c in r.choices:
        agree(c, singles[c.index // 2].choices[0], f"choice {c.index} (prompt {c.index // 2})")
    prompt_tokens = sum(s.usage.prompt_tokens for s in singles)
    check(r.usage.prompt_tokens == prompt_tokens, f"prompt_tokens {r.usage.prompt_tokens}, expected {prompt_tokens}")
    check(r.usage.completion_tokens == 4 * 3, f"completion_tokens {r.usage.completion_tokens} for 4 x 3")
    ids = complete(prompt=[[504, 3575, 282], [4444, 28]], max_tokens=2, temperature=0, logprobs=5, extra_body=NO_EOS)
    check(len(ids.choices) == 2 and ids.usage.prompt_tokens == 5, f"token-id prompts: {len(ids.choices)} choices, {ids.usage.prompt_tokens} prompt tokens")
    one = complete(prompt=[504, 3575, 282], max_tokens=2, temperature=0, logprobs=5, extra_body=NO_EOS)
    agree(ids.choices[0], one.choices[0], "a list of ids and a list holding that list")
    chunks = list(complete(prompt=prompts, max_tokens=2, temperature=0, stream=True, logprobs=5, extra_body=NO_EOS))
    streamed = {0: "", 1: ""}
    tokens, tops = {0: [], 1: []}, {0: [], 1: []}
    finishes = []
    for c in chunks:
        streamed[c.choices[0].index] += c.choices[0].text
        if c.choices[0].logprobs:
            tokens[c.choices[0].index] += c.choices[0].logprobs.tokens
            tops[c.choices[0].index] += c.choices[0].logprobs.top_logprobs
        if c.choices[0].finish_reason:
            finishes.append(c.choices[0].index)
    check(sorted(finishes) == [0, 1], f"streamed finish chunks for choices {finishes}, expected one each for 0 and 1")
    if NEAR_TIES:
        # The first two tokens of each prompt alone against the streamed batch of two.
        for i in (0, 1):
            alone = singles[i].choices[0].logprobs
            agree(Namespace(text="".join(tokens[i]), logprobs=Namespace(tokens=tokens[i], top_logprobs=tops[i])),
                  Namespace(text="".join(alone.tokens[:2]), logprobs=Namespace(tokens=alone.tokens[:2], top_logprobs=alone.top_logprobs[:2])),
                  f"streamed prompt {i}")
        return
    check(all(singles[i].choices[0].text.startswith(streamed[i]) and streamed[i] for i in (0, 1)),
          f"streamed texts {streamed} are not the start of {[s.choices[0].text for s in singles]}")


def add_special_tokens():
    """add_special_tokens (vLLM's): a text prompt without the tokenizer's special tokens is
    that many tokens shorter (as /tokenize counts them; none with a tokenizer that adds none)."""
    def count(add):
        request = urllib.request.Request(BASE.rstrip("/").removesuffix("/v1") + "/tokenize",
                                         data=json.dumps({"prompt": PROMPT, "add_special_tokens": add}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.load(response)["count"]
    with_specials, without = count(True), count(False)
    plain = complete(prompt=PROMPT, max_tokens=1, temperature=0)
    bare = complete(prompt=PROMPT, max_tokens=1, temperature=0, extra_body={"add_special_tokens": False})
    check(plain.usage.prompt_tokens == with_specials and bare.usage.prompt_tokens == without,
          f"prompt tokens {plain.usage.prompt_tokens} / {bare.usage.prompt_tokens}, /tokenize counts {with_specials} / {without}")
    if with_specials == without:
        NOTES.append("add_special_tokens: this tokenizer adds no special tokens, so both counts agree")


def logit_bias_and_stop_tokens():
    """A +100 bias forces a token; with it a stop token, generation ends at once; min_tokens
    holds that stop off for its first tokens."""
    token = 3575
    # The token's text, from the server's /detokenize.
    request = urllib.request.Request(BASE.rstrip("/").removesuffix("/v1") + "/detokenize", data=json.dumps({"tokens": [token]}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        spelled = json.load(response)["prompt"]
    forced = complete(prompt=PROMPT, max_tokens=3, temperature=1, seed=1, logit_bias={str(token): 100})
    check(forced.choices[0].text == spelled * 3, f"a +100 bias on {token} ({spelled!r}) gave {forced.choices[0].text!r}")
    stopped = complete(prompt=PROMPT, max_tokens=8, temperature=0, logit_bias={str(token): 100}, extra_body={"stop_token_ids": [token]})
    check(stopped.choices[0].finish_reason == "stop" and stopped.usage.completion_tokens == 1,
          f"stop token {token}: finish {stopped.choices[0].finish_reason!r} after {stopped.usage.completion_tokens} tokens, expected 'stop' after 1")
    held = complete(prompt=PROMPT, max_tokens=8, temperature=0, logit_bias={str(token): 100},
                    extra_body={"stop_token_ids": [token], "min_tokens": 3})
    check(held.choices[0].finish_reason == "stop" and held.usage.completion_tokens == 4,
          f"min_tokens 3: finish {held.choices[0].finish_reason!r} after {held.usage.completion_tokens} tokens, expected 'stop' after 4")


def bad_requests():
    def refused(call, words):
        try:
            call()
        except openai.BadRequestError as error:
            message = str(error)
            check(all(w in message for w in words), f"the 400 does not name {words}: {message}")
            return
        raise AssertionError(f"expected a 400 naming {words}")

    refused(lambda: complete(prompt=PROMPT, n=129), ["'n'", "128"])
    refused(lambda: complete(prompt=PROMPT, max_tokens=10**7), ["maximum context length"])
    refused(lambda: complete(prompt=PROMPT, max_tokens=0), ["max_tokens"])
    refused(lambda: complete(prompt=[]), ["prompt"])
    refused(lambda: complete(prompt=PROMPT, logit_bias={"7": 500}), ["logit_bias"])
    try:
        complete(prompt=PROMPT, model="no-such-model")
        raise AssertionError("an unknown model was accepted")
    except openai.NotFoundError:
        pass


def structured_output_with_pydantic():
    """The client's own structured-output path: a pydantic model as response_format (the client
    writes its strict JSON Schema), parsed back into the model by the client."""
    from typing import Literal
    import pydantic

    class City(pydantic.BaseModel):
        name: str = pydantic.Field(max_length=24)
        country: str = pydantic.Field(max_length=24)
        population_millions: float
        size: Literal["small", "medium", "large"]

    parse = getattr(client.chat.completions, "parse", None) or client.beta.chat.completions.parse
    r = parse(**salted(dict(messages=[{"role": "user", "content": "Describe the capital of France."}], response_format=City,
                           max_tokens=120, temperature=0)))
    choice = r.choices[0]
    check(choice.finish_reason == "stop", f"finish_reason {choice.finish_reason!r}: {choice.message.content!r}")
    city = choice.message.parsed
    check(isinstance(city, City), f"parsed {city!r} from {choice.message.content!r}")
    check(list(json.loads(choice.message.content).keys()) == ["name", "country", "population_millions", "size"],
          f"keys out of the schema's order: {choice.message.content!r}")


def forced_tool_call():
    """tool_choice naming a function (with the client's pydantic_function_tool): the answer is
    that function's call, its arguments valid under the tool's strict schema."""
    import pydantic

    class GetWeather(pydantic.BaseModel):
        city: str = pydantic.Field(max_length=30)
        days: int = pydantic.Field(ge=1, le=7)

    tool = openai.pydantic_function_tool(GetWeather)
    r = chat(messages=[{"role": "user", "content": "Will it rain in Lyon this week?"}], tools=[tool],
             tool_choice={"type": "function", "function": {"name": "GetWeather"}}, max_tokens=80, temperature=0)
    message = r.choices[0].message
    check(r.choices[0].finish_reason == "tool_calls", f"finish_reason {r.choices[0].finish_reason!r}")
    check(message.tool_calls and message.tool_calls[0].function.name == "GetWeather", f"tool_calls {message.tool_calls!r}")
    arguments = GetWeather.model_validate_json(message.tool_calls[0].function.arguments)
    check(1 <= arguments.days <= 7, f"arguments {arguments!r}")


CHECKS = [models, completion_reaches_max_tokens, chat_completion, streamed_completion_matches_whole, token_ids, streamed_chat_with_n,
          n_and_seeds, stop_strings, completion_logprobs, chat_logprobs, echo, list_prompts, add_special_tokens, logit_bias_and_stop_tokens,
          bad_requests, structured_output_with_pydantic, forced_tool_call]


NOTES = []


def main():
    failed = 0
    for check_function in CHECKS:
        start = time.monotonic()
        try:
            check_function()
            print(f"ok   {check_function.__name__} ({time.monotonic() - start:.1f} s)")
        except Exception:
            failed += 1
            print(f"FAIL {check_function.__name__}")
            traceback.print_exc(file=sys.stdout)
    for note in NOTES:
        print(f"note: {note}")
    print(f"{len(CHECKS) - failed} of {len(CHECKS)} checks passed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
