import XCTest
@testable import Tokenizers
final class TokenizersPlaceholderTests: XCTestCase { func testModuleLinks() { _ = TokenizersModule.self } }
