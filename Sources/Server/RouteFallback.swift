import Hummingbird

/// Requests that match no route get OpenAI's error shape instead of the router's empty 404:
/// a path we serve under another method is a 405 with `Allow`; any other path a 404.
struct RouteFallback<Context: RequestContext>: RouterMiddleware {
    let server: OpenAIServer

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as HTTPError where error.status == .notFound {
            // Handlers answer with responses, never this error: only the router throws it.
            let path = request.uri.path
            let methods = Endpoint.allCases.filter { $0.route.path == path }.map(\.route.method)
            if methods.isEmpty {
                return server.errorResponse(APIError("no route \(request.method) \(path); the routes are in /openapi.json",
                                                     status: .notFound, code: "not_found"))
            }
            var response = server.errorResponse(APIError("\(path) takes \(methods.joined(separator: ", ")), not \(request.method)",
                                                         status: .methodNotAllowed, code: "method_not_allowed"))
            response.headers[.allow] = methods.joined(separator: ", ")
            return response
        }
    }
}
