import Foundation
import Jinja
import Testing

/// The chat templates of `Tests/RuntimeTests/Fixtures/chat/chat_templates.json` (SmolLM2's real
/// template and Qwen2.5/Llama 3/3.1/Llama 2/Mistral-style ones), with the outputs and errors
/// Python's jinja2 gave for each conversation.
@Suite struct JinjaFixtureTests {
    private static let fixture = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("RuntimeTests/Fixtures/chat/chat_templates.json")

    private func value(_ x: Any) -> JinjaValue {
        switch x {
        case let s as String: return .string(s)
        case let a as [Any]: return .list(a.map(value))
        case let d as [String: Any]: return .dict(JinjaDict(d.keys.sorted().map { ($0, value(d[$0] as Any)) }))
        case let n as NSNumber: return Double(n.intValue) == n.doubleValue ? .int(n.intValue) : .double(n.doubleValue)
        default: return .none
        }
    }

    @Test func rendersEveryFixtureCaseAsJinja2Did() throws {
        let root = try JSONSerialization.jsonObject(with: Data(contentsOf: Self.fixture)) as? [String: Any]
        let templates = root?["templates"] as? [[String: Any]] ?? []
        #expect(templates.count >= 6)
        var checked = 0
        for entry in templates {
            let name = entry["name"] as? String ?? "?"
            let template = try JinjaTemplate(entry["template"] as? String ?? "")
            for case let c as [String: Any] in entry["cases"] as? [Any] ?? [] {
                let context: [String: JinjaValue] = [
                    "messages": value(c["messages"] as Any),
                    "add_generation_prompt": .bool((c["add_generation_prompt"] as? NSNumber)?.boolValue ?? false),
                    "bos_token": .string(entry["bos_token"] as? String ?? ""),
                    "eos_token": .string(entry["eos_token"] as? String ?? ""),
                ]
                if let expected = c["expected"] as? String {
                    #expect(try template.render(context) == expected, "\(name)")
                } else if let message = c["error"] as? String {
                    #expect(throws: JinjaError(.raised, message)) { try template.render(context) }
                }
                checked += 1
            }
        }
        #expect(checked >= 40)
    }
}
