"""Sends the same requests to a running server several times and counts how many different
answers come back (stdlib only, for the GPU machine). A server whose kernels reduce in a fixed
order gives one answer for a request repeated alone; the CPU always does.

Usage: python3 determinism_probe.py BASE_URL MODEL [--repeats N]
Prints one line per probe and a JSON summary last.
"""
import argparse, json, urllib.request

p = argparse.ArgumentParser()
p.add_argument("base")
p.add_argument("model")
p.add_argument("--repeats", type=int, default=8)
args = p.parse_args()


def post(body, stream=False):
    body = {"model": args.model, **body}
    request = urllib.request.Request(args.base + "/v1/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as response:
        if not stream:
            return json.load(response)
        text = ""
        for line in response:
            line = line.decode().strip()
            if line.startswith("data: ") and line != "data: [DONE]":
                chunk = json.loads(line[6:])
                if chunk.get("choices"):
                    text += chunk["choices"][0]["text"]
        return text


prompts = ["The tallest mountain in the world is", "Once upon a time, in a kingdom by the sea,"]
summary = {}
for i, prompt in enumerate(prompts):
    texts = [post({"prompt": prompt, "max_tokens": 32, "temperature": 0, "ignore_eos": True})["choices"][0]["text"]
             for _ in range(args.repeats)]
    streamed = [post({"prompt": prompt, "max_tokens": 32, "temperature": 0, "ignore_eos": True, "stream": True, "logprobs": 0},
                     stream=True) for _ in range(2)]
    distinct = len(set(texts + streamed))
    summary[f"greedy_prompt{i}_distinct"] = distinct
    print(f"greedy, prompt {i}, {args.repeats} whole + 2 streamed with logprobs, one at a time: {distinct} distinct answer(s)"
          f" (the first: {texts[0] == texts[1]}-equal to the second)")
    # A fresh cache_salt each: every request computes its whole prompt (no prefix-cache hit).
    salted = [post({"prompt": prompt, "max_tokens": 32, "temperature": 0, "ignore_eos": True, "cache_salt": f"probe-{i}-{r}"})
              ["choices"][0]["text"] for r in range(args.repeats)]
    summary[f"greedy_prompt{i}_salted_distinct"] = len(set(salted))
    print(f"greedy, prompt {i}, {args.repeats} with a fresh cache_salt each: {len(set(salted))} distinct answer(s);"
          f" equal to the first unsalted (from scratch too): {salted[0] == texts[0]}")
seeded = [tuple(c["text"] for c in post({"prompt": prompts[0], "max_tokens": 16, "temperature": 1.0, "seed": 7, "n": 4,
                                          "ignore_eos": True})["choices"]) for _ in range(args.repeats // 2)]
summary["seeded_n4_distinct"] = len(set(seeded))
print(f"n=4, seed 7, temperature 1, {len(seeded)} times: {len(set(seeded))} distinct answer set(s)")
held = post({"prompt": prompts[0], "max_tokens": 8, "temperature": 0, "logit_bias": {"3575": 100}, "stop_token_ids": [3575],
             "min_tokens": 3})
summary["min_tokens_3_completion_tokens"] = held["usage"]["completion_tokens"]
print(f"min_tokens 3 with the stop token forced: {held['choices'][0]['finish_reason']} after {held['usage']['completion_tokens']} tokens (expect 4)")
print(json.dumps(summary))
