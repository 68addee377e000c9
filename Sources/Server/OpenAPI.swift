import Hummingbird

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
