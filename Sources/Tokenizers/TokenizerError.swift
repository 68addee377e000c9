/// A tokenizer that cannot be built: a malformed or unsupported file, with what is wrong and where.
public struct TokenizerError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The file (or component) at fault.
    public let source: String
    public let problem: String

    public init(_ source: String, _ problem: String) {
        self.source = source
        self.problem = problem
    }

    public var description: String { "\(source): \(problem)" }
}
