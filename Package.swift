// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "vtensor",
    products: [
        .executable(name: "vtensor", targets: ["VTensorCLI"]),
        .library(name: "VTensor", targets: ["VTensor"]),
        .library(name: "GPU", targets: ["GPU"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        // The HTTP server of `vtensor serve`; only the Server target links it. (Its default traits stay on:
        // `traits: []` needs swift-tools-version 6.1.)
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        // Already in the graph through Hummingbird; `bench serve`'s HTTP client and test stub use it directly.
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.0"),
        // Start and stop of `vtensor serve` (a ServiceGroup), and its request-id logging; Hummingbird depends on both already.
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
    ],
    targets: [
        // Declarations only: CUDA is loaded at run time with dlopen, never linked.
        .target(name: "CCUDA"),
        // memfd_create and hole punching for the host memory backend. (Not "CSystem": swift-system,
        // which Hummingbird's NIO pulls in, has a target of that name.)
        .target(name: "CLinux"),
        // File-system and environment helpers (cache directory, atomic writes); depends on nothing.
        .target(name: "Support", dependencies: ["CLinux"]),
        .target(name: "GPU", dependencies: ["CCUDA", "Support"]),
        .target(name: "VTensor", dependencies: ["GPU", "CLinux"]),
        // The CPU attention's inner loops: AVX2/AVX-512 functions chosen at run time, plain C elsewhere.
        .target(name: "CAttention"),
        .target(name: "Kernels", dependencies: ["GPU", "VTensor", "Support", "CAttention"]),
        // Model files (safetensors, GGUF, config.json) and the PyPI asset fetch. No GPU stack:
        // a server front end links Models and Tokenizers without CUDA code.
        .target(name: "Models", dependencies: ["Support"]),
        // A Jinja2 template interpreter for Hugging Face chat templates; depends on nothing.
        .target(name: "Jinja"),
        // Text: byte-level BPE and SentencePiece tokenizers, incremental detokenizer.
        .target(name: "Tokenizers", dependencies: ["Models"]),
        // The CPU's matrix kernels: decode dot products over GGUF blocks, the prefill product (AVX2 or AVX-512 picked at run time).
        .target(name: "CQuant"),
        // The model runtime: weights, the forward pass (CPU and GPU), sampling, generation.
        .target(name: "Runtime", dependencies: ["Models", "Tokenizers", "Kernels", "VTensor", "GPU", "CQuant", "Support", "Jinja"]),
        // The serving engine: requests, scheduler, KV admission, the step loop. No GPU imports:
        // it gets a model and its KV cache from outside.
        // Constrained decoding: grammars over UTF-8 bytes (from JSON schemas, regular expressions, choices),
        // matched a token at a time, and the per-step mask of the tokens a grammar allows.
        .target(name: "Structured", dependencies: ["Tokenizers"]),
        .target(name: "Engine", dependencies: ["Runtime", "Tokenizers", "VTensor", "Support", "Structured"]),
        // What the command-line targets share: --backend/--device and --model option groups,
        // number and table formatting, JSON output.
        .target(
            name: "CLICommon",
            dependencies: ["Models", "Runtime", "Engine", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        // The code that measures the product: selftest, bench * (bench serve: an HTTP client on SwiftNIO), dev *, kernels compile, logits.
        .target(
            name: "VTensorBench",
            dependencies: [
                "CLICommon", "VTensor", "GPU", "Kernels", "Models", "Runtime", "Engine", "CLinux", "Tokenizers", "Structured", "Support",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        // `vtensor serve`: the OpenAI-compatible HTTP API over an EngineLoop (Hummingbird).
        .target(
            name: "Server",
            dependencies: [
                "Engine", "Runtime", "Tokenizers", "Jinja", "Structured",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            // The OpenAPI document served at /openapi.json, compiled in as bytes.
            resources: [.embedInCode("openapi.json")]
        ),
        // The `vtensor` command: generate, chat, serve and info, plus the measurement commands of VTensorBench.
        .executableTarget(
            name: "VTensorCLI",
            dependencies: [
                "CLICommon", "VTensorBench", "Server", "VTensor", "GPU", "Models", "Tokenizers", "Runtime", "Engine", "Structured", "Jinja",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(name: "SupportTests", dependencies: ["Support"]),
        .testTarget(name: "VTensorTests", dependencies: ["VTensor"]),
        .testTarget(name: "GPUTests", dependencies: ["GPU", "Support"]),
        .testTarget(name: "KernelsTests", dependencies: ["Kernels", "VTensor"]),
        // GGUF files built by hand for the Models and Tokenizers tests.
        .target(name: "GGUFTestSupport", dependencies: ["Models"], path: "Tests/GGUFTestSupport"),
        .testTarget(name: "ModelsTests", dependencies: ["Models", "GGUFTestSupport"], exclude: ["Fixtures"]),
        .testTarget(name: "TokenizersTests", dependencies: ["Tokenizers", "Models", "GGUFTestSupport"], exclude: ["Fixtures"]),
        .testTarget(name: "JinjaTests", dependencies: ["Jinja"]),
        .testTarget(name: "StructuredTests", dependencies: ["Structured", "Tokenizers"]),
        .testTarget(name: "VTensorBenchTests", dependencies: ["VTensorBench", "CLICommon", "Engine", "Runtime"]),
        .testTarget(name: "EngineTests", dependencies: ["Engine", "Runtime", "Models", "Tokenizers", "VTensor", "Structured"]),
        // Launches the built `vtensor serve` and talks to it with curl and the openai package; tests the /metrics writer,
        // and reads Server's route table and OpenAPI document.
        .testTarget(name: "ServerTests", dependencies: ["Server", "Engine"],
                    exclude: ["openai_client_check.py", "chat_template_server_check.py", "load_clients.py", "parse_metrics.py"]),
        .testTarget(name: "RuntimeTests", dependencies: ["Runtime", "CQuant", "Models", "Tokenizers", "Support", "Kernels"], exclude: ["Fixtures"]),
    ]
)
