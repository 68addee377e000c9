import Foundation
import Server
import Testing

/// The OpenAPI document against the router's table (``Endpoint``) and against a running server.
@Suite struct OpenAPITests {
    static func document() throws -> [String: Any] {
        let parsed = try JSONSerialization.jsonObject(with: Data(OpenAPIDocument.bytes))
        guard let document = parsed as? [String: Any] else { throw TestFailure("the OpenAPI document is not a JSON object") }
        return document
    }

    /// Every (method, path) the document describes.
    static func documentedRoutes(_ document: [String: Any]) -> Set<String> {
        let methods = ["get", "put", "post", "delete", "options", "head", "patch", "trace"]
        var routes = Set<String>()
        for (path, item) in document["paths"] as? [String: Any] ?? [:] {
            for method in methods where (item as? [String: Any])?[method] != nil {
                routes.insert("\(method.uppercased()) \(path)")
            }
        }
        return routes
    }

    @Test func documentIsOpenAPI31WithResolvingRefs() throws {
        let document = try Self.document()
        #expect((document["openapi"] as? String)?.hasPrefix("3.1.") == true)
        #expect((document["info"] as? [String: Any])?["title"] is String)
        #expect(document["components"] is [String: Any])

        // Collect every $ref and resolve it as a JSON pointer into the document.
        var references: [String] = []
        func walk(_ value: Any) {
            if let object = value as? [String: Any] {
                if let reference = object["$ref"] as? String { references.append(reference) }
                object.values.forEach(walk)
            } else if let list = value as? [Any] {
                list.forEach(walk)
            }
        }
        walk(document)
        #expect(references.count > 10, "the document should describe its bodies through shared schemas")
        for reference in references {
            #expect(reference.hasPrefix("#/"), "only local references: \(reference)")
            var target: Any? = document
            for token in reference.dropFirst(2).split(separator: "/", omittingEmptySubsequences: false) {
                let key = token.replacingOccurrences(of: "~1", with: "/").replacingOccurrences(of: "~0", with: "~")
                target = (target as? [String: Any])?[key]
            }
            #expect(target is [String: Any], "\(reference) does not resolve to a schema")
        }
    }

    @Test func documentMatchesTheRouteTable() throws {
        let served = Set(Endpoint.allCases.map { "\($0.route.method) \($0.route.path)" })
        let documented = Self.documentedRoutes(try Self.document())
        #expect(served.count == Endpoint.allCases.count, "two endpoints share a route")
        #expect(served.subtracting(documented).isEmpty, "served but not documented: \(served.subtracting(documented).sorted())")
        #expect(documented.subtracting(served).isEmpty, "documented but not served: \(documented.subtracting(served).sorted())")
    }

    /// The operations that --api-key guards say so (a `security` requirement), and only those.
    @Test func documentedSecurityMatchesTheKeyedRoutes() throws {
        let paths = try Self.document()["paths"] as? [String: Any] ?? [:]
        for endpoint in Endpoint.allCases {
            let operation = (paths[endpoint.route.path] as? [String: Any])?[endpoint.route.method.lowercased()] as? [String: Any]
            #expect((operation?["security"] != nil) == endpoint.needsKey, "\(endpoint.route)")
        }
    }

    @Test func theServerServesTheDocumentAndEveryRouteInIt() throws {
        let server = try ServerProcess.sharedServer()
        let served = try server.get("/openapi.json")
        #expect(served.status == 200)
        #expect(Array(served.body.utf8) == OpenAPIDocument.bytes, "/openapi.json differs from the embedded document")

        let version = try ServerProcess.object(try server.get("/version").body)["version"] as? String
        let info = try Self.document()["info"] as? [String: Any]
        #expect(version != nil && info?["version"] as? String == version, "the document's info.version and GET /version differ")

        // Each documented route answers (an empty object to a POST is a 400, not a missing route);
        // a route nobody registered gets the router's 404, so the check can tell them apart.
        for route in Self.documentedRoutes(try Self.document()).sorted() {
            let parts = route.split(separator: " ")
            let (method, path) = (String(parts[0]), String(parts[1]))
            let answer = method == "GET" ? try server.get(path) : try server.post(path, "{}")
            #expect(answer.status != 404 && answer.status != 405 && answer.status < 500, "\(route): \(answer.status) \(answer.body)")
        }
        #expect(try server.get("/no-such-route").status == 404)
        #expect(try server.post("/health", "{}").status == 405, "POST on a GET route should not be served")
    }
}
