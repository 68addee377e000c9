import ArgumentParser

struct DevDecodeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "decode", abstract: "Decode attention: check against the CPU oracle and time.")
    func run() throws { throw ValidationError("not built yet") }
}
