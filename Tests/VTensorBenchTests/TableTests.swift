import CLICommon
import Testing

@Suite struct TableTests {
    @Test func columnsAlignAndALongCellDoesNotWidenItsColumn() {
        var table = Table(title: "t", header: ["metric", "value"])
        table.add(["steps", "12"])
        table.add(["requests", "1024"])
        let long = String(repeating: "x", count: Table.wideCell + 20)
        table.add(["detail", long])
        let lines = table.render().split(separator: "\n").map(String.init)
        // The value column is as wide as its widest short cell ("value", 5), not the long one.
        #expect(lines[1] == "metric    value")
        #expect(lines[2] == "--------  -----")
        #expect(lines[3] == "steps        12")
        #expect(lines[4] == "requests   1024")
        #expect(lines[5] == "detail    " + long)
    }

    @Test func aRowWiderThanTheHeaderDoesNotTrap() {
        var table = Table(title: "t", header: ["a"])
        table.add(["1", "extra"])
        #expect(table.render().contains("1  extra"))
    }
}
