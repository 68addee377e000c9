#!/usr/bin/env python3
"""Real chat templates through `vtensor serve`, against Python's jinja2.

Used by ChatTemplateServerTests.swift:
  chat_template_server_check.py --write-template SLUG OUT   writes the template's text to OUT
  chat_template_server_check.py --check SLUG --base URL     checks a server running that template

--check sends every conversation of Tests/RuntimeTests/Fixtures/chat/conversations.json to
POST /tokenize as a chat request (messages, tools, add_generation_prompt, and the conversation's
template variables plus the reference tokenizer's bos_token and eos_token as
chat_template_kwargs), with the JSON keys in the corpus's order. Where jinja2 renders the
conversation (scripts/chat_template_reference.py, set up as transformers' apply_chat_template),
the server's tokens must equal the tokens of that rendering (POST /tokenize with the text and no
added special tokens); where the template raises, the server must answer 400 with the
template's own message. A role the server does not take must be a 400 naming it. Prints one
line per conversation and exits 1 on any difference.
"""
import argparse, json, os, sys, urllib.error, urllib.request

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "scripts"))
import chat_template_reference as reference  # noqa: E402
import fetch_chat_templates  # noqa: E402

ROLES = {"system", "developer", "user", "assistant", "tool"}


def template(slug):
    for t in fetch_chat_templates.load_templates(fetch_chat_templates.cache_root()):
        if t.get("slug") == slug:
            return t
    sys.exit(f"no template {slug!r} in the manifest")


def post(base, path, body):
    request = urllib.request.Request(base + path, data=json.dumps(body, ensure_ascii=False).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def check(slug, base):
    t = template(slug)
    with open(reference.CORPUS, encoding="utf-8") as f:
        conversations = json.load(f)["conversations"]
    failures = 0
    for c in conversations:
        body = {"messages": c["messages"], "add_generation_prompt": c["add_generation_prompt"],
                "chat_template_kwargs": {"bos_token": t["bos_token"], "eos_token": t["eos_token"], **c.get("kwargs", {})}}
        if "tools" in c:
            body["tools"] = c["tools"]
        status, answer = post(base, "/tokenize", body)
        message = answer.get("error", {}).get("message", "") if isinstance(answer, dict) else ""
        unknown = {m["role"] for m in c["messages"]} - ROLES
        try:
            expected, raised = reference.render(t, c), None
        except Exception as error:
            expected, raised = None, error
        if unknown:
            ok = status == 400 and all(role in message for role in unknown)
            what = f"unknown role {sorted(unknown)}: {status} {message!r}"
        elif raised is not None:
            # The template's raise_exception message; Python's own errors only need the 400.
            ok = status == 400 and (type(raised).__name__ != "TemplateError" or str(raised) in message)
            what = f"jinja2 raised {type(raised).__name__}: {raised}; server: {status} {message!r}"
        else:
            want_status, want = post(base, "/tokenize", {"prompt": expected, "add_special_tokens": False})
            ok = status == 200 and want_status == 200 and answer["tokens"] == want["tokens"]
            what = f"{len(answer.get('tokens', []))} tokens" if ok else \
                f"server {status} {message or ''}; tokens differ from the jinja2 rendering {expected!r}"
        print(f"{'ok  ' if ok else 'FAIL'} {t['name']} / {c['name']}: {what}")
        failures += not ok
    print(f"{len(conversations) - failures}/{len(conversations)} conversations agree ({t['name']})")
    return failures


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write-template", nargs=2, metavar=("SLUG", "OUT"))
    parser.add_argument("--check", metavar="SLUG")
    parser.add_argument("--base")
    args = parser.parse_args()
    if args.write_template:
        slug, out = args.write_template
        with open(out, "w", encoding="utf-8") as f:
            f.write(template(slug)["template"])
        return
    if not (args.check and args.base):
        parser.error("--check SLUG --base URL, or --write-template SLUG OUT")
    sys.exit(1 if check(args.check, args.base) else 0)


if __name__ == "__main__":
    main()
