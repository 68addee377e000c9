import ArgumentParser
import Foundation
import Tokenizers

/// `--dataset custom`: JSON lines, one request each: `{"prompt": "text"}` or
/// `{"prompt": [token ids]}` (completions endpoint), or `{"messages": [{"role": ..., "content":
/// ...}]}` (chat endpoint; a text prompt becomes one user message there). `"output_tokens"`
/// (or `"max_tokens"`) sets a line's output length; else `--custom-output-len`. Blank lines
/// and lines starting with `#` are skipped. Lines are taken in order, repeated up to `count`.
enum CustomDataset {
    static func workload(path: String, count: Int, outputLength: Int, endpoint: ServeEndpoint, tokenizer: Tokenizer?) throws -> Workload {
        guard let data = FileManager.default.contents(atPath: path) else { throw ValidationError("--dataset-path \(path): cannot read the file") }
        var requests: [BenchRequest] = []
        var estimated = false
        for (index, line) in String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
            func bad(_ problem: String) -> ValidationError { ValidationError("\(path) line \(index + 1): \(problem)") }
            guard let object = try? JSONSerialization.jsonObject(with: Data(trimmed.utf8)) as? [String: Any] else {
                throw bad("not a JSON object")
            }
            let output = object["output_tokens"] ?? object["max_tokens"]
            let maxTokens: Int
            if let output {
                guard let n = output as? Int, n >= 1 else { throw bad("output_tokens must be a positive integer") }
                maxTokens = n
            } else {
                maxTokens = outputLength
            }
            if let messages = object["messages"] {
                guard endpoint == .chat else { throw bad("\"messages\" need --endpoint /v1/chat/completions") }
                guard let list = messages as? [[String: Any]], !list.isEmpty else { throw bad("\"messages\" must be a non-empty list of {role, content}") }
                let parsed = try list.map { item -> BenchMessage in
                    guard let role = item["role"] as? String, let content = item["content"] as? String else {
                        throw bad("each message needs a string \"role\" and \"content\"")
                    }
                    return BenchMessage(role: role, content: content)
                }
                let text = parsed.map(\.content).joined(separator: "\n")
                requests.append(BenchRequest(prompt: .messages(parsed), promptTokens: length(text, tokenizer), maxTokens: maxTokens))
            } else if let text = object["prompt"] as? String {
                requests.append(BenchRequest(prompt: .text(text), promptTokens: length(text, tokenizer), maxTokens: maxTokens))
            } else if let ids = object["prompt"] as? [Any], !ids.isEmpty, ids.allSatisfy({ $0 is Int }) {
                guard endpoint == .completions else { throw bad("a prompt of token ids needs --endpoint /v1/completions") }
                requests.append(BenchRequest(prompt: .tokens(ids.map { $0 as! Int }), promptTokens: ids.count, maxTokens: maxTokens))
                continue
            } else {
                throw bad("needs \"prompt\" (a string or a list of token ids) or \"messages\"")
            }
            estimated = estimated || tokenizer == nil
        }
        guard !requests.isEmpty else { throw ValidationError("\(path): no requests (JSON lines with \"prompt\" or \"messages\")") }
        let lines = requests.count
        while requests.count < count { requests.append(requests[requests.count % lines]) }
        return Workload(units: requests.prefix(count).map(WorkUnit.single),
                        summary: "custom: \(count) prompts from \(lines) lines of \((path as NSString).lastPathComponent)",
                        promptNote: estimated ? "the file's prompts (no tokenizer: text lengths estimated at 4 bytes a token)" : "the file's prompts")
    }

    static func length(_ text: String, _ tokenizer: Tokenizer?) -> Int {
        tokenizer?.encode(text, addSpecialTokens: false).count ?? (text.utf8.count + 3) / 4
    }
}
