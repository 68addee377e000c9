/// How templates are lexed. `.transformers` matches Hugging Face's `apply_chat_template`:
/// `trim_blocks` and `lstrip_blocks` on, one trailing newline dropped.
public struct JinjaOptions: Sendable, Equatable {
    /// Remove the first newline after a block or comment tag.
    public var trimBlocks: Bool
    /// Strip spaces and tabs before a block or comment tag that starts a line.
    public var lstripBlocks: Bool
    /// Keep a single trailing newline of the template source (jinja2 drops it by default).
    public var keepTrailingNewline: Bool

    public init(trimBlocks: Bool, lstripBlocks: Bool, keepTrailingNewline: Bool = false) {
        self.trimBlocks = trimBlocks
        self.lstripBlocks = lstripBlocks
        self.keepTrailingNewline = keepTrailingNewline
    }

    /// transformers' `ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)`.
    public static let transformers = JinjaOptions(trimBlocks: true, lstripBlocks: true)
    /// jinja2's `Environment()` defaults.
    public static let plain = JinjaOptions(trimBlocks: false, lstripBlocks: false)
}

/// A parsed Jinja template, rendered as Python's jinja2 renders it.
public struct JinjaTemplate {
    private let nodes: [Node]
    public let options: JinjaOptions

    /// Parses `source`; throws a `.syntax` `JinjaError` naming the line and column of the problem.
    public init(_ source: String, options: JinjaOptions = .transformers) throws {
        var lexer = JinjaLexer(source, options: options)
        var parser = JinjaParser(tokens: try lexer.tokenize())
        self.nodes = try parser.parseTemplate()
        self.options = options
    }

    /// Renders with `context` as the template's variables (they shadow the globals).
    public func render(_ context: [String: JinjaValue]) throws -> String {
        try JinjaEvaluator(options: options).render(nodes, context: context)
    }
}
