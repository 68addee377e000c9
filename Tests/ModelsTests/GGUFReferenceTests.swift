#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Testing
@testable import Models

/// Cross-check against the `gguf` PyPI package (gguf-py 0.19): a file it wrote and the values it
/// dequantized, committed under Fixtures/gguf-reference (CI needs no Python). To regenerate:
/// `pip install gguf numpy; python3 scripts/fixtures/make_gguf_reference.py DIR`, then
/// `GGUF_REFERENCE_DIR=DIR swift test --filter GGUFReference`.
///
/// import sys, numpy as np, gguf
/// from gguf import GGUFWriter, GGMLQuantizationType as T, quants
/// out = sys.argv[1]
/// rng = np.random.default_rng(0)
/// w = GGUFWriter(out + "/ref.gguf", "llama")
/// w.add_uint32("ref.u32", 7); w.add_int64("ref.i64", -5); w.add_float64("ref.f64", 0.25)
/// w.add_string("ref.s", "héllo"); w.add_bool("ref.b", True)
/// w.add_array("ref.tokens", ["a", "b", "c"]); w.add_array("ref.ints", [1, 2, 3]); w.add_array("ref.floats", [0.5, -1.5])
/// for qt in [T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q4_K, T.Q6_K]:
///     name = qt.name.lower()
///     x = rng.standard_normal((3, 512)).astype(np.float32)
///     if qt == T.F32:
///         w.add_tensor(name, x); ref = x
///     elif qt == T.F16:
///         w.add_tensor(name, x.astype(np.float16)); ref = x.astype(np.float16).astype(np.float32)
///     elif qt in (T.Q4_K, T.Q6_K):
///         bs, ts = gguf.GGML_QUANT_SIZES[qt]
///         raw = rng.integers(0, 256, size=(3, 512 // bs * ts), dtype=np.uint8)
///         blocks = raw.reshape(-1, ts)
///         dpos = [0, 2] if qt == T.Q4_K else [208]
///         for p in dpos:
///             blocks[:, p:p+2] = rng.uniform(-0.1, 0.1, size=(blocks.shape[0], 1)).astype(np.float16).view(np.uint8)
///         w.add_tensor(name, raw, raw_dtype=qt); ref = quants.dequantize(raw, qt)
///     else:
///         q = quants.quantize(x, qt); w.add_tensor(name, q, raw_dtype=qt); ref = quants.dequantize(q, qt)
///     np.asarray(ref, dtype=np.float32).tofile(f"{out}/{name}.f32")
/// w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
/// print("ok")

/// The committed fixtures (made by scripts/fixtures/make_gguf_reference.py with gguf 0.19.0), or
/// GGUF_REFERENCE_DIR to check freshly generated ones.
private let referenceDir: String = getenv("GGUF_REFERENCE_DIR").map { String(cString: $0) }
    ?? (String(#filePath).split(separator: "/").dropLast().joined(separator: "/").prefixedWithSlash + "/Fixtures/gguf-reference")

private extension String {
    var prefixedWithSlash: String { "/" + self }
}

private func readFloats(_ path: String) -> [Float]? {
    guard let f = fopen(path, "rb") else { return nil }
    defer { fclose(f) }
    var out: [Float] = []
    var buf = [Float](repeating: 0, count: 1024)
    while true {
        let n = buf.withUnsafeMutableBytes { fread($0.baseAddress, 4, 1024, f) }
        out += buf[0..<n]
        if n < 1024 { return out }
    }
}

@Test func matchesGGUFPyReference() throws {
    let dir = referenceDir
    let g = try GGUFFile(path: dir + "/ref.gguf")
    #expect(g.string("general.architecture") == "llama")
    #expect(g.int("ref.u32") == 7 && g.int("ref.i64") == -5 && g.float("ref.f64") == 0.25)
    #expect(g.string("ref.s") == "héllo" && g.bool("ref.b") == true)
    #expect(g.stringArray("ref.tokens") == ["a", "b", "c"])
    #expect(g.intArray("ref.ints") == [1, 2, 3] && g.floatArray("ref.floats") == [0.5, -1.5])
    #expect(g.tensors.count == 8)
    for t in g.tensors {
        #expect(t.dims == [512, 3], "\(t.name)")
        let want = try #require(readFloats("\(dir)/\(t.name).f32"))
        let got = try g.dequantize(t)
        #expect(got.count == want.count)
        let worst = zip(got, want).map { abs($0 - $1) / max(1e-3, abs($1)) }.max() ?? 0
        #expect(worst <= 1e-5, "\(t.name) \(t.type): worst relative difference \(worst)")
    }
}
