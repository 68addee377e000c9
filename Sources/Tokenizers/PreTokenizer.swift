/// How a split keeps the matched delimiters (HF `SplitDelimiterBehavior`).
enum SplitBehavior: String, Sendable {
    case removed = "Removed"
    case isolated = "Isolated"
    case mergedWithPrevious = "MergedWithPrevious"
    case mergedWithNext = "MergedWithNext"
    case contiguous = "Contiguous"
}

/// Where the Metaspace pre-tokenizer prepends its replacement character.
enum PrependScheme: String, Sendable {
    case always, first, never
}

/// One pre-tokenization step: it turns each piece of a text segment into smaller pieces.
enum PreTokenizer: Sendable {
    /// Split on a pattern.
    case split(SplitPattern, SplitBehavior, invert: Bool)
    /// GPT-2's byte-level step: optionally a leading space, then (with `useRegex`) the GPT-2
    /// pattern. Mapping bytes to characters is implicit: the models work on bytes.
    case byteLevel(addPrefixSpace: Bool, useRegex: Bool)
    /// SentencePiece's metaspace: spaces become `replacement`, which is prepended per the
    /// scheme; with `split`, each piece starts at a replacement character.
    case metaspace(replacement: [UInt8], prepend: PrependScheme, split: Bool)
    /// Splits before each run of `marker` that follows another character: an optimization
    /// for SentencePiece vocabularies where no piece has the marker after another character,
    /// so no merge can cross such a point (the pieces then hit the word cache).
    case markerRuns([UInt8])

    /// `isFirst`: the segment starts the input (no added token before it), for
    /// `PrependScheme.first`.
    func apply(_ pieces: [[UInt8]], isFirst: Bool) -> [[UInt8]] {
        var out: [[UInt8]] = []
        out.reserveCapacity(pieces.count)
        for (index, piece) in pieces.enumerated() {
            switch self {
            case .split(let pattern, let behavior, let invert):
                let matches = piece.withUnsafeBufferPointer { pattern.matches(in: $0) }
                Self.split(piece, matches: matches, behavior: behavior, invert: invert, into: &out)
            case .byteLevel(let addPrefixSpace, let useRegex):
                var p = piece
                if addPrefixSpace && p.first != 0x20 { p.insert(0x20, at: 0) }
                if useRegex {
                    let matches = p.withUnsafeBufferPointer { SplitPattern.gpt2.matches(in: $0) }
                    Self.split(p, matches: matches, behavior: .isolated, invert: false, into: &out)
                } else if !p.isEmpty {
                    out.append(p)
                }
            case .markerRuns(let marker):
                let m = marker.count
                var start = 0
                var i = 1
                var previousWasMarker = piece.starts(with: marker)
                if previousWasMarker { i = m }
                while i < piece.count {
                    let isMarker = i + m <= piece.count && piece[i..<(i + m)].elementsEqual(marker)
                    if isMarker {
                        if !previousWasMarker {
                            out.append(Array(piece[start..<i]))
                            start = i
                        }
                        previousWasMarker = true
                        i += m
                    } else {
                        previousWasMarker = false
                        i += 1
                    }
                }
                if start < piece.count { out.append(Array(piece[start...])) }
            case .metaspace(let replacement, let prepend, let split):
                var p: [UInt8] = []
                p.reserveCapacity(piece.count + 3)
                for b in piece {
                    if b == 0x20 { p.append(contentsOf: replacement) } else { p.append(b) }
                }
                let wantPrefix = prepend == .always || (prepend == .first && isFirst && index == 0)
                if wantPrefix && !p.starts(with: replacement) { p.insert(contentsOf: replacement, at: 0) }
                if split {
                    let matches = p.withUnsafeBufferPointer { SplitPattern.literal(replacement).matches(in: $0) }
                    Self.split(p, matches: matches, behavior: .mergedWithNext, invert: false, into: &out)
                } else if !p.isEmpty {
                    out.append(p)
                }
            }
        }
        return out
    }

    static func split(_ piece: [UInt8], matches found: [Range<Int>], behavior: SplitBehavior, invert: Bool, into out: inout [[UInt8]]) {
        // Cover the piece with alternating gaps and matches.
        var spans: [(Range<Int>, Bool)] = []
        var last = 0
        for m in found {
            if m.lowerBound > last { spans.append((last..<m.lowerBound, invert)) }
            spans.append((m, !invert))
            last = m.upperBound
        }
        if last < piece.count { spans.append((last..<piece.count, invert)) }

        func emit(_ r: Range<Int>) { if !r.isEmpty { out.append(Array(piece[r])) } }
        switch behavior {
        case .removed:
            for (r, isMatch) in spans where !isMatch { emit(r) }
        case .isolated:
            for (r, _) in spans { emit(r) }
        case .contiguous:
            var pending: Range<Int>? = nil
            for (r, isMatch) in spans {
                if isMatch, let p = pending {
                    pending = p.lowerBound..<r.upperBound
                    continue
                }
                if let p = pending { emit(p); pending = nil }
                if isMatch { pending = r } else { emit(r) }
            }
            if let p = pending { emit(p) }
        case .mergedWithPrevious:
            var start = 0
            for (r, isMatch) in spans where isMatch {
                emit(start..<r.upperBound)
                start = r.upperBound
            }
            emit(start..<piece.count)
        case .mergedWithNext:
            var start = 0
            for (r, isMatch) in spans where isMatch {
                emit(start..<r.lowerBound)
                start = r.lowerBound
            }
            emit(start..<piece.count)
        }
    }
}
