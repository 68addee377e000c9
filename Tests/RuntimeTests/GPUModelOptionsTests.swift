import XCTest
@testable import Runtime

/// `GPUModel.Options()` is the configuration the model serves with; these are the values the
/// switches had as mutable properties before they became one value, and the kernels' compile
/// options follow from them.
final class GPUModelOptionsTests: XCTestCase {
    func testDefaultsAreTheServiceConfiguration() {
        let o = GPUModel.Options()
        XCTAssertEqual(o.matmulPolicy, .auto)
        XCTAssertFalse(o.persistentLayers)
        XCTAssertTrue(o.cudaGraphs)
        XCTAssertEqual(o.prefetchBytesPerRow, 0)
        XCTAssertEqual(o.persistentBlocksPerSM, 4)
        XCTAssertTrue(o.programmaticLaunch)
        XCTAssertEqual(o.splitKMaxPairs, 0)
        XCTAssertNil(o.decodeMinTokensPerCTA)
        XCTAssertFalse(o.timingOnlySkipAttention)
        XCTAssertEqual(o.gemvUnroll, 8)
        XCTAssertTrue(o.earlyWeights)
        XCTAssertNil(o.weightL2Hint)
        XCTAssertNil(o.decodeConfig)
        XCTAssertTrue(o.matmulBuckets)
        XCTAssertTrue(o.matmulAutotune)
        XCTAssertNil(o.matmulTuningCache)
    }

    func testDefaultKernelProgramIsTheCatalogs() {
        let o = GPUModel.Options()
        let program = ModelKernels.program(gemvUnroll: o.gemvUnroll, earlyWeights: o.earlyWeights, weightL2Hint: o.weightL2Hint ?? true)
        XCTAssertEqual(program.options, ["-DGEMV_UNROLL=8", "-DEARLY_WEIGHTS=1"])
        XCTAssertEqual(program.options, ModelKernels.program().options)
        XCTAssertEqual(program.source, ModelKernels.program().source)
    }
}
