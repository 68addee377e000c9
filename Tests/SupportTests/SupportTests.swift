import Glibc
import Testing
import Support

@Suite struct ProcessEnvironmentTests {
    @Test func cacheRootPrecedence() {
        #expect(ProcessEnvironment.cacheRoot(["VTENSOR_CACHE_DIR": "/v//", "XDG_CACHE_HOME": "/x", "HOME": "/h"]) == "/v")
        #expect(ProcessEnvironment.cacheRoot(["XDG_CACHE_HOME": "/x/", "HOME": "/h"]) == "/x/vtensor")
        #expect(ProcessEnvironment.cacheRoot(["XDG_CACHE_HOME": "relative", "HOME": "/h"]) == "/h/.cache/vtensor")
        #expect(ProcessEnvironment.cacheRoot(["VTENSOR_CACHE_DIR": "", "HOME": "/"]) == "/.cache/vtensor")
        #expect(ProcessEnvironment.cacheRoot([:]) == nil)
    }

    @Test func pathsJoinWithOneSlash() {
        #expect("/a".joiningPath("b") == "/a/b")
        #expect("/a/".joiningPath("b") == "/a/b")
        #expect("/".joiningPath("b") == "/b")
    }
}

@Suite struct FileSystemTests {
    /// A fresh directory under /tmp, removed with its files when the test ends.
    private func withScratch(_ body: (String) throws -> Void) rethrows {
        var template = Array("/tmp/vtensor-support-tests-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(made != nil, "mkdtemp failed")
        let root = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        defer { Self.remove(root) }
        try body(root)
    }

    /// `rm -r`, enough for the few files these tests make.
    private static func remove(_ path: String) {
        if let stream = opendir(path) {
            while let entry = readdir(stream) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
                if name != "." && name != ".." { remove(path + "/" + name) }
            }
            closedir(stream)
            rmdir(path)
        } else {
            unlink(path)
        }
    }

    @Test func writesAtomicallyAndReadsBack() throws {
        try withScratch { root in
            let directory = root + "/a/b/c"
            try FileSystem.createDirectories(directory)
            try FileSystem.createDirectories(directory)  // existing: no error
            #expect(FileSystem.isDirectory(directory))
            let path = directory + "/file"
            #expect(FileSystem.contents(of: path) == nil)
            try FileSystem.writeAtomically(path, bytes: [1, 2, 3])
            try FileSystem.writeAtomically(path, bytes: Array(repeating: 7, count: 100_000))
            #expect(FileSystem.isRegularFile(path))
            #expect(FileSystem.contents(of: path) == Array(repeating: 7, count: 100_000))
        }
    }

    @Test func aFileInThePathIsAnError() throws {
        try withScratch { root in
            try FileSystem.writeAtomically(root + "/plain", bytes: [0])
            #expect(throws: FileSystemError(path: root + "/plain", operation: "create directory", errno: ENOTDIR)) {
                try FileSystem.createDirectories(root + "/plain/sub")
            }
            let error = FileSystemError(path: "/x", operation: "write", errno: ENOSPC)
            #expect(error.description == "cannot write /x: No space left on device")
        }
    }
}
