import Testing
@testable import GPU

@Suite struct KernelArgumentTests {
    let arguments: [KernelArgument] = [
        .int32(-7), .pointer(0xDEAD_BEEF_0000_1000), .float32(1.5), .uint32(3), .int64(-1 << 40), .float32(-0.25),
        .uint64(UInt64.max),
    ]

    @Test func layoutAlignsEachArgumentNaturally() {
        let (offsets, size) = KernelArgument.layout(arguments)
        #expect(offsets == [0, 8, 16, 20, 24, 32, 40])
        #expect(size == 48)
        #expect(KernelArgument.layout([]).offsets.isEmpty)
        #expect(KernelArgument.layout([.float32(0), .int32(0), .int32(0)]) == ([0, 4, 8], 12))
    }

    @Test func packedPointersAreAlignedAndHoldTheValues() {
        KernelArgument.withPacked(arguments) { pointers in
            for index in arguments.indices {
                let pointer = pointers[index]!
                #expect(Int(bitPattern: pointer) % arguments[index].alignment == 0)
            }
            #expect(pointers[0]!.loadUnaligned(as: Int32.self) == -7)
            #expect(pointers[1]!.loadUnaligned(as: UInt64.self) == 0xDEAD_BEEF_0000_1000)
            #expect(pointers[2]!.loadUnaligned(as: Float.self) == 1.5)
            #expect(pointers[3]!.loadUnaligned(as: UInt32.self) == 3)
            #expect(pointers[4]!.loadUnaligned(as: Int64.self) == -1 << 40)
            #expect(pointers[5]!.loadUnaligned(as: Float.self) == -0.25)
            #expect(pointers[6]!.loadUnaligned(as: UInt64.self) == UInt64.max)
            // loadUnaligned so a misplaced value fails an expectation instead of trapping.
            // Values sit at the layout's offsets in one block.
            #expect(pointers[1]! - pointers[0]! == 8)
            #expect(pointers[6]! - pointers[0]! == 40)
        }
    }

    @Test func noArgumentsStillGivesAPointerArray() {
        let called = KernelArgument.withPacked([]) { _ in true }
        #expect(called)
    }

    @Test func sizes() {
        #expect(KernelArgument.pointer(0).size == 8)
        #expect(KernelArgument.int32(0).size == 4)
        #expect(KernelArgument.float32(0).alignment == 4)
        #expect(KernelArgument.uint64(0).alignment == 8)
    }
}
