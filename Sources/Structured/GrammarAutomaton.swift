/// The configurations of a grammar's pushdown matcher, found as they are reached and numbered,
/// so that matching a byte is one table lookup once a configuration has been seen.
///
/// A *frame* is a position in the program and the frame it returns to (interned: equal stacks
/// are one number). A *state* is the set of frames whose position consumes a byte (the
/// alternatives still alive), plus whether the root rule may end here. A state's transition
/// on a byte is computed the first time it is asked for and kept in a 256-entry row.
struct GrammarAutomaton {
    let program: GrammarProgram

    private(set) var framePosition: [Int32] = []
    private(set) var frameParent: [Int32] = []
    private var frameIndex: [Int64: Int32] = [:]

    private(set) var stateFrames: [[Int32]] = []
    private(set) var stateAccepts: [Bool] = []
    private var stateIndex: [StateKey: Int32] = [:]
    /// 256 entries per expanded state (its row, `rowOf[state]`): the next state, `dead`, or
    /// `unknown`. A row is made when the state is first left, so the states a vocabulary walk
    /// only reaches at a token's last byte cost no row.
    private(set) var transitions: [Int32] = []
    private var rowOf: [Int32] = []

    static let dead: Int32 = -1
    static let unknown: Int32 = -2
    /// The most states kept. A grammar whose configurations explode (a pathological regular
    /// expression) stops growing here: a byte that would need a new state is refused, so masks
    /// only ever narrow (the answer stays in the language, and may end early).
    /// (A state costs its frames and, once left, a 1 KB transition row: 250k states stay within
    /// a few hundred MB even for a grammar whose configurations explode.)
    static let defaultMaxStates = 250_000
    let maxStates: Int
    /// The frame below the root rule.
    static let bottom: Int32 = -1

    private struct StateKey: Hashable {
        var frames: [Int32]
        var accepts: Bool
    }

    /// The state before any byte.
    private(set) var initial: Int32 = 0

    init(program: GrammarProgram, maxStates: Int = GrammarAutomaton.defaultMaxStates) {
        self.program = program
        self.maxStates = max(1, maxStates)
        var frames: [Int32] = []
        var accepts = false
        var work: [(Int32, Int32)] = program.alternatives[Int(program.root)].map { ($0, Self.bottom) }
        close(&work, frames: &frames, accepts: &accepts)
        initial = intern(frames, accepts)!
    }

    var stateCount: Int { stateFrames.count }
    var frameCount: Int { framePosition.count }

    func accepts(_ state: Int32) -> Bool { stateAccepts[Int(state)] }

    /// Whether any byte can follow (some alternative is still consuming).
    func canContinue(_ state: Int32) -> Bool { !stateFrames[Int(state)].isEmpty }

    /// The state after `byte`, or `dead`.
    @inline(__always)
    mutating func next(_ state: Int32, _ byte: UInt8) -> Int32 {
        let row = rowOf[Int(state)]
        if row >= 0 {
            let known = transitions[Int(row) &* 256 &+ Int(byte)]
            if known != Self.unknown { return known }
        }
        return computeNext(state, byte)
    }

    /// Whether the state limit has been reached (new configurations are refused from then on).
    var isFull: Bool { stateFrames.count >= maxStates }

    private mutating func computeNext(_ state: Int32, _ byte: UInt8) -> Int32 {
        var frames: [Int32] = []
        var accepts = false
        var work: [(Int32, Int32)] = []
        for frame in stateFrames[Int(state)] {
            let pos = framePosition[Int(frame)]
            if program.sets[Int(program.code[Int(pos)])].contains(byte) {
                work.append((pos + 1, frameParent[Int(frame)]))
            }
        }
        let result: Int32
        if work.isEmpty {
            result = Self.dead
        } else {
            close(&work, frames: &frames, accepts: &accepts)
            result = frames.isEmpty && !accepts ? Self.dead : (intern(frames, accepts) ?? Self.dead)
        }
        if rowOf[Int(state)] < 0 {
            rowOf[Int(state)] = Int32(transitions.count / 256)
            transitions.append(contentsOf: repeatElement(Self.unknown, count: 256))
        }
        transitions[Int(rowOf[Int(state)]) &* 256 &+ Int(byte)] = result
        return result
    }

    /// Follows calls and returns from each (position, parent) until every path stands on a
    /// byte-consuming instruction (a frame of the state) or has returned past the root.
    private mutating func close(_ work: inout [(Int32, Int32)], frames: inout [Int32], accepts: inout Bool) {
        var visited: Set<Int64> = []
        let code = program.code
        while let (pos, parent) = work.popLast() {
            guard visited.insert(Self.key(pos, parent)).inserted else { continue }
            let op = code[Int(pos)]
            if op >= 0 {
                frames.append(frame(pos, parent))
            } else if op == GrammarProgram.ret {
                if parent == Self.bottom {
                    accepts = true
                } else {
                    work.append((framePosition[Int(parent)], frameParent[Int(parent)]))
                }
            } else {
                // A call in tail position returns straight to the caller's frame.
                let returnFrame = code[Int(pos) + 1] == GrammarProgram.ret ? parent : frame(pos + 1, parent)
                for start in program.alternatives[Int(GrammarProgram.calledRule(op))] {
                    work.append((start, returnFrame))
                }
            }
        }
    }

    @inline(__always)
    private static func key(_ pos: Int32, _ parent: Int32) -> Int64 { Int64(pos) << 32 | Int64(UInt32(bitPattern: parent)) }

    private mutating func frame(_ pos: Int32, _ parent: Int32) -> Int32 {
        let k = Self.key(pos, parent)
        if let id = frameIndex[k] { return id }
        let id = Int32(framePosition.count)
        framePosition.append(pos)
        frameParent.append(parent)
        frameIndex[k] = id
        return id
    }

    /// The state's number; nil when it is new and the limit is reached.
    private mutating func intern(_ frames: [Int32], _ accepts: Bool) -> Int32? {
        var sorted = frames.sorted()
        var unique: [Int32] = []
        unique.reserveCapacity(sorted.count)
        for f in sorted where unique.last != f { unique.append(f) }
        sorted = unique
        let key = StateKey(frames: sorted, accepts: accepts)
        if let id = stateIndex[key] { return id }
        guard !isFull else { return nil }
        let id = Int32(stateFrames.count)
        stateFrames.append(sorted)
        stateAccepts.append(accepts)
        stateIndex[key] = id
        rowOf.append(-1)
        return id
    }
}
