/// The parsed template: statements (`Node`) and expressions (`Expr`).
struct Expr {
    indirect enum Kind {
        case literal(JinjaValue)
        case name(String)
        case list([Expr])
        case tuple([Expr])
        case dict([(Expr, Expr)])
        case attribute(Expr, String)
        case item(Expr, Expr)
        case slice(Expr, Expr?, Expr?, Expr?)
        case call(Expr, [Expr], [(String, Expr)])
        case filter(Expr, String, [Expr], [(String, Expr)])
        case test(Expr, String, [Expr], negated: Bool)
        case unary(String, Expr)
        case binary(String, Expr, Expr)
        case and(Expr, Expr)
        case or(Expr, Expr)
        case not(Expr)
        case compare(Expr, [(String, Expr)])
        case conditional(Expr, Expr, Expr?)
    }

    let kind: Kind
    let line: Int
    let column: Int
}

/// Where `set` and `for` store values.
enum AssignTarget {
    case name(String)
    case attribute(String, String)
    case tuple([String])
}

struct MacroDefinition {
    let name: String
    let parameters: [(String, Expr?)]
    let body: [Node]
}

indirect enum Node {
    case text(String)
    case output(Expr)
    case ifChain([(Expr, [Node])], elseBody: [Node])
    case forLoop(target: AssignTarget, iterable: Expr, condition: Expr?, body: [Node], elseBody: [Node])
    case set(AssignTarget, Expr)
    /// `filter` applies filters to `blockBodyName`, bound to the rendered body.
    case setBlock(AssignTarget, body: [Node], filter: Expr?)
    case macro(MacroDefinition)
    case callBlock(call: Expr, parameters: [(String, Expr?)], body: [Node])
    case filterBlock(filter: Expr, body: [Node])
    case breakLoop
    case continueLoop
}

/// The name a block's filters see the rendered body under (not a valid template identifier).
let blockBodyName = "\u{0}body"
