import Foundation
import Hummingbird
import Logging

/// The OpenAPI 3.1 document of every route in ``Endpoint`` (Sources/Server/openapi.json),
/// compiled into the binary (`embedInCode`): a static binary carries no resource bundle to find.
public enum OpenAPIDocument {
    public static var bytes: [UInt8] { PackageResources.openapi_json }
}

extension OpenAIServer {
    func openAPIDocument() -> Response {
        Response(status: .ok, headers: [.contentType: "application/json"],
                 body: ResponseBody(byteBuffer: ByteBuffer(bytes: OpenAPIDocument.bytes)))
    }
}

extension OpenAIServer {
    /// The body fields the document lists for /v1/completions and /v1/chat/completions, which
    /// are the fields the handlers read (a field added to one belongs in the other).
    static let documentedFields: (completions: Set<String>, chat: Set<String>) = {
        let schemas = ((try? JSONSerialization.jsonObject(with: Data(OpenAPIDocument.bytes))) as? [String: Any])
            .flatMap { ($0["components"] as? [String: Any])?["schemas"] as? [String: Any] }
        func fields(_ name: String) -> Set<String> {
            Set(((schemas?[name] as? [String: Any])?["properties"] as? [String: Any])?.keys.map { $0 } ?? [])
        }
        return (fields("CompletionRequest"), fields("ChatCompletionRequest"))
    }()

    /// Logs, as vLLM does, the body fields a request sent that this server does not read: a
    /// client that counts on one (`best_of`, `response_format`, ...) finds out why it had no effect.
    func warnAboutIgnoredFields(_ object: [String: Any], chat: Bool) {
        let known = chat ? Self.documentedFields.chat : Self.documentedFields.completions
        let ignored = object.keys.filter { !known.contains($0) }.sorted()
        guard !ignored.isEmpty else { return }
        Logger.current.warning("request fields ignored (this server does not support them): \(ignored.joined(separator: ", "))")
    }
}
