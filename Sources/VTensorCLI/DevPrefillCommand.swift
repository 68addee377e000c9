import ArgumentParser

struct DevPrefillCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "prefill", abstract: "Prefill/extend attention: check against the CPU oracle and time.")
    func run() throws { throw ValidationError("not built yet") }
}
