import Foundation
import Hummingbird

extension OpenAIServer {
    // MARK: Request bodies

    /// The body as a JSON object, read up to `--max-body-bytes`: 413 above it; 400 for bytes that
    /// are not UTF-8 or not a JSON object, each message naming which.
    func jsonBody(_ request: Request) async throws -> (data: Data, object: [String: Any]) {
        var request = request
        let limit = configuration.maxBodyBytes
        let body: ByteBuffer
        do {
            body = try await request.collectBody(upTo: limit)
        } catch let error as HTTPResponseError where error.status == .contentTooLarge {
            throw APIError("the request body is larger than the server's limit of \(limit) bytes (--max-body-bytes)",
                           status: .contentTooLarge)
        }
        let data = Data(buffer: body)
        // Checked first so the message says "UTF-8" rather than a parser's generic complaint.
        if let offset = Self.firstInvalidUTF8Offset(data) {
            throw APIError("the request body is not valid UTF-8 (the first bad byte is at offset \(offset))")
        }
        do {
            guard let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                throw APIError("the request body must be a JSON object")
            }
            return (data, object)
        } catch let error as APIError {
            throw error
        } catch {
            throw APIError("malformed JSON in the request body: \((error as NSError).localizedDescription)")
        }
    }

    /// 404 for a `model` other than the served name; absent or null means the served model.
    func checkModel(_ object: [String: Any]) throws {
        guard let model = object["model"], !(model is NSNull) else { return }
        guard let name = model as? String else { throw APIError("'model' must be a string", param: "model") }
        guard name == configuration.servedModelName else {
            throw APIError("The model `\(name)` does not exist.", status: .notFound, param: "model", code: "model_not_found")
        }
    }

    /// 400 when the prompt, or the prompt and `max_tokens` together, do not fit in the engine's
    /// longest sequence (vLLM refuses these too, rather than cutting the output short).
    func checkContext(promptTokens: Int, maxTokens: Int?, promptField: String, maxTokensField: String) throws {
        let limit = loop.engine.maxSequenceLength
        guard promptTokens < limit else {
            throw APIError("the prompt has \(promptTokens) tokens; this model's maximum context length is \(limit) tokens, "
                           + "leaving no room to generate", param: promptField)
        }
        // Compared without adding: max_tokens may be near Int.max.
        if let maxTokens, maxTokens > limit - promptTokens {
            throw APIError("'\(maxTokensField)' is \(maxTokens) and the prompt has \(promptTokens) tokens, over this model's maximum "
                           + "context length of \(limit) tokens: ask for at most \(limit - promptTokens)", param: maxTokensField)
        }
    }

    /// 400 naming an integer field whose number is not an integer Swift can hold (1e300, 2.5):
    /// JSONDecoder reports a number out of range as invalid JSON without saying where.
    func checkIntegerFields(_ object: [String: Any], _ keys: [String]) throws {
        for key in keys where Self.isGiven(object, key) {
            let value = object[key]!
            let items = value as? [Any] ?? [value]
            for item in items where item is NSNumber && jsonInt(item) == nil && !isJSONBool(item) {
                throw APIError("'\(key)' must be an integer\(value is [Any] ? " list" : ""), got \(item)", param: key)
            }
        }
    }

    /// Whether `key` is present and not null (JSON null means "not given", as in the OpenAI API).
    static func isGiven(_ object: [String: Any], _ key: String) -> Bool {
        guard let value = object[key] else { return false }
        return !(value is NSNull)
    }

    /// Where the first byte that breaks UTF-8 sits; nil when the data is valid UTF-8.
    static func firstInvalidUTF8Offset(_ data: Data) -> Int? {
        var offset = 0
        var iterator = data.makeIterator()
        var decoder = UTF8()
        while true {
            switch decoder.decode(&iterator) {
            case .scalarValue(let scalar): offset += UTF8.width(scalar)
            case .emptyInput: return nil
            case .error: return offset
            }
        }
    }
}
