/// A hash table from byte strings to ids that looks up slices of a buffer without allocating:
/// the keys live in one arena, slots hold entry indices (open addressing, linear probing).
struct ByteStringTable: Sendable {
    private var arena: [UInt8] = []
    private var starts: [Int32] = [0]
    private var values: [Int32] = []
    private var slots: [Int32]
    private var mask: Int

    init(capacity: Int) {
        var size = 16
        while size < capacity * 2 { size <<= 1 }
        slots = [Int32](repeating: -1, count: size)
        mask = size - 1
    }

    var count: Int { values.count }

    @inline(__always)
    private static func hash(_ key: UnsafeBufferPointer<UInt8>) -> Int {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in key { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01b3 }
        return Int(truncatingIfNeeded: h ^ (h >> 29))
    }

    private func keyEquals(_ entry: Int, _ key: UnsafeBufferPointer<UInt8>) -> Bool {
        let s = Int(starts[entry]), e = Int(starts[entry + 1])
        guard e - s == key.count else { return false }
        return arena.withUnsafeBufferPointer { a in
            var i = 0
            while i < key.count {
                if a[s + i] != key[i] { return false }
                i += 1
            }
            return true
        }
    }

    /// Inserts key → value unless the key is present; returns whether it was inserted.
    @discardableResult
    mutating func insert(_ key: [UInt8], _ value: Int32) -> Bool {
        if (values.count + 1) * 2 > slots.count { grow() }
        return key.withUnsafeBufferPointer { k in
            var i = Self.hash(k) & mask
            while slots[i] >= 0 {
                if keyEquals(Int(slots[i]), k) { return false }
                i = (i + 1) & mask
            }
            slots[i] = Int32(values.count)
            arena.append(contentsOf: k)
            starts.append(Int32(arena.count))
            values.append(value)
            return true
        }
    }

    private mutating func grow() {
        let size = slots.count * 2
        slots = [Int32](repeating: -1, count: size)
        mask = size - 1
        for entry in 0..<values.count {
            let s = Int(starts[entry]), e = Int(starts[entry + 1])
            let h = arena.withUnsafeBufferPointer { Self.hash(UnsafeBufferPointer(rebasing: $0[s..<e])) }
            var i = h & mask
            while slots[i] >= 0 { i = (i + 1) & mask }
            slots[i] = Int32(entry)
        }
    }

    func find(_ key: UnsafeBufferPointer<UInt8>) -> Int32? {
        var i = Self.hash(key) & mask
        while true {
            let entry = slots[i]
            if entry < 0 { return nil }
            if keyEquals(Int(entry), key) { return values[Int(entry)] }
            i = (i + 1) & mask
        }
    }

    func find(_ key: [UInt8]) -> Int32? { key.withUnsafeBufferPointer { find($0) } }
}
