import Support
import Testing
@testable import GPU

@Suite struct CacheDirectoryTests {
    @Test func vtensorCacheDirWins() {
        let environment = ["VTENSOR_CACHE_DIR": "/data/vt/", "XDG_CACHE_HOME": "/xdg", "HOME": "/home/me"]
        #expect(KernelCache.defaultDirectory(environment: environment) == "/data/vt/kernels")
    }

    @Test func thenXDGThenHome() {
        #expect(KernelCache.defaultDirectory(environment: ["XDG_CACHE_HOME": "/xdg", "HOME": "/home/me"]) == "/xdg/vtensor/kernels")
        #expect(KernelCache.defaultDirectory(environment: ["HOME": "/home/me"]) == "/home/me/.cache/vtensor/kernels")
    }

    @Test func emptyOrRelativeValuesAreIgnored() {
        let environment = ["VTENSOR_CACHE_DIR": "", "XDG_CACHE_HOME": "relative/cache", "HOME": "/home/me"]
        #expect(KernelCache.defaultDirectory(environment: environment) == "/home/me/.cache/vtensor/kernels")
        #expect(KernelCache.defaultDirectory(environment: [:]) == nil)
    }
}

@Suite struct KernelCacheKeyTests {
    static let base = KernelCacheKey(
        source: "extern \"C\" __global__ void k(float* x) { x[0] = 1; }",
        options: ["--gpu-architecture=sm_90", "-default-device", "--std=c++17"],
        computeCapability: ComputeCapability(major: 9, minor: 0), nvrtcVersion: NVRTC.Version(major: 13, minor: 0),
        driverVersion: 13000)

    @Test func identicalInputsHashIdentically() {
        let copy = KernelCacheKey(
            source: Self.base.source, options: Self.base.options, computeCapability: Self.base.computeCapability,
            nvrtcVersion: Self.base.nvrtcVersion, driverVersion: Self.base.driverVersion)
        #expect(copy.hash == Self.base.hash)
        #expect(copy.text == Self.base.text)
        #expect(Self.base.hash.count == 32)
        #expect(Self.base.hash.allSatisfy { "0123456789abcdef".contains($0) })
    }

    @Test(arguments: [
        "source", "options", "option order", "option split", "compute capability", "nvrtc version", "driver version",
    ])
    func everyInputChangesTheHash(field: String) {
        var changed = Self.base
        switch field {
        case "source": changed.source += " "
        case "options": changed.options.append("-lineinfo")
        case "option order": changed.options.swapAt(1, 2)
        case "option split": changed.options = [changed.options.joined(separator: "\n")]
        case "compute capability": changed.computeCapability = ComputeCapability(major: 9, minor: 1)
        case "nvrtc version": changed.nvrtcVersion = NVRTC.Version(major: 12, minor: 9)
        case "driver version": changed.driverVersion = 13010
        default: Issue.record("unknown field \(field)")
        }
        #expect(changed.text != Self.base.text)
        #expect(changed.hash != Self.base.hash)
    }

    @Test func sha256MatchesFIPSVectors() {
        #expect(SHA256.hex(SHA256.hash(Array("".utf8))) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hex(SHA256.hash(Array("abc".utf8))) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(
            SHA256.hex(SHA256.hash(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)))
                == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        let twoBlocks =
            "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu"
        #expect(SHA256.hex(SHA256.hash(Array(twoBlocks.utf8))) == "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1")
    }

    @Test func compileOptionsOrder() {
        let hopper = ComputeCapability(major: 9, minor: 0)
        #expect(KernelCompiler.compileOptions(computeCapability: hopper, options: ["-lineinfo"])
            == ["--gpu-architecture=sm_90", "-default-device", "--std=c++17", "-lineinfo"])
        #expect(KernelCompiler.compileOptions(
            computeCapability: hopper, options: [], archSuffix: "a", toolkitIncludeDirectory: "/usr/local/cuda/include")
            == ["--gpu-architecture=sm_90a", "-default-device", "--std=c++17", "--include-path=/usr/local/cuda/include"])
    }
}

@Suite struct KernelCacheStoreTests {
    let key = KernelCacheKeyTests.base
    let binary: [UInt8] = [0x7F, 0x45, 0x4C, 0x46, 0, 1, 2, 255]

    @Test func storeThenLoadRoundTripsAndCreatesDirectories() throws {
        let root = TemporaryDirectory()
        let cache = KernelCache(directory: root.file("a/b/kernels"))
        #expect(cache.load(key) == nil)
        try cache.store(binary, for: key)
        #expect(cache.load(key) == binary)
        #expect(root.entries("a/b/kernels") == [key.hash + ".cubin", key.hash + ".key"])
        // Storing again replaces atomically and leaves no temporary files behind.
        try cache.store(binary.reversed(), for: key)
        #expect(cache.load(key) == binary.reversed())
        #expect(root.entries("a/b/kernels").count == 2)
    }

    @Test func sidecarMismatchIsAMiss() throws {
        let root = TemporaryDirectory()
        let cache = KernelCache(directory: root.path)
        try cache.store(binary, for: key)
        var other = key
        other.driverVersion += 1
        // Simulate a hash collision: another key's text in this hash's sidecar.
        root.write(key.hash + ".key", other.text)
        #expect(cache.load(key) == nil)
        // A truncated sidecar is a miss too.
        root.write(key.hash + ".key", String(key.text.dropLast()))
        #expect(cache.load(key) == nil)
        root.write(key.hash + ".key", key.text)
        #expect(cache.load(key) == binary)
        // An empty binary is a miss.
        root.write(key.hash + ".cubin", "")
        #expect(cache.load(key) == nil)
    }

    @Test func unusableDirectoryThrowsCacheIO() {
        let root = TemporaryDirectory()
        root.write("plain-file", "x")
        let cache = KernelCache(directory: root.file("plain-file/kernels"))
        #expect {
            try cache.store(binary, for: key)
        } throws: { error in
            guard case let .cacheIO(path, operation, _)? = error as? GPUError else { return false }
            return path == root.file("plain-file") && operation == "create directory"
                && "\(error)".contains("Not a directory")
        }
        #expect(cache.load(key) == nil)
    }
}
