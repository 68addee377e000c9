/// What went wrong while parsing or rendering a template.
public struct JinjaError: Error, CustomStringConvertible, Equatable, Sendable {
    public enum Kind: Equatable, Sendable {
        /// The template text is not valid Jinja.
        case syntax
        /// Rendering failed: an unknown filter, a bad operand, calling something that is no function...
        case runtime
        /// The template called `raise_exception(message)`; `message` is the template's text.
        case raised
    }

    public let kind: Kind
    public let message: String
    /// 1-based position in the template, when known.
    public let line: Int?
    public let column: Int?

    public init(_ kind: Kind, _ message: String, line: Int? = nil, column: Int? = nil) {
        self.kind = kind
        self.message = message
        self.line = line
        self.column = column
    }

    public var description: String {
        let place = line.map { " at line \($0), column \(column ?? 0)" } ?? ""
        switch kind {
        case .syntax: return "template syntax error\(place): \(message)"
        case .runtime: return "template error\(place): \(message)"
        case .raised: return "template raised an exception: \(message)"
        }
    }
}
