/// Regular expressions (the common subset of Python's `re` and ECMAScript) as grammar expressions.
public enum RegexGrammar {
    /// An expression that matches exactly the strings the whole of `pattern` matches.
    public static func expression(_ pattern: String) throws -> GrammarExpression {
        throw GrammarError("regular expressions are not supported yet")
    }
}
