#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Global functions: jinja2's `range`, `namespace`, `dict`, and transformers' `raise_exception`
/// and `strftime_now`.
extension JinjaEvaluator {
    static func makeGlobals() -> [String: JinjaValue] {
        var g: [String: JinjaValue] = [:]
        g["range"] = .callable(JinjaCallable(name: "range") { args, _ in
            var bounds: [Int] = []
            for a in args {
                switch a {
                case .int(let i): bounds.append(i)
                case .bool(let b): bounds.append(b ? 1 : 0)
                default: throw JinjaError(.runtime, "range() expects integers, got \(a.typeName)")
                }
            }
            let (start, stop, step): (Int, Int, Int)
            switch bounds.count {
            case 1: (start, stop, step) = (0, bounds[0], 1)
            case 2: (start, stop, step) = (bounds[0], bounds[1], 1)
            case 3: (start, stop, step) = (bounds[0], bounds[1], bounds[2])
            default: throw JinjaError(.runtime, "range() takes 1 to 3 arguments")
            }
            guard step != 0 else { throw JinjaError(.runtime, "range() arg 3 must not be zero") }
            let count = step > 0 ? (stop > start ? (stop - start - 1) / step + 1 : 0) : (start > stop ? (start - stop - 1) / -step + 1 : 0)
            guard count <= maxRange else { throw JinjaError(.runtime, "range too big, maximum size for range is \(maxRange)") }
            return .list((0..<count).map { .int(start + $0 * step) })
        })
        g["namespace"] = .callable(JinjaCallable(name: "namespace") { args, kwargs in
            var d = JinjaDict()
            for a in args {
                guard case .dict(let given) = a else { throw JinjaError(.runtime, "namespace() takes a mapping or keyword arguments") }
                for (k, v) in given.pairs { d[k] = v }
            }
            for (k, v) in kwargs { d[k] = v }
            return .namespace(JinjaNamespace(d))
        })
        g["dict"] = .callable(JinjaCallable(name: "dict") { args, kwargs in
            var d = JinjaDict()
            for a in args {
                guard case .dict(let given) = a else { throw JinjaError(.runtime, "dict() takes a mapping or keyword arguments") }
                for (k, v) in given.pairs { d[k] = v }
            }
            for (k, v) in kwargs { d[k] = v }
            return .dict(d)
        })
        g["raise_exception"] = .callable(JinjaCallable(name: "raise_exception") { args, kwargs in
            let message = args.first ?? kwargs.first?.1 ?? .string("")
            throw JinjaError(.raised, message.renderedString)
        })
        g["strftime_now"] = .callable(JinjaCallable(name: "strftime_now") { args, _ in
            guard case .string(let format)? = args.first else { throw JinjaError(.runtime, "strftime_now() needs a format string") }
            return .string(strftimeNow(format))
        })
        return g
    }
}

/// The local time now, formatted with C's strftime (as Python's `datetime.now().strftime`).
func strftimeNow(_ format: String) -> String {
    var t = time(nil)
    var parts = tm()
    localtime_r(&t, &parts)
    var buffer = [CChar](repeating: 0, count: 512)
    let n = strftime(&buffer, buffer.count, format, &parts)
    guard n > 0 else { return "" }
    return String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
