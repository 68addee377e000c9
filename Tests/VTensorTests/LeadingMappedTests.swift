import Testing
@testable import VTensor

/// `holes` scans a tensor from the slots it already found mapped (`leadingMapped`); a slot below
/// that mark that stops being mapped must show up as a hole again, whichever way it went.
@Suite struct LeadingMappedTests {
    @Test func aSlotUnmappedBelowTheMarkIsAHoleAgain() throws {
        let host = try makeHost()
        let memory = try makeMemory(host, budgetChunks: 32)
        let tensor = try memory.makeTensor(bytes: 8 * testChunk)
        try memory.grow(tensor, toChunks: 6)
        #expect(try memory.holes(in: [(tensor, 6)]).isEmpty)
        #expect(tensor.leadingMapped == 6)
        try memory.unmap(tensor, chunk: 2)
        #expect(tensor.leadingMapped == 2)
        #expect(try memory.holes(in: [(tensor, 6)]).map(\.index) == [2])
        try memory.grow(tensor, toChunks: 8)
        #expect(try memory.holes(in: [(tensor, 8)]).isEmpty)
        #expect(tensor.leadingMapped == 8)
        try memory.shrink(tensor, toChunks: 3)
        #expect(tensor.leadingMapped == 3)
        #expect(try memory.holes(in: [(tensor, 5)]).map(\.index) == [3, 4])
        #expect(memory.audit { backendAgrees($0, host) } == [])
    }

    @Test func aHandOverMovesTheTableAndForgetsTheMark() throws {
        let host = try makeHost()
        let memory = try makeMemory(host, budgetChunks: 32)
        let tensor = try memory.makeTensor(bytes: 4 * testChunk)
        try memory.grow(tensor, toChunks: 4)
        _ = try memory.holes(in: [(tensor, 4)])
        let successor = try memory.handOver(tensor)
        #expect(tensor.leadingMapped == 0 && successor.leadingMapped == 0)
        #expect(try memory.holes(in: [(successor, 4)]).isEmpty)
        #expect(successor.leadingMapped == 4)
        #expect(memory.audit { backendAgrees($0, host) } == [])
    }
}
