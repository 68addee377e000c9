import XCTest
@testable import Runtime
final class RuntimePlaceholderTests: XCTestCase { func testModuleLinks() { _ = RuntimeModule.self } }
