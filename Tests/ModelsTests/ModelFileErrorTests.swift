import Testing
@testable import Models

@Test func errorsNameTheFileAndTheProblem() {
    #expect(ModelFileError(path: "/m/model.gguf", "bad magic").description == "/m/model.gguf: bad magic")
}
