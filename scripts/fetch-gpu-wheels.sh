#!/usr/bin/env bash
# Downloads the Python wheels the GPU machine lacks for the server checks (the `openai` client and
# its needs) and for `transformers serve`, the peer in scripts/gpu-serve-compare.sh (FastAPI,
# Starlette, uvicorn; transformers brings typer and rich itself), for its CPython 3.12, into .whl/
# (git-ignored via .git/info/exclude); carry `.whl`.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx "/.whl/" .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
platforms="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64"
for spec in openai==3.60.0 httpx2==2.16.2 httpcore2==2.16.2 truststore==0.10.5 h11==0.16.0 idna==3.20 \
    jiter==0.19.0 pydantic==2.13.4 pydantic-core==2.46.4 sniffio==1.3.1 anyio==4.16.0 annotated-types==0.7.0 \
    typing-inspection==0.4.2 typing-extensions==4.16.0 \
    fastapi==0.165.0 starlette==1.10.0 uvicorn==0.55.0 annotated-doc==0.0.7 click==8.5.1 opentelemetry-api==1.45.2; do
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        $platforms -d .whl "$spec"
done
ls .whl
