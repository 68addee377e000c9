#!/usr/bin/env python3
"""The reference renderings for Tests/RuntimeTests/RealChatTemplateTests.swift.

Renders every conversation of Tests/RuntimeTests/Fixtures/chat/conversations.json through every
template of the manifest (fetched by fetch_chat_templates.py) with Python's jinja2, set up the
way transformers' `apply_chat_template` sets it up, without importing transformers:
- an ImmutableSandboxedEnvironment with trim_blocks and lstrip_blocks, and the loopcontrols
  extension;
- the `tojson` filter replaced by json.dumps with ensure_ascii=False (optional indent,
  separators, sort_keys);
- the globals raise_exception (raises TemplateError with the template's message) and
  strftime_now (datetime.now().strftime);
- the variables messages, tools (None when none are given), documents (None),
  add_generation_prompt, the tokenizer's bos_token and eos_token, then the conversation's extra
  keyword arguments (which may override the tokens, as transformers' template kwargs do);
- of a list of named templates, `tool_use` when tools are given and it exists, else `default`.

Prints one JSON document: the templates with their text, and for each conversation the output
or the error (its type and message).

Usage: python3 scripts/chat_template_reference.py [--cache-root DIR]
Needs: jinja2 (Tests/requirements.txt).
"""
import argparse, functools, json, os, sys
from datetime import datetime

sys.dont_write_bytecode = True  # no __pycache__ left in scripts/
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fetch_chat_templates  # noqa: E402

try:
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment
except ImportError:
    sys.exit("chat_template_reference.py needs jinja2: python3 -m pip install -r Tests/requirements.txt")

CORPUS = os.path.join(fetch_chat_templates.REPO, "Tests", "RuntimeTests", "Fixtures", "chat", "conversations.json")


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # jinja2's own tojson escapes HTML characters; transformers replaces it with plain json.dumps.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(format):
    return datetime.now().strftime(format)


@functools.lru_cache(maxsize=None)
def compile_template(source):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env.from_string(source)


def choose(template, tools):
    """transformers' choice among named templates (PreTrainedTokenizerBase.get_chat_template)."""
    named = template.get("named")
    if not named:
        return template["template"]
    if tools is not None and "tool_use" in named:
        return named["tool_use"]
    return named["default"]


def render(template, conversation):
    tools = conversation.get("tools")
    variables = {"bos_token": template["bos_token"], "eos_token": template["eos_token"],
                 **conversation.get("kwargs", {})}
    compiled = compile_template(choose(template, tools))
    return compiled.render(messages=conversation["messages"], tools=tools, documents=conversation.get("documents"),
                           add_generation_prompt=conversation["add_generation_prompt"], **variables)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache-root", default=fetch_chat_templates.cache_root())
    parser.add_argument("--corpus", default=CORPUS)
    args = parser.parse_args()
    with open(args.corpus, encoding="utf-8") as f:
        conversations = json.load(f)["conversations"]
    out = {"jinja2": jinja2.__version__, "templates": []}
    for template in fetch_chat_templates.load_templates(args.cache_root):
        cases = []
        for conversation in conversations:
            case = {"conversation": conversation["name"]}
            try:
                case["output"] = render(template, conversation)
            except Exception as error:  # the Swift side compares what each template raised
                case["error_type"] = type(error).__name__
                case["error"] = str(error)
            cases.append(case)
        out["templates"].append({k: template[k] for k in ("name", "slug", "load", "template", "bos_token", "eos_token")
                                 if k in template} | {"named": template.get("named"), "file": template.get("file"),
                                                      "cases": cases})
    json.dump(out, sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
