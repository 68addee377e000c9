import XCTest
@testable import Runtime

final class StopMatcherTests: XCTestCase {
    /// Feeds the pieces; returns what was emitted (joined), the stop string, and each step's output.
    private func run(_ stops: [String], _ pieces: [String]) -> (text: String, stop: String?, steps: [String]) {
        var matcher = StopMatcher(stopStrings: stops)
        var steps: [String] = []
        var stop: String?
        for piece in pieces {
            let result = matcher.append(piece)
            steps.append(result.text)
            if let s = result.stop {
                stop = s
                break
            }
        }
        if stop == nil { steps.append(matcher.finish()) }
        return (steps.joined(), stop, steps)
    }

    func testNoStopPassesEverythingThrough() {
        let r = run(["###"], ["Hello", ", ", "world", "!"])
        XCTAssertEqual(r.text, "Hello, world!")
        XCTAssertNil(r.stop)
        XCTAssertEqual(r.steps, ["Hello", ", ", "world", "!", ""])
        XCTAssertEqual(run([], ["a", "b"]).steps, ["a", "b", ""])
    }

    func testStopAtTheStart() {
        let r = run(["STOP"], ["STOP and more"])
        XCTAssertEqual(r.text, "")
        XCTAssertEqual(r.stop, "STOP")
    }

    func testStopInsideOnePiece() {
        let r = run(["\n\n"], ["first line\n\nsecond"])
        XCTAssertEqual(r.text, "first line")
        XCTAssertEqual(r.stop, "\n\n")
    }

    func testStopSpanningPiecesIsHeldBackThenDropped() {
        let r = run(["<end>"], ["abc<", "en", "d>tail"])
        XCTAssertEqual(r.steps, ["abc", "", ""])  // "<" and "<en" held back, then dropped
        XCTAssertEqual(r.text, "abc")
        XCTAssertEqual(r.stop, "<end>")
    }

    func testHeldBackPrefixIsReleasedWhenItDoesNotComplete() {
        let r = run(["<end>"], ["abc<", "en", "x"])
        XCTAssertEqual(r.steps, ["abc", "", "<enx", ""])
        XCTAssertNil(r.stop)
        // At the end of the stream the held text is released by finish().
        let end = run(["<end>"], ["abc<e"])
        XCTAssertEqual(end.steps, ["abc", "<e"])
    }

    func testOverlappingPrefixes() {
        // "aab" must be found in "aaab" although the first "aa" was a false start.
        XCTAssertEqual(run(["aab"], ["a", "a", "a", "b"]).steps, ["", "", "a", ""])
        XCTAssertEqual(run(["aab"], ["a", "a", "a", "b"]).stop, "aab")
        // "ab" and "aab": the one starting first wins.
        let both = run(["ab", "aab"], ["xa", "ab"])
        XCTAssertEqual(both.text, "x")
        XCTAssertEqual(both.stop, "aab")
        let first = run(["ab", "aab"], ["xab"])
        XCTAssertEqual(first.text, "x")
        XCTAssertEqual(first.stop, "ab")
        // Same start: the first in the list.
        XCTAssertEqual(run(["abc", "ab"], ["zabc"]).stop, "abc")
        XCTAssertEqual(run(["ab", "abc"], ["zabc"]).stop, "ab")
    }

    func testHoldsOnlyWhatCouldStillMatch() {
        var m = StopMatcher(stopStrings: ["hello", "help"])
        XCTAssertEqual(m.append("say hel").text, "say ")
        XCTAssertEqual(m.heldBack, "hel")
        XCTAssertEqual(m.append("i").text, "heli")
        XCTAssertEqual(m.heldBack, "")
    }

    func testStopSpanningManyPieces() {
        let r = run(["</answer>"], ["42", "<", "/", "ans", "w", "er", ">", "ignored"])
        XCTAssertEqual(r.text, "42")
        XCTAssertEqual(r.stop, "</answer>")
    }

    func testAfterAStopNothingMoreIsEmitted() {
        var m = StopMatcher(stopStrings: ["x"])
        XCTAssertEqual(m.append("ax"), StopMatcher.Result(text: "a", stop: "x"))
        XCTAssertEqual(m.append("more"), StopMatcher.Result(text: "", stop: "x"))
        XCTAssertEqual(m.finish(), "")
        XCTAssertEqual(m.stopped, "x")
    }

    func testUnicodeStopStrings() {
        // Multi-byte stop strings and pieces; the held-back cut never splits a character.
        let r = run(["。\n"], ["日本語", "。", "\n次"])
        XCTAssertEqual(r.text, "日本語")
        XCTAssertEqual(r.stop, "。\n")
        let emoji = run(["👋🏽"], ["hi 👋", "🏽 there"])
        XCTAssertEqual(emoji.text, "hi ")
        XCTAssertEqual(emoji.steps.first, "hi ")
        // Matching is by code point: "e" matches the e of "e" + combining acute.
        XCTAssertEqual(run(["e"], ["cafe\u{301}"]).text, "caf")
    }

    func testEmptyStopStringsAreIgnored() {
        XCTAssertEqual(run([""], ["abc"]).text, "abc")
        XCTAssertNil(run([""], ["abc"]).stop)
    }
}
